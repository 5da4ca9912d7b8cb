"""``train.attributes``: the classifier's classes split by the training clips' attributes (the DCASE 2022+
section x attribute recipe). The class map from a synthetic 2023-layout index, the per-ID score over several
classes (and that it is today's cross-entropy with one class per ID), a train -> save -> load -> score round
trip, and the one-line errors."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from helpers import small_config
from mimimi import kinds
from mimimi.checkpoint import load_checkpoint, save_checkpoint
from mimimi.config import merge
from mimimi.data.dataset import IDMap, id_classes
from mimimi.data.index import index_dataset, select
from mimimi.scoring.clips import score_clips
from mimimi.features import FeatureCache
from mimimi.nn import ComplexNet
from mimimi.train import main
from mimimi.training import TrainError, class_map, fit, other_type_proxies, training_clips

ATTRS = ("vel_100", "vel_150")  # the synthetic 2023 layout's source and target attributes at domain_shift 0.5


def _generate(root, sections, n_train: int, seconds: float):
    from mimimi.data.synth import generate

    generate(root, ["fan", "valve"], list(sections), n_train=n_train, n_target_train=2, n_test_normal=2,
             n_test_anomaly=2, seconds=seconds, seed=0, layout="dcase2022", domain_shift=0.5)
    return root


@pytest.fixture(scope="module")
def tiny_2023(tmp_path_factory):
    """fan and valve, sections 00 and 01, 2 source + 2 target training clips each, 0.25 s: an index only."""
    return _generate(tmp_path_factory.mktemp("tiny-2023"), ("00", "01"), n_train=2, seconds=0.25)


# ----------------------------------------------------------------------------------- the class map
def test_class_map_splits_sections_by_attributes(tiny_2023):
    index = index_dataset(tiny_2023).clips
    cfg = merge(small_config(tiny_2023, "/cache"), {"validation": {"other_types": 1}})
    clips = training_clips(cfg, index)
    held = other_type_proxies(cfg, index)

    plain = class_map(cfg, clips, index, held)  # switch off: the sections, as before
    assert plain.names == ["valve/00", "valve/01"] and plain.ids == {"00": 0, "01": 1}
    assert plain.ids.classes == {"00": (0,), "01": (1,)}

    own = class_map(merge(cfg, {"train": {"attributes": True}}), clips, index, held)
    assert own.names == [f"valve/{s}/{a}" for s in ("00", "01") for a in ATTRS]
    assert own.ids == {"00": 0, "01": 2} and own.ids.classes == {"00": (0, 1), "01": (2, 3)} and own.pool.empty

    every = class_map(merge(cfg, {"train": {"attributes": True, "classes": "all"}}), clips, index, held)
    assert every.names == [f"{t}/{s}/{a}" for t in ("fan", "valve") for s in ("00", "01") for a in ATTRS]
    assert every.ids == {"00": 4, "01": 6} and every.ids.classes == {"00": (4, 5), "01": (6, 7)}
    assert set(every.pool.machine_id) == {f"fan/{s}/{a}" for s in ("00", "01") for a in ATTRS}
    assert set(every.pool.path).isdisjoint(held.path)


def test_clips_without_attributes_keep_todays_classes():
    """2020 / MIMII names have no attributes (""), DCASE's "noAttribute" is none either: type/ID classes."""
    index = pd.DataFrame([{"path": f"fan/train/{m}_{k}.wav", "machine_type": "fan", "machine_id": m, "split": "train",
                           "label": "normal", "attributes": a} for m, a in (("00", ""), ("02", "noAttribute"))
                          for k in range(3)])
    cfg = merge(small_config("/data", "/cache"), {"train": {"machine_type": "fan", "attributes": True}})
    classes = class_map(cfg, training_clips(cfg, index), index, index.iloc[:0])
    assert classes.names == ["fan/00", "fan/02"] and classes.ids.classes == {"00": (0,), "02": (1,)}


def test_id_map_classes_are_checked():
    assert id_classes(IDMap({"00": 3})) == {"00": (3,)} == id_classes({"00": 3})
    with pytest.raises(ValueError, match="do not match the ID map"):
        IDMap({"00": 1}, {"00": [0, 1]})  # the ID's index must be its first class
    with pytest.raises(ValueError, match="do not match the ID map"):
        IDMap({"00": 0, "01": 2}, {"00": [0, 1]})


# ----------------------------------------------------------------------------------- the score over an ID's classes
def _net(head: str, n_classes: int) -> ComplexNet:
    from mimimi.nn.network import ComplexNetConfig

    torch.manual_seed(0)
    cfg = ComplexNetConfig(n_ids=n_classes, channels=(4, 8, 8, 8, 4), n_freq=65, head=head)
    return ComplexNet(cfg).eval()


@pytest.mark.parametrize("head", ["gap", "arcface"])
def test_one_class_per_id_gives_todays_cross_entropy_exactly(head, seeded_one_thread):
    """The logsumexp over an ID's classes reduces to the old per-class cross-entropy (native ce and the
    validation loss of the three heads), value for value."""
    cfg = merge(small_config("/data", "/cache"), {"model": {"net": {"head": head}}, "train": {"arcface_margin": 0.3}})
    kind, model = kinds.get("complex"), _net(head, 3)
    x = torch.randn(5, 1, 65, 32, dtype=torch.cfloat)
    target = torch.tensor([0, 2, 1, 1, 0])
    with torch.no_grad():
        new = kind.segment_outputs(model, x, target[:, None], cfg)  # (S, 1): one class per ID
        logits = model.embed_and_classify(x).logits
    net, w = cfg.model.net, cfg.train.loss_weights
    fused = (kinds.arcface_loss(logits.total, target, net.arcface_scale, 0.3, "none") if head == "arcface"
             else F.cross_entropy(logits.total.float(), target, reduction="none"))
    old_loss = (w[0] * F.cross_entropy(logits.magnitude.float(), target, reduction="none")
                + w[1] * F.cross_entropy(logits.complex.float(), target, reduction="none") + w[2] * fused)
    assert torch.equal(new.native, F.cross_entropy(logits.total.float(), target, reduction="none"))
    torch.testing.assert_close(new.loss, old_loss, rtol=0, atol=0)


def test_several_classes_per_id_score_their_summed_probability(seeded_one_thread):
    cfg = small_config("/data", "/cache")
    kind, model = kinds.get("complex"), _net("gap", 4)
    x = torch.randn(3, 1, 65, 32, dtype=torch.cfloat)
    targets = torch.tensor([[0, 1], [2, 3], [2, -1]])  # IDs owning classes {0, 1}, {2, 3}, and {2}
    with torch.no_grad():
        out = kind.segment_outputs(model, x, targets, cfg)
        p = model(x).total.float().softmax(1)
    want = -torch.log(torch.stack([p[0, 0] + p[0, 1], p[1, 2] + p[1, 3], p[2, 2]]))
    torch.testing.assert_close(out.native, want, rtol=1e-5, atol=1e-6)
    # the arcface group loss: -log of the summed per-class ArcFace probabilities (CE_c for a set of one)
    s, cos = 30.0, torch.rand(2, 4) * 2 - 1
    member = torch.tensor([[True, True, False, False], [False, False, True, False]])
    one = [kinds.arcface_loss(s * cos, torch.full((2,), c), s, 0.2, "none") for c in range(4)]
    grouped = kinds.arcface_loss(s * cos, member, s, 0.2, "none")
    torch.testing.assert_close(grouped, torch.stack([-torch.log(torch.exp(-one[0][0]) + torch.exp(-one[1][0])),
                                                     one[2][1]]))


# ----------------------------------------------------------------------------------- errors
def test_attributes_need_a_classifier(tmp_path):
    cfg = merge(small_config(tmp_path, tmp_path / "cache"), {"train": {"attributes": True}})
    for name in ("ae", "stats-knn"):
        with pytest.raises(TrainError, match=f"^train.attributes needs a classifier; the {name} model has no classes$"):
            fit(merge(cfg, {"model": {"name": name}}), tmp_path / name)
    with pytest.raises(SystemExit, match="error: train.attributes needs a classifier"):
        main(["--data-root", str(tmp_path), "--machine-type", "valve", "--model", "ae", "--attributes",
              "--out", str(tmp_path / "cli"), "--no-eval"])


# ----------------------------------------------------------------------------------- train -> save -> load -> score
@pytest.fixture(scope="module")
def sections_2023(tmp_path_factory):
    return _generate(tmp_path_factory.mktemp("sections-2023"), ("00", "01"), n_train=4, seconds=2.0)


@pytest.mark.integration
def test_train_save_load_score_round_trip(sections_2023, tmp_path):
    from mimimi.scoring.clips import score_frame

    cfg = merge(small_config(sections_2023, tmp_path / "cache", epochs=1),
                {"train": {"attributes": True, "classes": "all", "sampler": "balanced"},
                 "validation": {"other_types": 1, "max_clips_per_id": 1}})
    result = fit(cfg, tmp_path / "run")
    loaded = load_checkpoint(result.best_checkpoint)
    names = [f"{t}/{s}/{a}" for t in ("fan", "valve") for s in ("00", "01") for a in ATTRS]
    assert loaded.meta["classes"] == names and loaded.meta["id_classes"] == {"00": [4, 5], "01": [6, 7]}
    assert loaded.ids == {"00": 4, "01": 6} and loaded.ids.classes == {"00": (4, 5), "01": (6, 7)}
    assert loaded.cfg.model.net.n_ids == 8
    assert loaded.model(torch.zeros(2, 1, 129, 32, dtype=torch.cfloat)).total.shape == (2, 8)
    assert {"val_loss", "val_acc", "val_proxy_auc"} <= set(result.best)

    test = select(index_dataset(sections_2023).clips, machine_type="valve", split="test").reset_index(drop=True)
    cache = FeatureCache(cfg.data.cache_dir, loaded.cfg.features)
    scored = score_clips(loaded.model, loaded.cfg, test, loaded.ids, cache, fitted=loaded.scoring, all_scorers=True)
    assert set(scored.pred_id) <= {"00", "01"} and scored.score_ce.notna().all()
    # ce by hand for one clip: the mean over its segments of -log(p(c1) + p(c2)), the classes of its section
    x = kinds.get("complex").clip_dataset(loaded.cfg, test.iloc[:1], cache, dict(loaded.ids))[0].x
    with torch.no_grad():
        p = loaded.model(x).total.float().softmax(1)
    own = list(loaded.ids.classes[test.machine_id[0]])
    assert math.isclose(scored.score_ce[0], float(-torch.log(p[:, own].sum(1)).mean()), rel_tol=1e-5)

    # save -> load: identical outputs; mimimi.score (the served path) gets the ID's classes through loaded.ids
    save_checkpoint(tmp_path / "copy.pt", loaded.model, loaded.cfg, loaded.ids, scoring=loaded.scoring,
                    **{k: v for k, v in loaded.meta.items() if k != "versions"})
    again = load_checkpoint(tmp_path / "copy.pt")
    assert again.ids.classes == loaded.ids.classes and again.meta["id_classes"] == loaded.meta["id_classes"]
    rescored = score_clips(again.model, again.cfg, test, again.ids, cache, fitted=again.scoring, all_scorers=True)
    pd.testing.assert_frame_equal(scored, rescored)
    served = score_frame(again, pd.DataFrame({"path": test.path}), scorer="ce")
    np.testing.assert_allclose(served.score.to_numpy(), scored.score_ce.to_numpy(), rtol=1e-6)


@pytest.mark.integration
def test_a_checkpoint_without_id_classes_scores_as_before(sections_2023, tmp_path):
    """Checkpoints written before train.attributes hold no id_classes: one class per ID, the same scores."""
    cfg = merge(small_config(sections_2023, tmp_path / "cache", epochs=1), {"validation": {"other_types": 0}})
    loaded = load_checkpoint(fit(cfg, tmp_path / "run").best_checkpoint)
    assert loaded.meta["id_classes"] == {"00": [0], "01": [1]}
    blob = torch.load(tmp_path / "run" / "best.pt", weights_only=True)
    del blob["meta"]["id_classes"]
    torch.save(blob, tmp_path / "old.pt")
    old = load_checkpoint(tmp_path / "old.pt")
    assert "id_classes" not in old.meta and old.ids.classes == {"00": (0,), "01": (1,)}
    test = select(index_dataset(sections_2023).clips, machine_type="valve", split="test")
    cache = FeatureCache(cfg.data.cache_dir, loaded.cfg.features)
    a = score_clips(loaded.model, loaded.cfg, test, loaded.ids, cache, fitted=loaded.scoring, all_scorers=True)
    b = score_clips(old.model, old.cfg, test, dict(old.ids), cache, fitted=old.scoring, all_scorers=True)
    pd.testing.assert_frame_equal(a, b)
