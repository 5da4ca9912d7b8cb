"""The rehearsal command (``python -m bench.rehearsal``): its measurement of a process tree (fast), and
``--quick`` end to end at both sizes (slow: two small searches), checking the structure of REHEARSAL.md and
rehearsal.json (every stage, both sizes, the ratios), never a figure."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from bench.rehearsal import STAGES, compare, main, parse_args
from bench.rehearsal_measure import become_subreaper, run_measured

REPO = Path(__file__).resolve().parents[1]
QUICK_TIMEOUT = 1500  # seconds: two searches of two one-epoch trials on a small shared CPU, and the rest

# a parent that starts a busy child and exits at once: the child, orphaned, must still be measured
ORPHAN = """
import os, sys, time
if os.fork() == 0:
    end = time.process_time() + 1.0
    while time.process_time() < end:
        pass
    os._exit(0)
sys.exit(0)
"""


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def test_an_orphaned_child_is_measured_after_its_parent_exits(tmp_path):
    if not become_subreaper():
        pytest.skip("no PR_SET_CHILD_SUBREAPER here")
    r = run_measured([sys.executable, "-c", ORPHAN], log=tmp_path / "log", cwd=tmp_path, interval=0.1)
    assert r["returncode"] == 0 and r["leftover_processes"] == 0
    assert r["descendants_outlived_s"] > 0.5  # the child ran on after the command exited
    assert r["cpu_s"] >= 0.9  # its second of CPU, reaped here: in the rusage
    assert set(r["processes"]) == {"driver", "child process"}
    assert r["processes"]["driver"]["peak_rss_mib"] > 0


def test_a_stage_left_running_is_ended_and_counted(tmp_path):
    become_subreaper()
    code = "import subprocess, sys; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])"
    r = run_measured([sys.executable, "-c", code], log=tmp_path / "log", cwd=tmp_path, interval=0.1, grace_s=1.0)
    assert r["returncode"] == 0 and r["leftover_processes"] == 1


def _stage(wall: float, cpu: float, clips: int) -> dict:
    return {"returncode": 0, "clips": clips, "unit": "clips", "wall_s": wall, "cpu_s": cpu,
            "per_clip": {"wall_s": wall / clips, "cpu_s": cpu / clips}}


def test_compare_flags_a_stage_that_costs_more_per_clip_at_full_size():
    res = {"sizes": {"quarter": {"stages": {"cache": _stage(10, 20, 100), "search": _stage(100, 100, 100)}},
                     "full": {"stages": {"cache": _stage(40, 80, 400), "search": _stage(800, 300, 400)}}}}
    comp = compare(res)
    assert comp["cache"]["ratio"] == {"wall_s": 1.0, "cpu_s": 1.0} and comp["cache"]["flag"] is False
    assert comp["search"]["ratio"]["wall_s"] == 2.0 and comp["search"]["flag"] is True
    assert comp["score"] == {}  # not run: no ratio, no flag


@pytest.mark.parametrize("argv, says", [(["--only", "delivery"], "give that run's --work"),
                                         (["--only", "delivery,train", "--work", "w"], "unknown stage(s) train")])
def test_only_refuses_what_it_cannot_measure_again(argv, says, capsys):
    with pytest.raises(SystemExit):
        parse_args(argv)
    assert says in capsys.readouterr().err


def test_a_fresh_run_refuses_a_work_folder_an_earlier_run_left(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "search.yaml").write_text("{}")  # its data, cache and trials would count as this run's
    with pytest.raises(SystemExit, match="full: holds an earlier rehearsal; remove it"):
        main(["--quick", "--size", "full", "--work", str(tmp_path), "--out", str(tmp_path / "R.md")])
    assert not (tmp_path / "R.md").exists()


@pytest.fixture(scope="module")
def quick(tmp_path_factory) -> tuple[str, dict]:
    tmp = tmp_path_factory.mktemp("rehearsal")
    out = tmp / "REHEARSAL.md"
    proc = subprocess.run([sys.executable, "-m", "bench.rehearsal", "--quick", "--work", str(tmp / "work"),
                           "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=QUICK_TIMEOUT - 60,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out.read_text(), json.loads(out.with_name("rehearsal.json").read_text())


@pytest.mark.slow
@pytest.mark.timeout(QUICK_TIMEOUT)
def test_only_measures_one_stage_again_and_keeps_the_others(quick, tmp_path):
    _, res = quick
    out = tmp_path / "REHEARSAL.md"
    out.with_name("rehearsal.json").write_text(json.dumps(res))
    proc = subprocess.run([sys.executable, "-m", "bench.rehearsal", "--quick", "--work", res["settings"]["work"],
                           "--out", str(out), "--only", "delivery", "--size", "full"],
                          cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    new = json.loads(out.with_name("rehearsal.json").read_text())
    assert [(a["stages"], a["sizes"]) for a in new["again"]] == [(["delivery"], ["full"])]
    for size in ("quarter", "full"):
        for stage in STAGES:
            same = new["sizes"][size]["stages"][stage] == res["sizes"][size]["stages"][stage]
            assert same == ((size, stage) != ("full", "delivery")), (size, stage)  # only that one measured again
    assert new["sizes"]["full"]["stages"]["delivery"]["returncode"] == 0
    assert "**Measured again**" in out.read_text() and "--only delivery" in out.read_text()


@pytest.mark.slow
@pytest.mark.timeout(QUICK_TIMEOUT)
def test_quick_run_measures_every_stage_at_both_sizes(quick):
    _, res = quick
    assert res["schema"] == 1 and res["quick"] is True and "error" not in res
    assert set(res["sizes"]) == {"full", "quarter"}
    for size, x in res["sizes"].items():
        assert list(x["stages"]) == list(STAGES), size
        for name, st in x["stages"].items():
            assert st["returncode"] == 0 and st["clips"] >= 1 and st["unit"], (size, name)
            for key in ("wall_s", "cpu_s", "cpu_sampled_s", "tree_peak_rss_mib", "tree_peak_pss_mib"):
                assert _finite(st[key]) and st[key] >= 0, (size, name, key)
            assert set(st["per_clip"]) == {"wall_s", "cpu_s"} and "driver" in st["processes"], (size, name)
        kinds = x["stages"]["search"]["processes"]
        assert {"driver", "trial", "Ray Train worker", "Ray system"} <= set(kinds), kinds
        assert kinds["trial"]["count"] == 2 and kinds["Ray Train worker"]["peak_rss_mib"] > 0
        assert len(x["trials"]) == 2 and all(_finite(t["worker_start_s"]) and t["epochs"] == 1 for t in x["trials"])
        d = x["disk"]
        assert d["wav_mib"] > 0 and set(d["cache_mib"]) == set(res["settings"]["kinds"])
        assert len(d["mlflow"]["trial_runs"]) == 2 and d["mlflow"]["type_run"]["models_mib"] > 0
        delivery = x["stages"]["delivery"]["result"]
        assert [r["num_workers"] for r in delivery["loader"]] == res["settings"]["loader_workers"]
        assert delivery["forward_flops_per_segment"] > 0 and delivery["augment_segments_per_s"] > 0


@pytest.mark.slow
@pytest.mark.timeout(QUICK_TIMEOUT)
def test_quick_run_compares_the_sizes_per_clip(quick):
    _, res = quick
    for stage in STAGES:
        row = res["comparison"][stage]
        assert {"full", "quarter", "ratio", "flag"} <= set(row), stage
        assert row["full"]["clips"] > row["quarter"]["clips"], stage
        assert all(_finite(v) and v > 0 for v in row["ratio"].values()), stage
        assert row["flag"] == any(v > 1.3 for v in row["ratio"].values())


@pytest.mark.slow
@pytest.mark.timeout(QUICK_TIMEOUT)
def test_quick_run_writes_every_section(quick, tmp_path):
    md, res = quick
    assert "Quick mode" in md
    for heading in ("## Machine", "## Cost per clip, quarter beside full", "## Each stage",
                    "## Peak memory by process kind", "## The search, per trial", "## Disk",
                    "## The data path for a GPU", "## How it is measured"):
        assert heading in md, heading
    per_clip = md.split("## Cost per clip")[1].split("\n## ")[0]
    assert len([ln for ln in per_clip.splitlines() if ln.startswith("| ") and "ms/clip" not in ln]) == len(STAGES)
    assert "### quarter" in md and "### full" in md and "segments/s in fp32" in md
    # --render writes the same report from the json alone
    again = tmp_path / "again.md"
    json_file = tmp_path / "rehearsal.json"
    json_file.write_text(json.dumps(res))
    subprocess.run([sys.executable, "-m", "bench.rehearsal", "--render", str(json_file), "--out", str(again)],
                   cwd=REPO, check=True, capture_output=True, timeout=120)
    assert again.read_text().split("\n## ")[1:] == md.split("\n## ")[1:]
