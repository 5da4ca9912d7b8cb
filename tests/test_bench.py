"""``python -m bench.run --quick``: the benchmark program runs end to end and writes a well-formed
BENCHMARKS.md and benchmarks.json. Structure and correctness only: no timing is asserted."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory) -> tuple[Path, dict, str]:
    out = tmp_path_factory.mktemp("bench") / "BENCHMARKS.md"
    # one thread: a tiny workload on a shared CPU, where OpenMP's spin-waiting only slows things down
    proc = subprocess.run([sys.executable, "-m", "bench.run", "--quick", "--threads", "1", "--device", "cpu",
                           "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out, json.loads(out.with_name("benchmarks.json").read_text()), out.read_text()


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_json_has_every_figure(quick_run):
    _, res, _ = quick_run
    assert res["schema"] == 1 and res["quick"] is True
    assert res["machine"]["cpu"] and res["machine"]["threads"] == 1 and res["versions"]["torch"]
    assert res["date"] and _positive(res["wall_s"])
    cpu = res["devices"]["cpu"]
    assert cpu["input_shape"] == [2, 1, 65, 32]
    assert set(cpu["networks"]) == {"auto", "textbook", "block"}
    for name, n in cpu["networks"].items():
        for key in ("train_segments_per_s", "infer_segments_per_s", "forward_flop_per_batch", "forward_gflops",
                    "forward_peak_fraction"):
            assert _positive(n[key]), (name, key)
        assert n["train_step"]["samples"] == n["infer_batch"]["samples"] == res["settings"]["rounds"]
        assert len(n["layers"]) == 5
    assert [ly["impl"] for ly in cpu["networks"]["textbook"]["layers"]] == ["textbook"] * 5
    assert [ly["impl"] for ly in cpu["networks"]["auto"]["layers"]] == ["block"] + ["gauss"] * 4
    # the networks share their weights, and the fast kernels compute the same function
    assert cpu["max_abs_logit_diff_vs_textbook"] < 1e-3
    # Gauss layers do 3/4 of the multiplications, and the counter sees it
    assert cpu["networks"]["auto"]["forward_flop_per_batch"] < cpu["networks"]["textbook"]["forward_flop_per_batch"]
    assert cpu["networks"]["block"]["forward_flop_per_batch"] == cpu["networks"]["textbook"]["forward_flop_per_batch"]
    for k in ("train", "infer"):
        assert _positive(cpu["speedup"][k])
    assert _positive(cpu["matmul"]["gflops"])
    assert set(cpu["train_flop_per_step"]) == {"auto", "textbook"}
    assert [ly["layer"] for ly in cpu["layers"]] == [1, 2, 3, 4, 5]
    for ly in cpu["layers"]:
        assert ly["auto"] in ly["forward_ms"] and len(ly["forward_ms"]) == len(ly["train_ms"]) == 4
    feats = res["features"]
    for key in ("decode_stft_clips_per_s", "delivery_segments_per_s", "delivery_over_training"):
        assert _positive(feats[key]), key
    lat = res["latency"]["cpu"]
    assert _positive(lat["score_ms"]) and _positive(lat["model_ms"]) and lat["score_finite"]
    assert lat["segments"] >= 1
    assert res["ray_overhead"] is None  # the hook (f), filled in later


def test_targets_and_their_evidence(quick_run):
    _, res, md = quick_run
    names = [t["name"] for t in res["targets"]]
    assert names == ["train_speedup", "infer_speedup", "delivery_over_training"]
    for t in res["targets"]:
        assert t["met"] == (t["value"] >= t["threshold"])
        if t["met"]:
            assert t["why"] is None and t["name"] not in res["profiles"]
        else:  # a missed target says why, with profiler tables
            assert t["why"] and res["profiles"][t["name"]]
            for p in res["profiles"][t["name"]].values():
                assert "Name" in p["table"] and 0 <= p["conv_share"] <= 1
                assert p["table"].splitlines()[1].strip() in md


def test_markdown_sections(quick_run):
    _, res, md = quick_run
    assert md.startswith("# MIMIMI benchmarks")
    assert "Quick mode" in md
    for heading in ("## Machine", "## Targets", "## Network throughput (cpu)", "### Forward FLOP rate (cpu)",
                    "### Per-layer complex convolution (cpu)", "## Feature path (CPU)", "## Scoring latency",
                    "## Ray Tune overhead"):
        assert heading in md, heading
    assert "not measured yet" in md
    assert res["machine"]["cpu"] in md and res["versions"]["torch"] in md
    assert ("## Why targets are missed" in md) == (not all(t["met"] for t in res["targets"]))
    # every table row has as many cells as its header
    lines = md.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("|---"):
            width = lines[i - 1].count("|")
            j = i + 1
            while j < len(lines) and lines[j].startswith("|"):
                assert lines[j].count("|") == width, lines[j]
                j += 1


def test_cli_rejects_unknown_options():
    proc = subprocess.run([sys.executable, "-m", "bench.run", "--bogus"], cwd=REPO, capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 2 and "unrecognized arguments" in proc.stderr
