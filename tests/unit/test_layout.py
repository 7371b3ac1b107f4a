"""The domain package stays free of the web and queue frameworks."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import imagesearch
from imagesearch.procs import ROOT


def test_domain_imports_neither_flask_nor_celery():
    modules = sorted(m.name for m in pkgutil.walk_packages(imagesearch.__path__, "imagesearch."))
    assert "imagesearch.pipeline" in modules and "imagesearch.cli" in modules
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('flask', 'celery', 'werkzeug', 'kombu'))\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
