"""imagesearch: the domain of the semantic image search service.

Imports neither Flask nor Celery; ``api/`` and ``workers/`` are thin adapters over it.
"""

__version__ = "0.1.0"
