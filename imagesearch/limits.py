"""Search limits the API validates and the domain relies on (one home for both)."""

MAX_K = 100  # hits per page
MAX_DEPTH = 1000  # how deep paging goes: offset + k
