"""Flask adapter: app factory and blueprints over :mod:`imagesearch`."""

import os

# One thread per query for torch and NumPy's BLAS unless the operator says otherwise (read when they
# load). Queries are small: two threads per request contending with other requests and processes
# for the same cores ran 5-10x slower here, and idle BLAS threads spin on a core after each search
# (bench/RESULTS.md, "Query"). Scale with WEB_CONCURRENCY instead.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from api.app import create_app

__all__ = ["create_app"]
