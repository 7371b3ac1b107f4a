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


def test_tune_saves_a_profile_the_api_applies_and_a_second_run_measures_it(redis_client, data_dir, tmp_path):
    tuned = tmp_path / "tuned"
    result = subprocess.run(
        [sys.executable, "-m", "cli", "eval", "--procedural", "30", "--seed", "3", "--tune", "--out", str(tuned)],
        cwd=ROOT, env=child_env(data_dir), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((tuned / "report.json").read_text())
    # The tuned row was measured through the API after it re-read the saved profile (run() checks
    # that every response said fusion.tuned), and relevance came back for every mode.
    assert [m["mode"] for m in report["modes"]] == ["image", "caption", "hybrid", "hybrid-tuned"]
    calibrated = {m["mode"] for m in report["modes"] if m["ece"] is not None}
    assert calibrated == {"image", "caption", "hybrid-tuned"}
    assert report["tuning"]["held_out_queries"] + report["tuning"]["train_queries"] == report["queries"]
    assert [m["mode"] for m in report["held_out"]] == ["image", "caption", "hybrid", "hybrid-tuned"]
    assert "held out" in result.stdout and "tuned fusion:" in result.stdout
    # The stack was this command's own: its Redis keeps no profile; profile.json is what is left.
    from imagesearch.profiles import ProfileStore
    from imagesearch.redis_state import Keyspace

    left = ProfileStore(redis_client, Keyspace(child_env(data_dir)["IMAGESEARCH_REDIS_NAMESPACE"])).all()
    assert left == []
    profile = json.loads((tuned / "profile.json").read_text())
    assert profile["clip"] == report["models"]["clip"] and profile["captioner"] == report["models"]["captioner"]
    assert set(profile["calibration"]) == {"image", "caption", "hybrid"}
    assert (tuned / "lists.jsonl").read_text().count("\n") == report["queries"]

    again = tmp_path / "again"
    result = subprocess.run(
        [sys.executable, "-m", "cli", "eval", "--procedural", "20", "--seed", "4", "--profile",
         str(tuned / "profile.json"), "--out", str(again)],
        cwd=ROOT, env=child_env(data_dir), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    second = json.loads((again / "report.json").read_text())
    assert second["tuning"] is None and [m["mode"] for m in second["modes"]][-1] == "hybrid-tuned"
    assert all(m["ece"] is not None for m in second["modes"] if m["mode"] != "hybrid")
