"""WSGI entry point: ``gunicorn -c api/gunicorn_conf.py api.wsgi:app`` (what ``imagesearch serve`` runs).

The config module warms each worker before it serves; without it, /readyz warms the worker that
answers it and knows nothing of the others.
"""

from api import create_app

app = create_app()
