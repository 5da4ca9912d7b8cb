import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import small_config
from mimimi.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from mimimi.config import merge, to_dict
from mimimi.data.index import index_dataset, select
from mimimi.evaluate import EvaluationError, evaluate, score_clips
from mimimi.features import FeatureCache
from mimimi.train import TrainError, fit, split_train_val, train_loop_per_worker


def test_validation_split_is_per_id_disjoint_and_seeded(synth_root):
    clips = select(index_dataset(synth_root).clips, split="train")
    train, val = split_train_val(clips, 0.25, seed=3)
    assert set(train.path).isdisjoint(val.path) and len(train) + len(val) == len(clips)
    assert val.groupby("machine_id").size().to_dict() == {"00": 3, "02": 3, "04": 3, "06": 3}
    again, _ = split_train_val(clips, 0.25, seed=3)
    other, _ = split_train_val(clips, 0.25, seed=4)
    assert again.path.tolist() == train.path.tolist() and other.path.tolist() != train.path.tolist()


def test_training_never_reads_test_clips(synth_root, tmp_path, monkeypatch):
    seen = []
    real_get = FeatureCache.get
    monkeypatch.setattr(FeatureCache, "get", lambda self, p, *a, **k: (seen.append(str(p)), real_get(self, p, *a, **k))[1])
    real_warm = FeatureCache.warm
    monkeypatch.setattr(FeatureCache, "warm", lambda self, paths, *a, **k: real_warm(self, list(seen.extend(map(str, paths)) or paths), *a, **k))
    fit(small_config(synth_root, tmp_path / "cache", epochs=1), tmp_path / "run")
    assert seen and all("/train/" in p for p in seen)


def test_fit_is_deterministic_and_checkpoints_round_trip(synth_root, tmp_path):
    cfg = small_config(synth_root, tmp_path / "cache")
    a = fit(cfg, tmp_path / "a")
    b = fit(cfg, tmp_path / "b")
    assert [h["val_loss"] for h in a.history] == [h["val_loss"] for h in b.history]
    assert len(a.history) == 2 and a.best_epoch in (0, 1)
    la, lb = load_checkpoint(a.best_checkpoint), load_checkpoint(b.best_checkpoint)
    assert all(torch.equal(la.model.state_dict()[k], lb.model.state_dict()[k]) for k in la.model.state_dict())
    # the checkpoint carries the resolved config, feature settings, ID map and versions
    blob = torch.load(a.best_checkpoint, weights_only=True)
    assert blob["ids"] == {"00": 0, "02": 1, "04": 2, "06": 3}
    assert blob["config"]["model"]["net"]["n_ids"] == 4 and blob["features"]["n_fft"] == 256
    assert set(blob["versions"]) == {"mimimi", "torch", "torchaudio", "python"}
    assert json.loads((tmp_path / "a" / "config.json").read_text()) == blob["config"]
    # save -> load -> identical scores
    test = select(index_dataset(synth_root).clips, split="test")
    cache = FeatureCache(cfg.data.cache_dir, la.cfg.features)
    s1 = score_clips(la.model, la.cfg, test, la.ids, cache)
    save_checkpoint(tmp_path / "copy.pt", la.model, la.cfg, la.ids, **{k: v for k, v in la.meta.items() if k != "versions"})
    again = load_checkpoint(tmp_path / "copy.pt")
    s2 = score_clips(again.model, again.cfg, test, again.ids, cache)
    np.testing.assert_array_equal(s1.score.to_numpy(), s2.score.to_numpy())
    assert (s1.pred_id == s2.pred_id).all()


def test_train_loop_per_worker_takes_a_plain_dict(synth_root, tmp_path):
    cfg = small_config(synth_root, tmp_path / "cache", epochs=1)
    seen = []
    result = train_loop_per_worker({**to_dict(cfg), "out_dir": str(tmp_path / "run"),
                                    "on_epoch": lambda m, ckpt: seen.append((m["epoch"], ckpt and ckpt.name))})
    assert seen == [(0, "best.pt")] and result.best_checkpoint.exists()


@pytest.mark.parametrize("model", ["magnitude", "ae"])
def test_baselines_train_and_evaluate(synth_root, tmp_path, model):
    cfg = merge(small_config(synth_root, tmp_path / "cache", epochs=1), {"model": {"name": model}})
    if model == "ae":
        cfg = merge(cfg, {"train": {"batch_size": 256}})
    result = fit(cfg, tmp_path / "run")
    assert "val_acc" in result.best if model != "ae" else "val_acc" not in result.best
    rep = evaluate(result.best_checkpoint, synth_root, tmp_path / "eval", progress=False)
    assert len(rep.per_id) == 4 and rep.per_id.auc.between(0, 1).all()
    assert (tmp_path / "eval" / "anomaly_score_valve_id_00.csv").exists()


def test_complex_network_learns_the_synthetic_ids_and_anomalies(synth_root, tmp_path):
    cfg = small_config(synth_root, tmp_path / "cache", epochs=12, segments_per_clip=4, lr=3e-3)
    result = fit(cfg, tmp_path / "run")
    assert result.best["val_acc"] > 0.6  # 4 IDs: chance is 0.25
    rep = evaluate(result.best_checkpoint, synth_root, tmp_path / "eval", progress=False)
    assert rep.per_type.mean_auc.iloc[0] > 0.7  # chance is 0.5


def test_errors_are_one_line(synth_root, tmp_path):
    with pytest.raises(TrainError, match="no clips of machine type 'pump'"):
        fit(small_config(synth_root, tmp_path / "c", machine_type="pump"), tmp_path / "r")
    one_id = tmp_path / "one"
    (one_id / "valve" / "train").mkdir(parents=True)
    for p in (synth_root / "valve" / "train").glob("normal_id_00_*.wav"):
        (one_id / "valve" / "train" / p.name).symlink_to(p)
    with pytest.raises(TrainError, match="needs at least two"):
        fit(small_config(one_id, tmp_path / "c"), tmp_path / "r")
    # evaluation: no test split, and test clips of an ID the model never saw
    ckpt = fit(small_config(synth_root, tmp_path / "c", epochs=1), tmp_path / "r").best_checkpoint
    with pytest.raises(EvaluationError, match="no labelled test clips"):
        evaluate(ckpt, one_id, tmp_path / "e")
    unseen = tmp_path / "unseen" / "valve" / "test"
    unseen.mkdir(parents=True)
    for p in (synth_root / "valve" / "test").glob("*_id_00_*.wav"):
        (unseen / p.name.replace("_id_00_", "_id_08_")).symlink_to(p)
    with pytest.raises(EvaluationError, match=r"machine ID\(s\) \['08'\] that the model never saw"):
        evaluate(ckpt, unseen.parent.parent, tmp_path / "e")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="bad.pt: not a usable MIMIMI checkpoint"):
        load_checkpoint(bad)
    r = subprocess.run([sys.executable, "-m", "mimimi.evaluate", "--checkpoint", str(bad), "--data-root",
                        str(synth_root), "--out", str(tmp_path / "e")], capture_output=True, text=True)
    assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1 and "bad.pt" in r.stderr
