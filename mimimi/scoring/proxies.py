"""Proxy outliers for the validation objective (``mimimi.scoring.objective``): deterministic corruptions of
some of an ID's validation clips (``mimimi.data.corrupt``: an added tone, impulses, a spectral tilt, a
time-stretch) and normal clips of the other machine types. No test clip.

Cost: ``validation.max_clips_per_id`` clips per ID are decoded and corrupted once per run, one feature
array per (clip, corruption) held in memory (1.3 MB per 10 s STFT); independent of the type's clip count.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mimimi.config import Config
from mimimi.data import corrupt
from mimimi.features import compute, decode
from mimimi.kinds import ModelKind

COLUMNS = ["path", "owner", "family", "source"]


@dataclass
class Proxies:
    """Proxy outliers: rows of ``clips`` (``path``: a key, ``owner``: the ID whose clip a corruption was made
    from, None for another type's normal clip; ``family``; ``source``: the corrupted clip's path, None for
    another type's clip) and the corruptions' features (key -> kind -> array)."""

    clips: pd.DataFrame
    features: dict[str, dict[str, np.ndarray]]


def corrupted_clips(clips: pd.DataFrame, held: np.ndarray, per_id: int, seed: int) -> pd.DataFrame:
    """The clips of each ID that get corrupted: up to ``per_id``, shared evenly among its domains (so the few
    target-domain clips of a DCASE 2022+ section get corruptions too), in each domain the held-out ones first
    (they serve the held-out figure too), then others in a seeded order."""
    held = np.asarray(held, dtype=bool)
    tagged = clips.assign(_held=held, _domain=clips["domain"] if "domain" in clips else "source")
    picked = []
    for _, g in tagged.groupby("machine_id", sort=True):
        quota = math.ceil(per_id / g._domain.nunique())
        for _, d in g.groupby("_domain", sort=True):
            others = d[~d._held].sample(frac=1.0, random_state=seed)
            picked.append(pd.concat([d[d._held].sort_values("path"), others]).head(quota))
    return pd.concat(picked).drop(columns=["_held", "_domain"]) if picked else clips.iloc[:0]


def make_proxies(cfg: Config, kind: ModelKind, clips: pd.DataFrame, held: np.ndarray, others: pd.DataFrame) -> Proxies:
    """Corruptions of ``corrupted_clips`` of the validation ``clips`` (``held``: those held out of training),
    each in every ``validation.proxy_kinds``, and the other machine types' clips in ``others``
    (``mimimi.training.other_type_proxies`` picks up to ``validation.other_types`` of each)."""
    v = cfg.validation
    rows, feats = [], {}
    for mid, g in corrupted_clips(clips, held, v.max_clips_per_id, v.seed).groupby("machine_id", sort=True):
        for j, path in enumerate(g.path):
            wave = decode(path, cfg.features)
            for k, kname in enumerate(v.proxy_kinds):
                key = f"<{kname} of {path}>"
                bad = corrupt.corrupt(wave, kname, seed=v.seed * 1009 + j * 31 + k, severity=v.severity,
                                      sample_rate=cfg.features.sample_rate)
                feats[key] = {f: compute(bad, cfg.features, f) for f in kind.features}
                rows.append({"path": key, "owner": mid, "family": kname, "source": path})
    for _, g in others.groupby("machine_type", sort=True):
        rows += [{"path": p, "owner": None, "family": "other_types", "source": None} for p in g.sort_values("path").path]
    return Proxies(pd.DataFrame(rows, columns=COLUMNS), feats)
