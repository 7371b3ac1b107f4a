"""`imagesearch eval` end to end: it starts the stack, indexes a procedural set, writes the report
(per mode, over all queries and per query language)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.support.paths import ROOT
from tests.support.processes import child_env


def test_eval_on_a_small_procedural_set(redis_client, data_dir, tmp_path):
    out = tmp_path / "report"
    result = subprocess.run(
        [sys.executable, "-m", "cli", "eval", "--procedural", "16", "--seed", "3", "--out", str(out)],
        cwd=ROOT, env=child_env(data_dir), capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "R@1" in result.stdout and "chance" in result.stdout
    report = json.loads((out / "report.json").read_text())
    assert report["images"] == 16 and report["failed_images"] == 0
    assert [m["mode"] for m in report["modes"]] == ["image", "caption", "hybrid"]
    for mode in report["modes"]:
        assert 0.0 <= mode["recall"]["1"] <= mode["recall"]["5"] <= mode["recall"]["10"] <= 1.0
        assert mode["latency_p50_ms"] > 0
    # The procedural set asks each query in English and in Chinese; the report splits them.
    languages = {lang["language"]: lang for lang in report["by_language"]}
    assert sorted(languages) == ["en", "zh"]
    assert languages["en"]["queries"] == languages["zh"]["queries"] == report["queries"] / 2
    assert [m["mode"] for m in languages["zh"]["modes"]] == ["image", "caption", "hybrid"]
    assert any(line.split()[:2] == ["image", "zh"] for line in result.stdout.splitlines())
    assert (out / "chart.png").stat().st_size > 10_000
