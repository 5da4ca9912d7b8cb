"""The leak-free validation objective ``val_proxy_auc``: held-out normal training clips against proxy
outliers (deterministic corruptions of those normals, and normal clips of other machine types), scored as
the model will be. No test clip is read.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.special

from mimimi import metrics as M
from mimimi.config import Config
from mimimi.data import corrupt
from mimimi.data.dataset import id_classes
from mimimi.features import FeatureCache, compute, decode
from mimimi.kinds import ModelKind
from mimimi.scoring.backends import IDScorers
from mimimi.scoring.fitted import EMBEDDING_SCORERS, FUSED, FusedKNN, groups_of, scorer_params
from mimimi.scoring.outputs import ClipOutputs

@dataclass
class Proxies:
    """Proxy outliers for ``val_proxy_auc``: rows of ``clips`` (key ``path``, ``owner``: the ID whose
    normals a corruption came from, None for another type's normal clip; ``family``) and their features."""

    clips: pd.DataFrame
    features: dict[str, dict[str, np.ndarray]]


def make_proxies(cfg: Config, kind: ModelKind, val: pd.DataFrame, others: pd.DataFrame, cache: FeatureCache) -> Proxies:
    """Corruptions (``mimimi.data.corrupt``) of up to ``validation.max_clips_per_id`` held-out normals per
    ID, and the other machine types' clips in ``others`` (``mimimi.training.other_type_proxies`` picks up to
    ``validation.other_types`` of each). No test clip."""
    v = cfg.validation
    rows, feats = [], {}
    for mid, g in val.groupby("machine_id", sort=True):
        for j, path in enumerate(g.path.head(v.max_clips_per_id)):
            wave = decode(path, cfg.features)
            for k, kname in enumerate(v.proxy_kinds):
                key = f"<{kname} of {path}>"
                bad = corrupt.corrupt(wave, kname, seed=v.seed * 1009 + j * 31 + k, severity=v.severity,
                                      sample_rate=cfg.features.sample_rate)
                feats[key] = {k: compute(bad, cfg.features, k) for k in {kind.feature, "logmel"}}
                rows.append({"path": key, "owner": mid, "family": kname})
    for _, g in others.groupby("machine_type", sort=True):
        rows += [{"path": p, "owner": None, "family": "other_types"} for p in g.sort_values("path").path]
    return Proxies(pd.DataFrame(rows, columns=["path", "owner", "family"]), feats)


def proxy_auc(cfg: Config, kind: ModelKind, scorer: str, train: ClipOutputs, val: ClipOutputs,
              proxies: ClipOutputs, proxy_rows: pd.DataFrame, ids: Mapping[str, int]) -> dict[str, float]:
    """``val_proxy_auc``: per machine ID, the AUC of its held-out normals against its proxy outliers (its own
    corruptions and the other types' normals), under ``scorer`` fitted on the training split only; the mean
    over IDs, and ``val_proxy_auc/<family>`` the same per proxy family. NaN where no ID has both."""
    emb_scorer = fused = None
    owned = id_classes(ids)  # machine ID -> its output classes, for ce
    if scorer in EMBEDDING_SCORERS:
        groups = groups_of(train)
        emb_scorer = IDScorers(scorer, **scorer_params(cfg, scorer)).fit(
            {mid: train.embedding[r] for mid, r in groups.items()})
    elif scorer == FUSED:
        fused = FusedKNN(cfg.scoring.knn_k, cfg.train.seed).fit(groups_of(train), train.embedding, train.stats)

    def scores(outputs: ClipOutputs, mid: str, rows: np.ndarray) -> np.ndarray:
        if fused is not None:
            return fused.score(mid, outputs.embedding[rows], outputs.stats[rows])
        if emb_scorer is not None:
            return emb_scorer.score(mid, outputs.embedding[rows])
        if scorer == "ce":  # cross-entropy against ``mid`` from the mean log-probabilities (logsumexp over the
            own = list(owned[mid])  # ID's classes: exactly the native ce for one class per ID)
            return -scipy.special.logsumexp(outputs.log_probs[np.ix_(rows, own)], axis=1)
        return outputs.native[rows]

    per_family: dict[str, list[float]] = {}
    per_id = []
    val_ids = val.clips.machine_id.to_numpy()
    for mid in sorted(set(val_ids) & set(train.clips.machine_id)):
        normal = scores(val, mid, np.flatnonzero(val_ids == mid))
        mine = np.flatnonzero((proxy_rows.owner == mid).to_numpy() | proxy_rows.owner.isna().to_numpy())
        if not len(mine):
            continue
        outl = scores(proxies, mid, mine)
        fam = proxy_rows.family.to_numpy()[mine]
        y = np.r_[np.zeros(len(normal)), np.ones(len(outl))]
        per_id.append(M.auc(y, np.r_[normal, outl]))
        for f in sorted(set(fam)):
            sel = outl[fam == f]
            per_family.setdefault(f, []).append(M.auc(np.r_[np.zeros(len(normal)), np.ones(len(sel))],
                                                      np.r_[normal, sel]))
    out = {"val_proxy_auc": float(np.mean(per_id)) if per_id else math.nan}
    out.update({f"val_proxy_auc/{f}": float(np.mean(v)) for f, v in per_family.items()})
    return out


