"""Model kinds, the training recipe (every segment, balanced sampler, ArcFace), the scorers fitted after
training, normal-only thresholds, the leak-free val_proxy_auc and the scorers side by side in evaluate."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from helpers import small_config
from mimimi import kinds
from mimimi.scoring import fitted as scoring
from mimimi.scoring.outputs import ClipOutputs
from mimimi.checkpoint import load_checkpoint
from mimimi.config import merge
from mimimi.data.dataset import TrainSegments, id_map
from mimimi.data.index import index_dataset, select
from mimimi.evaluation import evaluate
from mimimi.features import FeatureCache
from mimimi.training import fit, make_sampler


# ----------------------------------------------------------------------------------- losses, kinds
def test_arcface_without_margin_is_cross_entropy_and_soft_targets_mix_linearly():
    g = torch.Generator().manual_seed(0)
    cos = torch.rand(6, 4, generator=g) * 2 - 1
    y = torch.tensor([0, 1, 2, 3, 1, 0])
    s = 30.0
    assert torch.allclose(kinds.arcface_loss(s * cos, y, s, 0.0), F.cross_entropy(s * cos, y), atol=1e-4)
    # a margin makes the target class harder: the loss grows
    assert kinds.arcface_loss(s * cos, y, s, 0.5) > kinds.arcface_loss(s * cos, y, s, 0.0)
    # soft targets: the weighted sum of the one-hot losses
    soft = torch.full((6, 4), 0.0)
    soft[:, 0], soft[:, 2] = 0.3, 0.7
    mixed = kinds.arcface_loss(s * cos, soft, s, 0.4, "none")
    parts = 0.3 * kinds.arcface_loss(s * cos, torch.zeros(6, dtype=torch.long), s, 0.4, "none") + \
        0.7 * kinds.arcface_loss(s * cos, torch.full((6,), 2), s, 0.4, "none")
    assert torch.allclose(mixed, parts, atol=1e-5)


def test_every_kind_is_registered_with_its_features_and_native_score():
    assert set(kinds.KINDS) == {"complex", "magnitude", "ae", "stats-knn"}
    assert [kinds.get(k).native for k in ("complex", "magnitude", "ae", "stats-knn")] == ["ce", "ce", "recon", None]
    assert scoring.scorer_names(kinds.get("stats-knn")) == ("knn", "mahalanobis", "gmm", "fusion")
    assert scoring.scorer_names(kinds.get("ae")) == ("recon", "knn", "mahalanobis", "gmm", "knn-density", "stats-knn",
                                                     "knn-stats", "fusion")
    assert "knn-domain" in scoring.scorer_names(kinds.get("complex"), domains=True)  # two domains (DCASE 2021+) only
    assert scoring.resolve_scorer(kinds.get("complex"), None) == "knn-stats"
    assert scoring.resolve_scorer(kinds.get("stats-knn"), "default") == "knn"
    with pytest.raises(scoring.ScoringError, match="'ce' is not one of the stats-knn"):
        scoring.resolve_scorer(kinds.get("stats-knn"), "ce")
    with pytest.raises(ValueError, match="unknown model 'cnn'"):
        kinds.get("cnn")


def test_log_mel_stats_are_mean_and_std_over_time():
    x = torch.arange(24.0).reshape(1, 3, 8)
    out = kinds.LogMelStats()(x)
    assert out.shape == (1, 6)
    assert torch.allclose(out[0, :3], x[0].mean(1)) and torch.allclose(out[0, 3:], x[0].std(1, unbiased=False))


# ----------------------------------------------------------------------------------- the recipe
def test_an_epoch_sees_every_segment_of_every_clip_at_a_random_offset(synth_root, tmp_path):
    cfg = small_config(synth_root, tmp_path / "cache")
    train = select(index_dataset(synth_root).clips, split="train").head(6)
    cache = FeatureCache(tmp_path / "cache", cfg.features)
    ids = id_map(train)
    ds = TrainSegments(train, cache, ids, segments_per_clip=0, seed=0)
    frames = cache.get(train.path.iloc[0], "stft").shape[1]
    per_clip = frames // cfg.features.segment_frames
    assert len(ds) == len(train) * per_clip and per_clip >= 2
    spec = np.asarray(cache.get(train.path.iloc[0], "stft"))

    def starts(epoch):
        ds.set_epoch(epoch)
        out = []
        for j in range(per_clip):
            seg = ds[j][0].numpy()[0]
            hit = [s for s in range(frames - seg.shape[1] + 1) if np.array_equal(spec[:, s:s + seg.shape[1]], seg)]
            out.append(hit[0])
        return out

    a = starts(0)
    seg = cfg.features.segment_frames
    assert np.diff(a).tolist() == [seg] * (per_clip - 1)  # adjacent, non-overlapping
    assert starts(0) == a  # reproducible
    assert any(starts(e)[0] != a[0] for e in range(1, 6))  # the offset moves between epochs
    assert ds.item_classes().tolist() == np.repeat(ds.classes, per_clip).tolist()


def test_the_balanced_sampler_draws_each_id_equally_often(synth_root, tmp_path):
    cfg = merge(small_config(synth_root, tmp_path / "cache"), {"train": {"sampler": "balanced"}})
    train = select(index_dataset(synth_root).clips, split="train")
    keep = pd.concat([g.head(n) for (_, g), n in zip(train.groupby("machine_id"), (12, 6, 2, 2))])
    ids = id_map(keep)
    ds = TrainSegments(keep, FeatureCache(tmp_path / "cache", cfg.features), ids)
    sampler = make_sampler(cfg, kinds.get("complex"), ds, len(ids))
    drawn = np.bincount(ds.item_classes()[list(sampler)], minlength=4)
    for _ in range(19):
        drawn += np.bincount(ds.item_classes()[list(sampler)], minlength=4)
    share = drawn / drawn.sum()
    assert np.abs(share - 0.25).max() < 0.05, share  # uniform shuffling would give 0.55 / 0.27 / 0.09 / 0.09
    assert make_sampler(merge(cfg, {"train": {"sampler": "uniform"}}), kinds.get("complex"), ds, 4) is None


# ----------------------------------------------------------------------------------- fitted scorers
@pytest.fixture(scope="module")
def trained(synth_root, tmp_path_factory):
    d = tmp_path_factory.mktemp("scoring")
    return fit(small_config(synth_root, d / "cache", epochs=2), d / "run"), d


def test_the_best_checkpoint_carries_scorers_and_normal_only_thresholds(trained):
    result, _ = trained
    loaded = load_checkpoint(result.best_checkpoint)
    sc = loaded.scoring
    assert sc is not None and sc.names == ["ce", "knn", "mahalanobis", "gmm", "knn-density", "stats-knn", "knn-stats",
                                           "fusion"]
    # validation chose the default among the back-ends (cross-fitted, no ce), and the checkpoint says how
    assert sc.default == sc.choice["chosen"] and sc.choice["metric"] == "cv_proxy_auc"
    assert set(sc.choice["values"]) == set(sc.names) - {"ce"} and sc.choice["normals_per_id"]["00"] == 12
    assert set(sc.thresholds["knn-stats"]) == {"00", "02", "04", "06"}
    assert all(t is not None and math.isfinite(t) for n in sc.names for t in sc.thresholds[n].values())
    assert all("held-out validation normals" in c for c in sc.calibration.values())  # 3 per ID with 12 clips
    blob = torch.load(result.best_checkpoint, weights_only=True)  # tensors and plain values only
    assert scoring.Scoring.from_state(blob["scoring"]).thresholds == sc.thresholds
    # the proxy objective was measured every epoch, per family too, and picked the best epoch
    hist = result.history
    assert all(0.0 <= h["cv_proxy_auc"] <= 1.0 and 0.0 <= h["val_proxy_auc"] <= 1.0 for h in hist)
    assert {"cv_proxy_auc/tone", "cv_proxy_auc/impulses", "cv_proxy_auc/tilt", "cv_proxy_auc/stretch"} <= set(hist[0])
    assert result.best_epoch == int(np.argmax([h["cv_proxy_auc_network"] for h in hist]))  # train.monitor
    assert result.best["backend"] == sc.default


def test_evaluate_reports_every_scorer_beside_the_stats_knn_baseline(trained, synth_root):
    result, d = trained
    rep = evaluate(result.best_checkpoint, synth_root, d / "eval", progress=False)
    table = rep.comparison
    default = load_checkpoint(result.best_checkpoint).scoring.default
    keys = list(dict.fromkeys(table.key))  # the default first, every back-end, the baseline (the model's stats-knn)
    assert keys[0] == default and set(keys) == {"ce", "knn", "mahalanobis", "gmm", "knn-density", "stats-knn",
                                                "knn-stats", "fusion"}
    knn = table[(table.key == default) & (table.machine_id != "mean")].set_index("machine_id").auc
    assert np.allclose(knn.to_numpy(), rep.per_id.set_index("machine_id").auc.to_numpy())  # the main table is the default
    text = (d / "eval" / "scorers.md").read_text()
    label = ("stats-knn (no network: the training-free baseline)" if default == "stats-knn" else f"complex / {default}")
    assert f"| {label} (default) |" in text and "stats-knn (no network: the training-free baseline)" in text
    assert "## How the default was chosen" in text
    assert "fitted to normal training clips only" in (d / "eval" / "results.md").read_text()
    gmm = evaluate(result.best_checkpoint, synth_root, d / "eval-gmm", progress=False, scorer="gmm", baseline=False)
    assert np.allclose(gmm.per_id.auc.to_numpy(),
                       table[(table.key == "gmm") & (table.machine_id != "mean")].auc.to_numpy())
    with pytest.raises(scoring.ScoringError, match="'recon' is not one this model has"):
        evaluate(result.best_checkpoint, synth_root, d / "eval-bad", progress=False, scorer="recon")


def test_stats_knn_needs_no_training_and_finds_the_anomalies(synth_root, tmp_path):
    cfg = merge(small_config(synth_root, tmp_path / "cache"), {"model": {"name": "stats-knn"}})
    result = fit(cfg, tmp_path / "run")
    assert len(result.history) == 1 and result.best["cv_proxy_auc"] > 0.6
    loaded = load_checkpoint(result.best_checkpoint)
    assert sum(p.numel() for p in loaded.model.parameters()) == 0
    assert loaded.scoring.names == ["knn", "mahalanobis", "gmm", "fusion"]
    assert all("cross-fitted" in c for c in loaded.scoring.calibration.values())
    rep = evaluate(result.best_checkpoint, synth_root, tmp_path / "eval", progress=False)
    assert "stats-knn" not in set(rep.comparison.key)  # it is the model: no second baseline row
    assert rep.per_type.mean_auc.iloc[0] > 0.7


def test_thresholds_need_three_normal_scores_per_id():
    cfg = small_config(".", ".")
    kind = kinds.get("stats-knn")
    rng = np.random.default_rng(0)
    clips = pd.DataFrame({"path": [f"c{i}" for i in range(7)], "machine_id": ["00"] * 5 + ["02"] * 2})
    out = ClipOutputs(clips, None, np.zeros(7), np.ones(7, np.int64), rng.normal(size=(7, 4)), None, [None] * 7)
    fitted = scoring.fit_scoring(cfg, kind, out, np.ones(7, bool))
    assert fitted.thresholds["knn"]["02"] is None and fitted.thresholds["knn"]["00"] is not None
    # the threshold of the empirical method is the quantile of the cross-fitted normal scores
    cfg_e = merge(cfg, {"scoring": {"threshold_method": "empirical", "threshold_quantile": 0.5}})
    fe = scoring.fit_scoring(cfg_e, kind, out, np.ones(7, bool))
    from mimimi.scoring.backends import cross_fitted_scores
    cal = cross_fitted_scores("knn", out.embedding[:5], np.arange(5), seed=cfg.train.seed, k=1)
    assert fe.thresholds["knn"]["00"] == pytest.approx(float(np.quantile(cal, 0.5)))
