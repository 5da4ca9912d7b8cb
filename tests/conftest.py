"""Shared fixtures: wav writers, the real sample clips, a tiny synthetic MIMII-like tree, and one session-wide
tracking store holding a tiny trained model registered as ``mimimi-valve`` version 1."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

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


def crandn(*shape, dtype=None):
    """A standard complex normal tensor (complex64 unless ``dtype`` says otherwise)."""
    import torch

    return torch.randn(*shape, dtype=dtype or torch.complex64)


def stacked(z):
    """Complex (B, C, ...) -> real (B, 2C, ...) as [real parts; imag parts], written out for the layer oracles."""
    import torch

    return torch.cat([z.real, z.imag], dim=1)


def write_wav(path: Path, data: np.ndarray, sr: int = 16000, subtype: str = "PCM_16") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, data, sr, subtype=subtype)
    return path


def noise(seconds: float, sr: int = 16000, channels: int = 1, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(0, 0.1, (int(seconds * sr), channels)).astype(np.float32)
    return x[:, 0] if channels == 1 else x


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


def small_config(root: Path, cache: Path, **train):
    """The real architecture on a smaller STFT (129 bins, 32-frame segments) so a CPU test trains in seconds."""
    from mimimi.config import load_config

    return load_config(overrides={
        "data": {"root": str(root), "cache_dir": str(cache)},
        "features": {"n_fft": 256, "hop_length": 128, "segment_frames": 32, "eval_hop_frames": 32, "n_mels": 64},
        "train": {"machine_type": "valve", "epochs": 2, "batch_size": 16, "lr": 1e-3, "progress": False,
                  "val_fraction": 0.25, **train},
    })


# test modules of the integration tier (they train models or run the CLIs end to end); the rest are unit
# tests unless marked slow. `make test-unit` runs the unit tier alone.
INTEGRATION = {"test_train", "test_scorers", "test_scoring", "test_score", "test_tracking", "test_real_samples",
               "test_accuracy", "test_fails_like_real", "test_bench", "test_cli", "test_report", "test_layers"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.stem in INTEGRATION and "slow" not in item.keywords:
            item.add_marker(pytest.mark.integration)
