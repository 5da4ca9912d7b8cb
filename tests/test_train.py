import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from helpers import small_config
from mimimi.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from mimimi.config import merge
from mimimi.data.index import index_dataset, select
from mimimi.evaluation import EvaluationError, evaluate
from mimimi.scoring.clips import score_clips
from mimimi.features import FeatureCache
from mimimi.training import TrainError, fit, split_train_val


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
    real_locate = FeatureCache.locate  # the training segments' reads
    monkeypatch.setattr(FeatureCache, "locate", lambda self, p, *a, **k: (seen.append(str(p)), real_locate(self, p, *a, **k))[1])
    real_warm = FeatureCache.warm
    monkeypatch.setattr(FeatureCache, "warm", lambda self, paths, *a, **k: real_warm(self, list(seen.extend(map(str, paths)) or paths), *a, **k))
    fit(small_config(synth_root, tmp_path / "cache", epochs=1), tmp_path / "run")
    assert seen and all("/train/" in p for p in seen)


def test_bounded_validation_refits_the_best_backends_on_every_clip(synth_root, tmp_path, monkeypatch):
    """validation.max_references_per_id bounds each epoch's back-end fits to a sample per ID (docs/sizing.md);
    finalize (the run's end) refits the best checkpoint's back-ends on every training clip, once."""
    from mimimi import training

    real_finalize = training.finalize
    monkeypatch.setattr(training, "finalize", lambda *a, **k: False)  # the checkpoint as the epoch left it
    cfg = merge(small_config(synth_root, tmp_path / "cache", epochs=1), {"validation": {"max_references_per_id": 4}})
    result = fit(cfg, tmp_path / "run")
    n_train = len(select(index_dataset(synth_root).clips, machine_type="valve", split="train"))
    settings = load_checkpoint(result.best_checkpoint).scoring.settings
    assert settings["fitted_on_every_clip"] is False
    assert settings["references"].startswith(f"a sample of 16 of the {n_train}")
    assert real_finalize(result.best_checkpoint) is True
    settings = load_checkpoint(result.best_checkpoint).scoring.settings
    assert settings["fitted_on_every_clip"] is True
    assert settings["references"] == f"all {n_train} training clips (refitted after training)"
    assert real_finalize(result.best_checkpoint) is False  # already on every clip: left alone


def test_fit_is_deterministic_and_checkpoints_round_trip(synth_root, tmp_path):
    cfg = small_config(synth_root, tmp_path / "cache")
    a = fit(cfg, tmp_path / "a")
    b = fit(cfg, tmp_path / "b")
    assert [h["val_loss"] for h in a.history] == [h["val_loss"] for h in b.history]
    assert len(a.history) == 2 and a.best_epoch in (0, 1)
    for h in a.history:  # validation's two parts (the network's, the back-ends'), as docs/sizing.md projects them
        parts = h["validation_network_seconds"] + h["validation_backend_seconds"]
        assert 0 < h["validation_network_seconds"] and 0 < h["validation_backend_seconds"]
        assert parts <= h["validation_seconds"] <= h["epoch_seconds"]
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


def test_fit_reports_every_epoch_and_the_best_checkpoint_with_the_last(synth_root, tmp_path):
    cfg = small_config(synth_root, tmp_path / "cache", epochs=2)
    seen = []
    result = fit(cfg, tmp_path / "run", on_epoch=lambda m, ckpt: seen.append((m["epoch"], m["final"], ckpt and ckpt.name)))
    # the first epoch is always an improvement; the last always carries the best checkpoint, marked final
    assert seen == [(0, False, "best.pt"), (1, True, "best.pt")] and result.best_checkpoint.exists()


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
    # 4 IDs: chance is 0.25 (the best epoch is the monitored proxy AUC's, not necessarily the best-classifying)
    assert max(h["val_acc"] for h in result.history) > 0.6
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


def _index(rows):
    import pandas as pd

    return pd.DataFrame([{"path": f"{t}/train/normal_id_{m}_{k:08d}.wav", "machine_type": t, "machine_id": m,
                          "split": "train", "label": "normal"} for t, m, n in rows for k in range(n)])


def test_class_map_type_and_all():
    from mimimi.training import class_map, other_type_proxies, training_clips

    index = _index([("fan", "00", 3), ("fan", "02", 2), ("pump", "00", 4), ("valve", "04", 2)])
    cfg = merge(small_config("/data", "/cache"), {"train": {"machine_type": "pump"}, "validation": {"other_types": 1}})
    clips = training_clips(cfg, index)
    held = other_type_proxies(cfg, index)
    assert held.path.tolist() == ["fan/train/normal_id_00_00000000.wav", "valve/train/normal_id_04_00000000.wav"]
    own = class_map(cfg, clips, index, held)
    assert own.names == ["pump/00"] and own.ids == {"00": 0} and own.pool.empty

    every = class_map(merge(cfg, {"train": {"classes": "all"}}), clips, index, held)
    assert every.names == ["fan/00", "fan/02", "pump/00", "valve/04"]
    assert every.ids == {"00": 2}  # the trained type's ID -> its output among all classes
    assert every.pool.machine_id.value_counts().to_dict() == {"fan/00": 2, "fan/02": 2, "valve/04": 1}
    assert set(every.pool.path).isdisjoint(held.path) and "pump" not in set(every.pool.machine_type)

    two = merge(cfg, {"train": {"classes": "all"}, "data": {"machine_types": ["pump", "valve"]}})
    assert class_map(two, clips, index, other_type_proxies(two, index)).names == ["pump/00", "valve/04"]
    with pytest.raises(TrainError, match=r"data.machine_types \['slider'\] not found"):
        class_map(merge(two, {"data": {"machine_types": ["slider", "pump"]}}), clips, index, held)
    with pytest.raises(TrainError, match="'pump' is not among data.machine_types"):
        class_map(merge(two, {"data": {"machine_types": ["fan", "valve"]}}), clips, index, held)


@pytest.fixture(scope="module")
def two_types(tmp_path_factory):
    """valve with IDs 00/02 and pump with the single ID 00: the pump trains only with train.classes=all."""
    from mimimi.data.synth import generate

    root = tmp_path_factory.mktemp("two-types")
    generate(root, ["valve"], ["00", "02"], n_train=8, n_test_normal=3, n_test_anomaly=3, seconds=3.0, seed=1)
    generate(root, ["pump"], ["00"], n_train=8, n_test_normal=3, n_test_anomaly=3, seconds=3.0, seed=2)
    return root


def test_one_classifier_over_every_type_and_id(two_types, tmp_path):
    cfg = merge(small_config(two_types, tmp_path / "cache", epochs=1),
                {"train": {"machine_type": "pump", "classes": "all", "sampler": "balanced"},
                 "validation": {"other_types": 2}})
    with pytest.raises(TrainError, match="one machine ID"):  # alone, the pump's one ID gives no classifier
        fit(merge(cfg, {"train": {"classes": "type"}}), tmp_path / "alone")
    result = fit(cfg, tmp_path / "run")
    loaded = load_checkpoint(result.best_checkpoint)
    assert loaded.meta["classes"] == ["pump/00", "valve/00", "valve/02"] and loaded.ids == {"00": 0}
    assert loaded.cfg.model.net.n_ids == 3 and loaded.model(torch.zeros(2, 1, 129, 32, dtype=torch.cfloat)).total.shape == (2, 3)
    assert loaded.meta["n_train_clips"] + loaded.meta["n_val_clips"] == 8  # the pump's own clips; valve's are the pool
    assert "val_proxy_auc/other_types" in result.best  # valve clips held out of training serve as proxies
    rep = evaluate(result.best_checkpoint, two_types, tmp_path / "eval", progress=False)
    assert rep.per_id.machine_id.tolist() == ["00"] and rep.per_id.auc.between(0, 1).all()
    with pytest.raises(TrainError, match="needs a classifier"):
        fit(merge(cfg, {"model": {"name": "ae"}}), tmp_path / "ae")


def test_bf16_training_and_scoring(synth_root, tmp_path):
    from scipy.stats import spearmanr

    cfg = merge(small_config(synth_root, tmp_path / "cache", epochs=1),
                {"train": {"precision": "bf16"}, "scoring": {"precision": "bf16"}})
    result = fit(cfg, tmp_path / "run")
    assert all(np.isfinite(result.best[k]) for k in ("val_loss", "val_proxy_auc"))
    loaded = load_checkpoint(result.best_checkpoint)
    assert loaded.cfg.scoring.precision == "bf16"
    test = select(index_dataset(synth_root).clips, split="test")
    cache = FeatureCache(cfg.data.cache_dir, loaded.cfg.features)
    low = score_clips(loaded.model, loaded.cfg, test, loaded.ids, cache, fitted=loaded.scoring, scorer="knn")
    fp32 = merge(loaded.cfg, {"scoring": {"precision": "fp32"}})
    ref = score_clips(loaded.model, fp32, test, loaded.ids, cache, fitted=loaded.scoring, scorer="knn")
    assert spearmanr(low.score, ref.score).statistic > 0.95  # the same ranking of clips, near enough


def test_compile_decision(monkeypatch):
    from mimimi import training as T

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    big = T.COMPILE_MIN_BATCHES
    monkeypatch.setattr(T.shutil, "which", lambda name: "/usr/bin/c++")
    assert T.compile_decision("auto", cpu, big, T.DEFAULT_BATCH_WORK)[0] is True
    assert T.compile_decision("auto", cpu, big - 1, T.DEFAULT_BATCH_WORK)[0] is False
    # work, not steps: the smoke features' batches are 16 x smaller, so 16 x the steps are needed
    assert T.compile_decision("auto", cpu, 4 * big, T.DEFAULT_BATCH_WORK // 16)[0] is False
    assert T.compile_decision("auto", cuda, 10 * big, T.DEFAULT_BATCH_WORK)[0] is False
    assert T.compile_decision(False, cpu, 10 * big, T.DEFAULT_BATCH_WORK)[0] is False
    assert T.compile_decision(True, cpu, 1, T.DEFAULT_BATCH_WORK)[0] is True
    monkeypatch.setattr(T.shutil, "which", lambda name: None)
    compiled, why = T.compile_decision("auto", cpu, 10 * big, T.DEFAULT_BATCH_WORK)
    assert compiled is False and "no C++ compiler" in why
    with pytest.raises(TrainError, match="needs a C.. compiler"):
        T.compile_decision(True, cpu, 1, T.DEFAULT_BATCH_WORK)


def test_compile_setting_is_checked():
    from mimimi.config import ConfigError, load_config

    assert load_config(overrides={"train": {"compile": False}}).train.compile is False
    with pytest.raises(ConfigError, match="train.compile"):
        load_config(overrides={"train": {"compile": "sometimes"}})


@pytest.mark.slow
def test_compiled_training_matches_eager(synth_root, tmp_path):
    """train.compile: true trains the same model as eager (up to rounding) and saves a plain checkpoint."""
    eager = fit(small_config(synth_root, tmp_path / "cache", epochs=1, compile=False), tmp_path / "eager")
    compiled = fit(small_config(synth_root, tmp_path / "cache", epochs=1, compile=True), tmp_path / "compiled")
    a, b = eager.history[0], compiled.history[0]
    assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-3)
    # looser after the epoch: the convolution biases before batch norm get rounding-noise gradients, which
    # Adam scales up to full steps, so the two runs' biases (and running means) drift apart by ~lr per step
    assert b["val_loss"] == pytest.approx(a["val_loss"], rel=0.05)
    ea, ca = load_checkpoint(eager.best_checkpoint), load_checkpoint(compiled.best_checkpoint)
    assert list(ca.model.state_dict()) == list(ea.model.state_dict())  # no torch.compile wrapper in the keys
