"""The rehearsal's projection onto cluster/gpu.yaml (bench.rehearsal_projection) and the search settings the
rehearsal writes: arithmetic on a hand-made rehearsal result, no data, no Ray."""
import doctest

import pytest

from bench import rehearsal, rehearsal_projection as proj


def _res(network_s=60.0, backend_s=6.0) -> dict:
    trial = {"trial": "t0", "params": {"train.lr": 1e-3}, "epochs": 2, "wall_s": 500.0, "worker_start_s": 15.0,
             "setup_s": 4.0, "epochs_s": 470.0, "other_s": 11.0,
             "epoch_seconds": [300.0, 300.0], "validation_seconds": [70.0, 70.0],
             "validation_network_seconds": [network_s] * 2, "validation_backend_seconds": [backend_s] * 2}
    delivery = {"train_clips": 800, "items": 3200, "segments_per_clip": 4.0, "batch_size": 32,
                "loader": [{"num_workers": 0, "segments": 3200, "epoch_s": 2.0, "first_batch_s": 0.1,
                            "segments_per_s": 1600.0}],
                "augment_segments_per_s": 5000.0, "forward_flops_per_segment": 2.35e9, "torch_threads": 1,
                "segment_shape": [1, 513, 64]}
    stages = {"delivery": {"returncode": 0, "result": delivery, "clips": 800, "per_clip": {"wall_s": 0.01}},
              "evaluate": {"returncode": 0, "clips": 200, "per_clip": {"wall_s": 0.4, "cpu_s": 0.4}}}
    return {"schema": 1, "quick": False, "date": "2026-12-07", "settings": {}, "sizes": {
        "quarter": {"spec": {}, "stages": stages, "trials": [trial]}}}


def test_doctests_of_the_rehearsal_modules():
    for module in (proj, rehearsal):
        assert doctest.testmod(module).failed == 0


def test_projection_from_measured_costs():
    p = proj.project(_res())
    m = p["measured"]
    assert m["cpu_train_segments_per_s"] == pytest.approx(3200 / 230)  # epoch 300 s, 70 of it validation
    assert m["fed_segments_per_s"] == 1600.0 and m["trial_fixed_s"] == 19.0 and m["trial_other_s"] == 11.0
    assert p["expected_epochs"] == proj.expected_epochs(5, 2, 30) == 11.25  # configs/search/base.yaml's ASHA
    fp32 = p["precisions"]["fp32"]
    rate = min(1600.0, fp32["gpu_segments_per_s"])
    fan = fp32["types"]["fan"]
    assert fan["epoch_train_s"] == pytest.approx(3675 * 0.9 * 4 / rate)
    speedup = rate / (3200 / 230)
    assert fan["epoch_validation_s"] == pytest.approx(60 / speedup + 6)  # the back-ends stay at CPU speed
    trial = 11.25 * (fan["epoch_train_s"] + fan["epoch_validation_s"]) + 19 + 11 / speedup
    assert fan["gpu_hours"] == pytest.approx(20 * trial / 3600)
    assert fp32["dollars"] > 0 and fp32["wall_hours"] > sum(r["gpu_hours"] for r in fp32["types"].values()) / 2


def test_projection_is_said_missing_rather_than_invented():
    res = _res()
    res["sizes"]["quarter"]["trials"][0].pop("validation_network_seconds")  # a run from before the split
    assert proj.project(res) is None
    assert "Not computed" in "\n".join(proj.render(None))
    md = "\n".join(proj.render(proj.load_projection(_res())))
    assert "## Projection" in md and "A projection, not a measurement" in md and "$" in md


def test_rehearsal_search_runs_distinct_trials_side_by_side():
    assert rehearsal.trial_resources(2, 2, quick=False) == {"workers": 1, "trial_cpus": 0.25, "cpus_per_worker": 0.75}
    assert rehearsal.trial_resources(1, 2, quick=False)["cpus_per_worker"] == 0.5  # never below half a CPU
