"""Shared fixtures (plain helpers are in helpers.py): the real sample clips, a tiny synthetic MIMII-like
tree, and one session-wide tracking store holding a tiny trained model registered as ``mimimi-valve`` v1."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from helpers import noise, write_wav

REPO = Path(__file__).resolve().parents[1]
REAL_SAMPLES = Path(os.environ.get("MIMIMI_REAL_SAMPLES", REPO.parent / "shared" / "data" / "real-samples"))


@pytest.fixture
def seeded_one_thread():
    """Seed torch; run on one intra-op thread: the layer tests' tensors are tiny, and with several
    threads on a shared, busy CPU OpenMP's spin-waiting made a 1 s test take 40 s."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def real_samples() -> Path:
    """The 97 real MIMII/DCASE clips; required in CI, skipped with a reason elsewhere."""
    if not REAL_SAMPLES.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"real samples not found at {REAL_SAMPLES} (set MIMIMI_REAL_SAMPLES)")
        pytest.skip(f"real samples not found at {REAL_SAMPLES} (set MIMIMI_REAL_SAMPLES)")
    return REAL_SAMPLES


@pytest.fixture(scope="session")
def noise_tree(tmp_path_factory) -> Path:
    """A tiny DCASE-layout tree of 3 s noise clips: fan, IDs 00/02, 3 train + 1 + 1 test each."""
    root = tmp_path_factory.mktemp("noise_tree")
    k = 0
    for mid in ("00", "02"):
        for split, label, n in (("train", "normal", 3), ("test", "normal", 1), ("test", "anomaly", 1)):
            for i in range(n):
                write_wav(root / "fan" / split / f"{label}_id_{mid}_{i:08d}.wav", noise(3, seed=k))
                k += 1
    return root


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    """A tiny seeded synthetic MIMII-like tree: valve, 4 IDs x (12 train, 6 + 6 test) x 3 s."""
    from mimimi.data.synth import generate

    root = tmp_path_factory.mktemp("synth")
    generate(root, ["valve"], ["00", "02", "04", "06"], n_train=12, n_test_normal=6, n_test_anomaly=6,
             seconds=3.0, seed=0)
    return root


@pytest.fixture(scope="session")
def valve_model(tmp_path_factory, real_samples) -> dict:
    """Session-wide: a tiny trained checkpoint logged as a search logs its best model, with its normal-only
    per-ID thresholds, as version 1 (the champion) of ``mimimi-valve`` in a sqlite store of its own.

    Keys: ``store`` (the tracking URI), ``checkpoint``, ``thresholds``, ``run_id``, ``ref`` (a ``ModelRef``).
    Tests may add models and versions under other names; ``mimimi-valve`` version 1 stays as logged.
    """
    from scoring_helpers import log_search_model, stored_thresholds, tiny_checkpoint

    from mimimi.tracking import Tracker

    tmp = tmp_path_factory.mktemp("valve-model")
    store = f"sqlite:///{tmp / 'mlruns' / 'mlflow.db'}"
    ckpt = tiny_checkpoint(tmp)
    logged = log_search_model(Tracker(store), ckpt, pauc=60.0)  # percent, as a search logs it
    return {"store": store, "checkpoint": ckpt, "thresholds": stored_thresholds(ckpt), "run_id": logged.run_id,
            "ref": logged.ref}


# test modules of the integration tier (they train models or run the CLIs end to end); the rest are unit
# tests unless marked slow. `make test-unit` runs the unit tier alone.
INTEGRATION = {"test_train", "test_few_clips", "test_scorers", "test_scoring", "test_score", "test_tracking", "test_real_samples",
               "test_accuracy", "test_fails_like_real", "test_bench", "test_cli", "test_report", "test_layers"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.stem in INTEGRATION and "slow" not in item.keywords:
            item.add_marker(pytest.mark.integration)
