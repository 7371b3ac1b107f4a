"""Flask adapter: app factory and blueprints over :mod:`imagesearch`."""

from api.app import create_app

__all__ = ["create_app"]
