"""The services of the app's process (built by the composition root), as the views reach them."""

from __future__ import annotations

from flask import current_app

from imagesearch.services import Services


def services() -> Services:
    return current_app.extensions["imagesearch"]
