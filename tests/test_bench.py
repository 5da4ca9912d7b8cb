"""The benchmark program: the reference network is the same function as MIMIMI's, ``python -m bench.run
--quick`` writes a well-formed BENCHMARKS.md and benchmarks.json, the targets follow the figures, and the Ray
breakdown adds up. Structure and correctness only: no timing is asserted."""
from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from bench.ray_overhead import PARTS, trial_breakdown
from bench.reference import ReferenceNet, load_from_complexnet
from bench.report import evaluate_targets
from mimimi.nn import ComplexNet, num_parameters

REPO = Path(__file__).resolve().parents[1]


def test_reference_is_the_same_network():
    """Independent code, same architecture: parameter count, and the same logits once given the same weights."""
    torch.manual_seed(0)
    net = ComplexNet()
    x = torch.randn(3, 1, 129, 32, dtype=torch.complex64)
    net.train()
    with torch.no_grad():
        net(x)  # running statistics that are not the initial ones
    net.eval()
    ref = load_from_complexnet(ReferenceNet(), net.state_dict()).eval()
    assert num_parameters(ref) == num_parameters(net) == 860_026
    with torch.no_grad():
        for a, b in zip(net(x), ref(x)):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
        fresh = ReferenceNet().eval()(x)  # and the comparison can fail: other weights, other logits
    assert not torch.allclose(fresh[2], net(x).total, atol=1e-3)


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
    assert res["schema"] == 2 and res["quick"] is True
    assert res["machine"]["cpu"] and res["machine"]["threads"] == 1 and res["versions"]["torch"]
    assert isinstance(res["machine"]["native_bf16"], bool)
    cpu = res["devices"]["cpu"]
    nets = cpu["networks"]
    assert nets["input_shape"] == [2, 1, 65, 32]
    assert list(nets["rows"]) == ["reference/fp32", "default/fp32", "default/bf16"]
    for name, r in nets["rows"].items():
        for key in ("train_segments_per_s", "infer_segments_per_s", "train_speedup", "infer_speedup",
                    "forward_flop_per_batch", "forward_gflops"):
            assert _positive(r[key]), (name, key)
        assert r["train_step"]["samples"] == r["infer_batch"]["samples"] == res["settings"]["rounds"]
    ref, fp32, bf16 = nets["rows"].values()
    assert ref["train_speedup"] == ref["infer_speedup"] == 1.0
    # same weights, same function; bf16 rounds, within its precision
    assert ref["max_abs_logit_diff_vs_reference"] == 0 and fp32["max_abs_logit_diff_vs_reference"] < 1e-4
    assert 0 < bf16["max_abs_logit_diff_vs_reference"] < 0.1
    # the default network's Gauss layers do 3/4 of the reference's multiplications
    assert fp32["forward_flop_per_batch"] < ref["forward_flop_per_batch"]
    assert [ly["impl"] for ly in nets["default_layers"]] == ["block"] + ["gauss"] * 4
    assert "compile" not in cpu  # --quick skips it
    sc = cpu["scoring"]
    assert sc["all_scored"] and sc["scorer"] == "knn-stats" and sc["clips"] == 8
    assert _positive(sc["clips_per_s"]["fp32"]) and _positive(sc["clips_per_s"]["bf16"]) and _positive(sc["one_clip_ms"])
    assert set(res["rss"]) == {"reference/fp32", "default/fp32", "default/bf16"}
    for r in res["rss"].values():
        assert r["peak_mib"] >= r["before_mib"] > 50  # a Python with torch imported
    f = res["features"]
    for key in ("decode_stft_clips_per_s", "delivery_segments_per_s", "delivery_over_training"):
        assert _positive(f[key]), key
    assert res["ray_overhead"] is None


def test_targets_and_their_evidence(quick_run):
    _, res, md = quick_run
    names = [t["name"] for t in res["targets"]]
    bf16 = ["train_bf16", "infer_bf16"] if res["machine"]["native_bf16"] else []
    assert names == bf16 + ["train_fp32", "infer_fp32", "delivery"]
    for t in res["targets"]:
        assert t["met"] == (t["value"] >= t["threshold"])
        if t["met"]:
            assert t["why"] is None and t["name"] not in res["profiles"]
        else:
            assert t["why"]
            if t["row"]:  # a missed network target has profiles of both networks
                for p in res["profiles"][t["name"]].values():
                    assert "Name" in p["table"] and 0 <= p["conv_share"] <= 1
                    assert p["table"].splitlines()[1].strip() in md


def test_targets_depend_on_native_bf16():
    def res(native: bool) -> dict:
        row = {"train_speedup": 4.2, "infer_speedup": 4.4, "train_segments_per_s": 10.0}
        return {"machine": {"native_bf16": native}, "features": {"delivery_segments_per_s": 100.0},
                "devices": {"cpu": {"networks": {"rows": {"default/bf16": row, "default/fp32": dict(row, train_speedup=1.9)}}}}}

    with_bf16 = {t["name"]: t for t in evaluate_targets(res(True))}
    assert with_bf16["train_bf16"]["met"] and not with_bf16["infer_bf16"]["met"]  # 4.4 < 4.5
    assert not with_bf16["train_fp32"]["met"] and with_bf16["infer_fp32"]["met"]
    assert not with_bf16["delivery"]["met"]  # 100 / 10 = 10x < 20x
    assert "train_bf16" not in {t["name"] for t in evaluate_targets(res(False))}


def test_markdown_sections(quick_run):
    _, res, md = quick_run
    assert md.startswith("# MIMIMI benchmarks") and "Quick mode" in md
    for heading in ("## Machine", "## Summary", "## Targets", "## Networks (cpu)", "## Peak memory of a training step",
                    "## Feature path (CPU)", "## Scoring end to end", "## Ray per-trial fixed cost", "## Run log"):
        assert heading in md, heading
    assert res["machine"]["cpu"] in md and res["versions"]["torch"] in md
    assert ("## Why targets are missed" in md) == (not all(t["met"] for t in res["targets"]))
    lines = md.splitlines()  # every table row has as many cells as its header
    for i, line in enumerate(lines):
        if line.startswith("|---"):
            width = lines[i - 1].count("|")
            j = i + 1
            while j < len(lines) and lines[j].startswith("|"):
                assert lines[j].count("|") == width, lines[j]
                j += 1


def test_render_from_json_reproduces_the_report(quick_run, tmp_path):
    out, _, md = quick_run
    again = tmp_path / "again.md"
    proc = subprocess.run([sys.executable, "-m", "bench.run", "--render", str(out.with_name("benchmarks.json")),
                           "--out", str(again)], cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    assert again.read_text() == md


def test_ray_breakdown_adds_up():
    df = pd.DataFrame({"time_total_s": [20.0, 31.0], "worker_start_s": [9.0, 9.0], "setup_seconds": [4.0, 4.0],
                       "epoch_seconds": [6.0, 7.0], "timestamp": [1000.0, 1011.0]})
    b = trial_breakdown(df)
    assert b["wall_s"] == 31.0 and b["epochs_s"] == 13.0 and b["other_s"] == 31.0 - 9 - 4 - 13
    assert sum(b[k] for k in PARTS) == pytest.approx(b["wall_s"])
    assert b["start_unix"] == 1011.0 - 31.0


def test_cli_rejects_bad_options():
    for args, msg in ((["--bogus"], "unrecognized arguments"), (["--threads", "0"], "--threads must be >= 1")):
        proc = subprocess.run([sys.executable, "-m", "bench.run", *args], cwd=REPO, capture_output=True, text=True,
                              timeout=300, check=False)
        assert proc.returncode == 2 and msg in proc.stderr, proc.stderr


def test_gpu_script_on_cpu(tmp_path):
    """bench.gpu: refuses without CUDA (exit 2, one line), runs its steps on the CPU with --device cpu, and
    merges its section into a BENCHMARKS.md, replacing an older one."""
    def gpu(*args):
        return subprocess.run([sys.executable, "-m", "bench.gpu", *args], cwd=REPO, capture_output=True, text=True,
                              timeout=600, check=False)

    if not torch.cuda.is_available():
        proc = gpu("--out", str(tmp_path))
        assert proc.returncode == 2 and "no CUDA device" in proc.stderr and len(proc.stderr.splitlines()) == 1
    assert gpu("--device", "cpu", "--search-timeout", "0").returncode == 2
    md = tmp_path / "BENCHMARKS.md"
    md.write_text("# MIMIMI benchmarks\n\n## GPU (old card)\n\nold figures\n\n## Run log\n\nrows\n")
    for _ in range(2):
        proc = gpu("--device", "cpu", "--quick", "--no-search", "--no-compile", "--out", str(tmp_path), "--merge", str(md))
        assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((tmp_path / "gpu.json").read_text())
    assert list(res["networks"]["rows"]) == ["reference/fp32", "default/fp32", "default/bf16"]
    assert "compile" not in res and "not run (--no-compile)" in (tmp_path / "GPU.md").read_text()
    text = md.read_text()
    assert text.count("## GPU") == 1 and "old figures" not in text and "## Run log" in text
    assert (tmp_path / "GPU.md").read_text().strip() in text


@pytest.mark.slow  # three torch.compile runs of the network, even at tiny sizes
@pytest.mark.skipif(shutil.which("c++") is None, reason="TorchInductor needs a C++ compiler")
def test_compiled_rows():
    from bench import cases

    out = cases.compiled(torch.device("cpu"), cases.QUICK, precisions=("fp32",))
    (name, r), = out["rows"].items()
    assert name == "default/fp32 compiled" and r["precision"] == "fp32, compiled"
    assert r["compile_cold_s"] > r["compile_warm_s"] - 1  # the warm cache is not slower than none
    for key in ("train_speedup", "infer_speedup", "speedup_over_eager", "train_segments_per_s"):
        assert _positive(r[key]), key
