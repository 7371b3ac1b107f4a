"""A search profile as the CLI shows it: ``profiles list`` and ``status`` print one and the same line
for it (one formatter), naming its models, fusion, calibrated modes and where it was fitted."""

from __future__ import annotations

import json
import subprocess
import sys

from imagesearch.fusion import FusionConfig
from imagesearch.profiles import SearchProfile
from imagesearch.relevance import Calibration
from imagesearch.vocab import FusionMethod, RankedList, SearchMode
from tests.support.paths import ROOT
from tests.support.processes import child_env


def _cli(data_dir, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "cli", *args], cwd=ROOT, env=child_env(data_dir),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result


def test_list_and_status_describe_a_profile_alike(data_dir, redis_client, tmp_path):
    profile = SearchProfile(
        "clip-x", "captioner-y",
        FusionConfig(FusionMethod.RRF, {RankedList.IMAGE: 0.7, RankedList.CAPTION: 0.0, RankedList.KEYWORD: 0.3},
                     rrf_k=30),
        {SearchMode.CAPTION: Calibration((1.0, -2.0, 0.5), -0.25, 40)},
        {"dataset": "shapes-200", "fitted_at": "2024-05-01T10:00:00Z"})
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(profile.to_json()))
    _cli(data_dir, "profiles", "load", str(path))
    try:
        listed = _cli(data_dir, "profiles", "list").stdout.splitlines()
        expected = ("clip-x + captioner-y: rrf (image 0.7, caption 0, keyword 0.3); relevance for caption; "
                    "fitted 2024-05-01T10:00:00Z on shapes-200")
        assert listed == [expected]
        status = _cli(data_dir, "status").stdout.splitlines()
        assert [line for line in status if line.startswith("search profile for ")] == [
            f"search profile for {expected}"]
    finally:
        _cli(data_dir, "profiles", "delete", "--clip", "clip-x", "--captioner", "captioner-y")
