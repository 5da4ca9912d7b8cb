"""Training and evaluation end to end on the real clips: proving the formats, not accuracy.

The shared samples hold test clips only, so each tree here reuses normal clips as training clips
(symlinks): fine for a format check, meaningless as a score.
"""
import subprocess
import sys

import pytest
import yaml

from mimimi.config import load_config
from mimimi.evaluation import evaluate
from mimimi.training import fit


@pytest.fixture(scope="module")
def dcase_fan(real_samples, tmp_path_factory):
    root = tmp_path_factory.mktemp("real_dcase")
    src = real_samples / "dcase2020" / "dev_data" / "fan" / "test"
    for split in ("train", "test"):
        (root / "fan" / split).mkdir(parents=True)
    for wav in sorted(src.glob("*.wav")):
        (root / "fan" / "test" / wav.name).symlink_to(wav)
        if wav.name.startswith("normal"):
            (root / "fan" / "train" / wav.name).symlink_to(wav)
    return root


@pytest.fixture(scope="module")
def mimii_valve(real_samples, tmp_path_factory):
    """The 8-channel MIMII clips; id_06's normal clip also under later names so the ID has training clips."""
    root = tmp_path_factory.mktemp("real_mimii")
    src = real_samples / "mimii" / "valve"
    for wav in sorted(src.rglob("*.wav")):
        dest = root / "valve" / wav.relative_to(src)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.symlink_to(wav)
    normal06 = src / "id_06" / "normal" / "00000048.wav"
    for name in ("00000100.wav", "00000101.wav"):
        (root / "valve" / "id_06" / "normal" / name).symlink_to(normal06)
    return root


def quick(root, tmp_path, machine_type, model):
    return load_config(overrides={
        "data": {"root": str(root), "cache_dir": str(tmp_path / "cache")}, "model": {"name": model},
        "train": {"machine_type": machine_type, "epochs": 1, "batch_size": 8 if model != "ae" else 256,
                  "val_fraction": 0.3, "progress": False}})


@pytest.mark.parametrize("model", ["complex", "magnitude", "ae"])
def test_dcase_clips_train_and_evaluate(dcase_fan, tmp_path, model):
    result = fit(quick(dcase_fan, tmp_path, "fan", model), tmp_path / "run")
    rep = evaluate(result.best_checkpoint, dcase_fan, tmp_path / "eval", progress=False)
    assert rep.per_id.machine_id.tolist() == ["00", "02", "04", "06"]
    assert rep.per_id.auc.between(0, 1).all() and rep.per_type.mean_pauc.between(0, 1).all()
    assert sorted(p.name for p in (tmp_path / "eval").glob("anomaly_score_*.csv")) == [
        f"anomaly_score_fan_id_{i}.csv" for i in ("00", "02", "04", "06")]


def test_eight_channel_mimii_clips_train_and_evaluate(mimii_valve, tmp_path):
    result = fit(quick(mimii_valve, tmp_path, "valve", "complex"), tmp_path / "run")
    rep = evaluate(result.best_checkpoint, mimii_valve, tmp_path / "eval", progress=False)
    # id_00 has no abnormal clip, so the MIMII split puts both its normal clips in training
    assert rep.per_id.machine_id.tolist() == ["06"] and rep.per_id.auc.between(0, 1).all()
    assert rep.per_type.n_ids.iloc[0] == 1


def test_cli_train_then_evaluate(dcase_fan, tmp_path):
    cfg = tmp_path / "quick.yaml"
    cfg.write_text(yaml.safe_dump({"data": {"cache_dir": str(tmp_path / "cache")},
                                   "train": {"batch_size": 8, "val_fraction": 0.3}}))
    run = [sys.executable, "-m", "mimimi.train", "--data-root", str(dcase_fan), "--machine-type", "fan",
           "--model", "complex", "--config", str(cfg), "--epochs", "1", "--out", str(tmp_path / "run")]
    r = subprocess.run(run, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "| machine type | best ID (AUC) | mean AUC over IDs | mean pAUC | pooled AUC |" in r.stdout
    r = subprocess.run([sys.executable, "-m", "mimimi.evaluate", "--checkpoint", str(tmp_path / "run" / "best.pt"),
                        "--data-root", str(dcase_fan), "--out", str(tmp_path / "eval"), "--aggregate", "max"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "| fan |" in r.stdout and (tmp_path / "eval" / "results.md").exists()
