"""The validation objective and the back-ends behind it, on made-up embeddings (no network): cross-fitting
never scores a clip against itself, any number of clips per ID works, the figures have resolution, the
choice of back-end follows the figures, and the checkpoint state records fallbacks and the choice."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from mimimi import kinds
from mimimi.config import Config, merge
from mimimi.scoring import fitted as F
from mimimi.scoring.objective import auc, figures
from mimimi.scoring.outputs import ClipOutputs


def outputs(counts: dict[str, int], dim: int = 6, seed: int = 0, shift: float = 0.0, native=None) -> ClipOutputs:
    """Made-up clip outputs: per ID a cluster of ``counts[id]`` embeddings (and statistics) around its own
    centre; ``shift`` moves every clip away from its centre (a proxy outlier)."""
    rng = np.random.default_rng(seed)
    rows, emb, stats = [], [], []
    for k, (mid, n) in enumerate(counts.items()):
        centre = np.eye(dim)[k % dim] * 3 + 1
        for i in range(n):
            rows.append({"path": f"{mid}/{seed}/{i}.wav", "machine_id": mid, "label": "normal"})
            emb.append(centre + rng.normal(0, 0.3, dim) + shift)
            stats.append(centre[::-1] + rng.normal(0, 0.3, dim) + shift)
    n = len(rows)
    nat = np.zeros(n) if native is None else native
    return ClipOutputs(pd.DataFrame(rows), nat, np.zeros(n), np.ones(n, np.int64), np.array(emb), None,
                       [r["machine_id"] for r in rows], np.array(stats))


def test_auc_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    normal, outlier = rng.integers(0, 5, 30).astype(float), rng.integers(2, 7, 20).astype(float)
    y = np.r_[np.zeros(30), np.ones(20)]
    assert auc(normal, outlier) == pytest.approx(roc_auc_score(y, np.r_[normal, outlier]))
    assert math.isnan(auc(normal, np.array([])))


def test_cross_fit_never_scores_a_clip_against_itself():
    cfg = Config()
    out = outputs({"00": 7})
    rows = F.rows_of(out)
    normal, _ = F.cross_fit(cfg, rows, ["knn"])
    assert (normal["knn"] > 1e-9).all()  # its own embedding would be at distance 0
    # a corruption of clip 3 is scored without clip 3 (its fold): an exact copy of it is then not at distance 0
    prox, src = rows.take(np.array([3, 3])), np.array([3, -1])
    _, p = F.cross_fit(cfg, rows, ["knn"], proxies=prox, source=src)
    assert p["knn"][0] > 1e-9 and p["knn"][1] < p["knn"][0]  # the foreign copy: averaged over folds, some saw it


def test_one_and_two_clip_ids_fit_fall_back_and_say_so():
    cfg = Config()
    kind = kinds.get("complex")
    out = outputs({"00": 9, "02": 2, "04": 1})
    fitted = F.fit_scoring(cfg, kind, out, np.zeros(12, bool))
    assert fitted.fallbacks["gmm"] == {"04": "knn: 1 training clip(s); gmm needs 2"}
    assert "04" in fitted.fallbacks["fusion"] and "other IDs" in fitted.fallbacks["fusion"]["04"]
    assert fitted.thresholds["knn"]["04"] is None and fitted.thresholds["knn"]["00"] is not None  # 3+ clips needed
    scores = {n: fitted.score(n, out) for n in fitted.names if n != "ce"}
    assert all(np.isfinite(v).all() for v in scores.values())  # every back-end scores every ID, the 1-clip one too
    again = F.Scoring.from_state(fitted.state())  # the state survives a checkpoint (plain values and tensors)
    assert again.fallbacks == fitted.fallbacks
    np.testing.assert_allclose(again.score("fusion", out), scores["fusion"])


def _proxies(normals: ClipOutputs, shift: float, seed: int) -> tuple[ClipOutputs, pd.DataFrame]:
    """Corruptions of every normal (moved by ``shift``) with their source paths, as make_proxies names them."""
    bad = outputs({m: int((normals.clips.machine_id == m).sum()) for m in dict.fromkeys(normals.clips.machine_id)},
                  seed=0, shift=shift)  # the same draws as `normals` (seed 0), moved
    rows = pd.DataFrame({"path": [f"<tone of {p}>" for p in normals.clips.path], "owner": normals.clips.machine_id,
                         "family": "tone", "source": normals.clips.path})
    return bad, rows


def test_figures_have_resolution_choose_the_best_back_end_and_skip_one_clip_ids():
    cfg = merge(Config(), {"scoring": {"candidates": ["knn", "stats-knn", "knn-stats", "fusion"]}})
    kind = kinds.get("complex")
    normals = outputs({"00": 15, "02": 15, "04": 1})
    bad, rows = _proxies(normals, 0.5, 1)
    held = np.zeros(len(normals.clips), bool)
    held[[0, 1, 15, 16]] = True  # two held-out clips of each big ID
    found = figures(cfg, kind, normals, held, bad, rows, "cv_proxy_auc")
    assert found.normals_per_id == {"00": 15, "02": 15, "04": 0}  # the one-clip ID has nothing cross-fitted
    values = found.by_backend["cv_proxy_auc"]
    assert set(values) == {"knn", "stats-knn", "knn-stats", "fusion"}
    assert found.chosen == max(values, key=values.get) and found.values["cv_proxy_auc"] == values[found.chosen]
    assert 0 < found.values["cv_proxy_auc_se"] < 0.2  # the noise of the figure, from resampling
    assert found.values["cv_proxy_auc_network"] == values["knn"] and 0 < found.values["cv_proxy_auc_network_se"] < 0.2
    assert "cv_proxy_auc/tone" in found.values and "val_proxy_auc" in found.values  # both families
    # 15 normals and 15 proxies per ID give figures in steps of 1/225, not 1/2
    grid = {round(v * 450) for v in values.values()}
    assert len(grid) >= 2


def test_native_scores_are_candidates_only_on_held_out_clips():
    cfg = Config()
    kind = kinds.get("complex")
    native = np.r_[np.zeros(10), np.zeros(10)]
    normals = outputs({"00": 10, "02": 10}, native=native)
    bad, rows = _proxies(normals, 0.0, 1)
    bad.native[:] = 5.0  # ce would call every proxy anomalous
    held = np.zeros(20, bool)
    held[[0, 1, 2, 10, 11, 12]] = True
    found = figures(cfg, kind, normals, held, bad, rows, "val_proxy_auc")
    assert "ce" not in found.by_backend["cv_proxy_auc"]  # biased low on clips the network trained on
    assert found.by_backend["val_proxy_auc"]["ce"] == 1.0 and found.chosen == "ce"


# ------------------------------------------------------------------------------ two domains (DCASE 2021+)
def domain_outputs(n_source: int, n_target: int, seed: int = 0, dim: int = 8) -> ClipOutputs:
    """One section: many tightly packed source clips and a few target clips elsewhere, spread wider."""
    rng = np.random.default_rng(seed)
    src = np.eye(dim)[0] * 3 + rng.normal(0, 0.05, (n_source, dim))
    tgt = np.eye(dim)[1] * 3 + rng.normal(0, 0.4, (n_target, dim))
    emb = np.r_[src, tgt]
    clips = pd.DataFrame({"path": [f"s{i}" for i in range(len(emb))], "machine_id": "00", "label": "normal",
                          "domain": ["source"] * n_source + ["target"] * n_target})
    n = len(emb)
    return ClipOutputs(clips, np.zeros(n), np.zeros(n), np.ones(n, np.int64), emb, None, ["00"] * n, emb[:, ::-1])


@pytest.mark.parametrize("n_target", [1, 10])
def test_domain_aware_back_ends_keep_the_few_target_clips_apart(n_target):
    cfg = Config()
    kind = kinds.get("complex")
    train = domain_outputs(40, n_target)
    fitted = F.fit_scoring(cfg, kind, train, np.zeros(len(train.clips), bool))
    assert {"knn-domain", "mahalanobis-domain"} <= set(fitted.names)  # two domains: they exist
    assert F.Scoring.from_state(fitted.state()).names == fitted.names
    # new normal clips of each domain, and anomalies away from both
    test = domain_outputs(20, 20, seed=1)
    far = outputs({"00": 20}, dim=8, seed=2, shift=1.5)
    both = ClipOutputs(pd.concat([test.clips, far.clips.assign(domain="target")], ignore_index=True), None,
                       np.zeros(60), np.ones(60, np.int64), np.r_[test.embedding, far.embedding], None, ["00"] * 60,
                       np.r_[test.stats, far.stats])
    y = np.r_[np.zeros(40), np.ones(20)]
    knn_domain = fitted.score("knn-domain", both)
    if n_target >= 2:  # standardised per domain: a new normal target clip is a few standard deviations out at most
        assert np.median(knn_domain[20:40]) < 3
    assert roc_auc_score(y, knn_domain) >= roc_auc_score(y, fitted.score("knn", both)) - 0.05
    assert np.isfinite(fitted.score("mahalanobis-domain", both)).all()


def test_one_domain_means_the_plain_back_ends():
    cfg = Config()
    out = domain_outputs(20, 0)
    assert not F.two_domains(out)
    fitted = F.fit_scoring(cfg, kinds.get("complex"), out, np.zeros(20, bool))
    assert "knn-domain" not in fitted.names  # DCASE 2020 and MIMII: nothing domain-aware to offer
    bank = F.Bank.fit(cfg, F.rows_of(out), ["knn", "knn-domain"])
    np.testing.assert_allclose(bank.scores(F.rows_of(out))["knn-domain"], bank.scores(F.rows_of(out))["knn"])


def test_with_two_domains_the_objective_is_the_official_harmonic_mean():
    cfg = Config()
    normals = domain_outputs(20, 6)
    rows = pd.DataFrame({"path": [f"<tone of {p}>" for p in normals.clips.path], "owner": "00", "family": "tone",
                         "source": normals.clips.path})
    bad = domain_outputs(20, 6)
    bad.embedding[:] += 0.6
    found = figures(cfg, kinds.get("complex"), normals, np.zeros(26, bool), bad, rows, "cv_proxy_auc")
    v = found.values
    assert {"cv_proxy_auc/source", "cv_proxy_auc/target"} <= set(v)
    assert v["cv_proxy_auc"] <= max(v["cv_proxy_auc/source"], v["cv_proxy_auc/target"]) + 1e-9  # a harmonic mean
    assert "knn-domain" in found.by_backend["cv_proxy_auc"]
