"""Anomaly scoring, shared by training (validation), ``mimimi.evaluate``, ``mimimi.score`` and the MLflow
model; it imports no MLflow.

A model kind (``mimimi.kinds``) gives per segment an embedding, and for trained kinds its native score
(``ce``: cross-entropy against the clip's own ID, −log Σ p(c) over the ID's classes c when it owns several,
``train.attributes``; ``recon``: reconstruction error). ``clip_outputs`` turns them into one row per clip:
the native score aggregated over segments, the clip embedding (the mean of its segment embeddings) and the
predicted ID (the owner of the likeliest of the type's classes). The scorers:

* ``ce`` / ``recon``: the native score itself (the paper's score for the network);
* ``knn`` (cosine, ``scoring.knn_k``), ``mahalanobis`` (shrinkage covariance), ``gmm`` (diagonal mixture):
  fitted per machine ID on the clip embeddings of ALL that ID's normal training clips (``mimimi.scorers``);
* ``knn-stats`` (trained kinds): ``knn`` on the embedding plus ``knn`` on the clip's log-mel mean and std,
  each divided by its typical distance among the ID's training clips (``FusedKNN``).

The default is ``knn-stats`` (``knn`` for ``stats-knn``). Evidence: on real MIMII fan recordings (issue
11's measurement, 0 dB, 10/5/1/1 training clips per ID) kNN on the network's embeddings gave mean per-ID
AUC 0.81 where cross-entropy gave 0.44 (0.00 for the ID with the most clips: its anomalies were
classified as that ID even more confidently than its normals), and kNN on log-mel statistics alone
0.895; each view missed anomalies the other found. On the synthetic set that fails the same way
(``--preset fails-like-real``) the fused score is at least as good as either (``ACCURACY.md``). It has not
been measured on real recordings.

``Scoring`` is the fitted state stored in a checkpoint (``"scoring"``): the per-ID scorers and, per scorer
and ID, a decision threshold fitted to NORMAL scores that no scorer saw (cross-fitted scores of the held-out
validation clips; ``calibration`` says which clips where an ID had too few). The test split never sets it.
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import scipy.special
import torch
from torch import nn
from tqdm import tqdm

from mimimi import metrics as M
from mimimi import precision
from mimimi.config import Config
from mimimi.data import corrupt
from mimimi.data.dataset import id_classes
from mimimi.features import FeatureCache, compute, decode
from mimimi.kinds import LogMelStats, ModelKind
from mimimi.scorers import IDScorers, ScorerError, cross_fitted_scores, fit_threshold

EMBEDDING_SCORERS = ("knn", "mahalanobis", "gmm")
FUSED = "knn-stats"  # kNN on the network's embedding + kNN on the clip's log-mel statistics, each normalised
MIN_CALIBRATION = 3  # normal scores an ID needs for a threshold


class ScoringError(ValueError):
    """A scorer that the model does not have, or scoring state that cannot be used."""


def scorer_names(kind: ModelKind) -> tuple[str, ...]:
    """The scorers a kind offers: its native score first, then the embedding scorers, then (trained kinds)
    the fused one."""
    return ((kind.native,) if kind.native else ()) + EMBEDDING_SCORERS + ((FUSED,) if kind.trainable else ())


def default_scorer(kind: ModelKind) -> str:
    """``knn-stats`` for a trained kind, ``knn`` for ``stats-knn`` (module docstring: why)."""
    return FUSED if FUSED in scorer_names(kind) else "knn"


def resolve_scorer(kind: ModelKind, name: str | None) -> str:
    """``None`` / ``"default"`` -> ``default_scorer(kind)``; a name the kind does not offer raises ScoringError."""
    name = default_scorer(kind) if name in (None, "", "default") else name
    if name not in scorer_names(kind):
        raise ScoringError(f"scorer {name!r} is not one of the {kind.name} model's: {', '.join(scorer_names(kind))}")
    return name


def scorer_params(cfg: Config, name: str) -> dict[str, Any]:
    s = cfg.scoring
    return {"knn": {"k": s.knn_k}, "mahalanobis": {"shrinkage": s.mahalanobis_shrinkage},
            "gmm": {"n_components": s.gmm_components}}[name]


# --------------------------------------------------------------------------------------------- features
class Features:
    """What clip datasets read (``cfg``, ``get``): arrays held in memory under their keys (waveforms sent to
    the served model, corrupted validation clips), everything else through the feature cache."""

    def __init__(self, cache: FeatureCache, arrays: Mapping[str, np.ndarray] | None = None,
                 waves: Mapping[str, np.ndarray] | None = None):
        self.cache, self.cfg = cache, cache.cfg
        self.arrays = dict(arrays or {})  # key -> {kind: features}
        self.waves = dict(waves or {})  # key -> mono waveform, transformed on use

    def get(self, key: str, kind: str = "stft", mmap: bool = True) -> np.ndarray:
        if key in self.arrays:
            return self.arrays[key][kind]
        if key in self.waves:
            return compute(self.waves[key], self.cfg, kind)
        return self.cache.get(key, kind, mmap)


# --------------------------------------------------------------------------------------------- clip outputs
@dataclass
class ClipOutputs:
    """One row per clip of ``clips`` (same order)."""

    clips: pd.DataFrame
    native: np.ndarray | None  # (n,) native score aggregated over segments; None for stats-knn
    loss: np.ndarray  # (n,) training loss, mean over segments
    n_segments: np.ndarray  # (n,)
    embedding: np.ndarray  # (n, D) float64: mean of the segment embeddings
    log_probs: np.ndarray | None  # (n, n_classes) mean segment class log-probabilities (classifiers)
    pred_id: list  # predicted machine ID per clip (None without a classifier)
    stats: np.ndarray | None = None  # (n, 2 n_mels) log-mel mean + std of the clip (trained kinds: knn-stats)

    def select(self, mask: np.ndarray) -> ClipOutputs:
        m = np.asarray(mask, dtype=bool)
        return ClipOutputs(self.clips[m].reset_index(drop=True), None if self.native is None else self.native[m],
                           self.loss[m], self.n_segments[m], self.embedding[m],
                           None if self.log_probs is None else self.log_probs[m],
                           [p for p, k in zip(self.pred_id, m) if k], None if self.stats is None else self.stats[m])


def _batches(ds, batch_segments: int) -> Iterator[list]:
    """Consecutive clip items whose segments have one shape, up to ``batch_segments`` segments a batch
    (a clip with more goes alone); 1 gives one clip per batch."""
    batch, size = [], 0
    for item in ds:
        if batch and (size + len(item.x) > batch_segments or item.x.shape[1:] != batch[0].x.shape[1:]):
            yield batch
            batch, size = [], 0
        batch.append(item)
        size += len(item.x)
    if batch:
        yield batch


@torch.no_grad()
def clip_outputs(model: nn.Module, kind: ModelKind, cfg: Config, clips: pd.DataFrame, ids: Mapping[str, int],
                 features, aggregate: str = "mean", device: str | torch.device = "cpu",
                 progress: bool = False, batch_segments: int = 1, stats: np.ndarray | None = None) -> ClipOutputs:
    """Run ``model`` over every segment of every clip; ``features`` is a FeatureCache or ``Features``.

    ``stats``: the clips' ``log_mel_stats`` when the caller has them (they do not depend on the model);
    otherwise a trained kind's are read from the log-mel features.

    ``batch_segments`` > 1 runs the segments of several clips in one forward pass (validation during
    training does); 1, the default, runs each clip alone, so that a clip's outputs never depend on which
    other clips were scored with it (a batched convolution may round differently)."""
    was_training = model.training
    model.eval().to(device)
    groups = id_classes(ids)  # machine ID -> its output classes (several with train.attributes)
    own = sorted((c, m) for m, cs in groups.items() for c in cs)  # pred_id: the ID of the likeliest own class
    own_classes, own_names = [c for c, _ in own], [m for _, m in own]
    width = max(len(cs) for cs in groups.values())
    padded = {m: torch.tensor(list(cs) + [-1] * (width - len(cs))) for m, cs in groups.items()}  # (G,) each
    row_ids = clips.machine_id.tolist()
    ds = kind.clip_dataset(cfg, clips, features, dict(ids))
    n = len(ds)
    native = np.empty(n) if kind.native else None
    loss, n_seg, embs, logp, preds = np.empty(n), np.empty(n, np.int64), [None] * n, [None] * n, [None] * n
    bar = tqdm(total=n, desc="scoring", unit="clip", leave=False, disable=not progress)
    for batch in _batches(ds, batch_segments):
        x = torch.cat([item.x for item in batch]).to(device)
        targets = torch.cat([padded[row_ids[item.index]].expand(len(item.x), width)  # (S, G): the ID's classes
                             for item in batch]).to(device)
        with precision.autocast(cfg.scoring.precision, device):
            out = kind.segment_outputs(model, x, targets, cfg)  # its outputs in fp32 (kinds casts them)
        start = 0
        for item in batch:
            part = slice(start, start + len(item.x))
            start = part.stop
            i = item.index
            if native is not None:
                native[i] = M.aggregate(out.native[part].cpu().numpy(), aggregate)
            loss[i] = float(out.loss[part].mean())
            n_seg[i] = len(item.x)
            embs[i] = out.embedding[part].double().mean(0).cpu().numpy()
            if out.log_probs is not None:
                logp[i] = out.log_probs[part].double().mean(0).cpu().numpy()
                preds[i] = own_names[int(np.argmax(logp[i][own_classes]))]
        bar.update(len(batch))
    bar.close()
    model.train(was_training)
    dim = embs[0].shape[0] if n else 0
    if stats is None and kind.trainable:  # the clip's log-mel statistics, for knn-stats
        stats = log_mel_stats(features, ds.paths)
    return ClipOutputs(clips.reset_index(drop=True), native, loss, n_seg,
                       np.stack(embs) if n else np.empty((0, dim)),
                       np.stack(logp) if n and logp[0] is not None else None, preds, stats)


def log_mel_stats(features, paths: Sequence[str]) -> np.ndarray:
    """(n, 2 n_mels) float64: each clip's log-mel mean and standard deviation over time, as ``stats-knn``
    computes them (``kinds.LogMelStats``)."""
    stats = LogMelStats()
    rows = [stats(torch.from_numpy(np.asarray(features.get(p, "logmel"), dtype=np.float64))[None])[0].numpy()
            for p in paths]
    return np.stack(rows) if rows else np.empty((0, 0))


class FusedKNN:
    """``knn-stats``: per machine ID, ``d_emb / s_emb + d_stats / s_stats``, the cosine kNN distances of a clip's
    network embedding and of its log-mel statistics to the ID's training clips, each divided by the median
    of that distance over the ID's training clips (cross-fitted, so each is scored without itself) so that
    neither dominates by its scale. The network's view and the training-free view, averaged."""

    def __init__(self, k: int = 1, seed: int = 0):
        self.k, self.seed = k, seed
        self.parts: dict[str, IDScorers] = {}
        self.scales: dict[str, dict[str, float]] = {}

    @staticmethod
    def _scale(X: np.ndarray, k: int, seed: int) -> float:
        if len(X) < 2:
            return 1.0
        d = cross_fitted_scores("knn", X, np.arange(len(X)), seed=seed, k=k)
        m = float(np.median(d))
        return m if m > 0 and math.isfinite(m) else 1.0

    def fit(self, groups: Mapping[str, np.ndarray], emb: np.ndarray, stats: np.ndarray) -> FusedKNN:
        for part, X in (("emb", emb), ("stats", stats)):
            self.parts[part] = IDScorers("knn", k=self.k).fit({m: X[r] for m, r in groups.items()})
            self.scales[part] = {m: self._scale(X[r], self.k, self.seed) for m, r in groups.items()}
        return self

    def score(self, mid: str, emb: np.ndarray, stats: np.ndarray) -> np.ndarray:
        return (self.parts["emb"].score(mid, emb) / self.scales["emb"][mid]
                + self.parts["stats"].score(mid, stats) / self.scales["stats"][mid])

    def cross_fitted(self, mid: str, emb: np.ndarray, stats: np.ndarray, held: np.ndarray) -> np.ndarray:
        """Scores of rows ``held`` of one ID's (emb, stats), each from references without its fold."""
        return (cross_fitted_scores("knn", emb, held, seed=self.seed, k=self.k) / self.scales["emb"][mid]
                + cross_fitted_scores("knn", stats, held, seed=self.seed, k=self.k) / self.scales["stats"][mid])

    def state(self) -> dict[str, Any]:
        return {"k": self.k, "seed": self.seed, "parts": {p: s.state() for p, s in self.parts.items()},
                "scales": {p: dict(v) for p, v in self.scales.items()}}

    @classmethod
    def from_state(cls, state: Mapping) -> FusedKNN:
        obj = cls(int(state["k"]), int(state["seed"]))
        obj.parts = {p: IDScorers.from_state(s) for p, s in state["parts"].items()}
        obj.scales = {p: {str(m): float(v) for m, v in d.items()} for p, d in state["scales"].items()}
        return obj


# --------------------------------------------------------------------------------------------- fitted state
def _groups(outputs: ClipOutputs) -> dict[str, np.ndarray]:
    """machine ID -> row numbers of its clips."""
    ids = outputs.clips["machine_id"].to_numpy()
    return {mid: np.flatnonzero(ids == mid) for mid in sorted(set(ids))}


def _by_row(outputs: ClipOutputs, score_one) -> np.ndarray:
    """``score_one(machine_id, row)`` for every clip, one at a time: a clip's score never depends on which
    other clips share its batch (a matrix product over several rows may round differently)."""
    out = np.empty(len(outputs.clips))
    for i, mid in enumerate(outputs.clips["machine_id"]):
        try:
            out[i] = score_one(mid, i)[0]
        except ScorerError as e:
            raise ScoringError(f"machine ID {mid}: {e}") from None
    return out


class Scoring:
    """Fitted per-ID embedding scorers, normal-only thresholds per (scorer, ID), and the default scorer."""

    def __init__(self, kind: str, default: str, scorers: dict[str, IDScorers],
                 thresholds: dict[str, dict[str, float | None]], calibration: dict[str, str], settings: dict,
                 fused: FusedKNN | None = None):
        self.kind, self.default, self.scorers, self.fused = kind, default, scorers, fused
        self.thresholds, self.calibration, self.settings = thresholds, calibration, settings

    @property
    def names(self) -> list[str]:
        return list(self.thresholds)

    def check(self, name: str | None) -> str:
        name = self.default if name in (None, "", "default") else name
        if name not in self.thresholds:
            raise ScoringError(f"scorer {name!r} is not one this model has: {', '.join(self.names)}")
        return name

    def score(self, name: str | None, outputs: ClipOutputs) -> np.ndarray:
        """(n,) scores of the clips of ``outputs`` under scorer ``name`` (None: the default)."""
        name = self.check(name)
        if name == FUSED:
            if outputs.stats is None:
                raise ScoringError(f"scorer {FUSED!r} needs the clips' log-mel statistics")
            return _by_row(outputs, lambda mid, i: self.fused.score(mid, outputs.embedding[i:i + 1],
                                                                    outputs.stats[i:i + 1]))
        if name not in EMBEDDING_SCORERS:
            if outputs.native is None:
                raise ScoringError(f"scorer {name!r} needs the model's native scores")
            return outputs.native.astype(np.float64)
        return _by_row(outputs, lambda mid, i: self.scorers[name].score(mid, outputs.embedding[i:i + 1]))

    def state(self) -> dict[str, Any]:
        return {"kind": self.kind, "default": self.default, "settings": dict(self.settings),
                "scorers": {n: s.state() for n, s in self.scorers.items()},
                "thresholds": {n: dict(t) for n, t in self.thresholds.items()}, "calibration": dict(self.calibration),
                "fused": self.fused.state() if self.fused is not None else None}

    @classmethod
    def from_state(cls, state: Mapping) -> Scoring:
        try:
            return cls(state["kind"], state["default"],
                       {n: IDScorers.from_state(s) for n, s in state["scorers"].items()},
                       {n: {str(k): (None if v is None else float(v)) for k, v in t.items()}
                        for n, t in state["thresholds"].items()}, dict(state["calibration"]), dict(state["settings"]),
                       FusedKNN.from_state(state["fused"]) if state.get("fused") is not None else None)
        except (KeyError, TypeError, AttributeError, ScorerError) as e:
            raise ScoringError(f"not a MIMIMI scoring state ({e})") from None


def fit_scoring(cfg: Config, kind: ModelKind, outputs: ClipOutputs, calibrate: np.ndarray) -> Scoring:
    """Fit every scorer per machine ID on ALL clips of ``outputs`` (the normal training clips) and its
    thresholds on the scores of the clips ``calibrate`` marks (normals held out of training; all clips for a
    kind that is not trained), each scored by a scorer that did not see it (5-fold cross-fitting).

    An ID with fewer than ``MIN_CALIBRATION`` marked clips is calibrated on all its clips, cross-fitted
    (optimistic for a trained kind: the network saw them), recorded in ``calibration``; with fewer than
    ``MIN_CALIBRATION`` clips in all it gets no threshold (None: no decisions for it).
    """
    s = cfg.scoring
    groups = _groups(outputs)
    calibrate = np.asarray(calibrate, dtype=bool)
    names = scorer_names(kind)
    scorers = {n: IDScorers(n, **scorer_params(cfg, n)).fit({mid: outputs.embedding[r] for mid, r in groups.items()})
               for n in EMBEDDING_SCORERS}
    fused = None
    if FUSED in names:
        fused = FusedKNN(s.knn_k, cfg.train.seed).fit(groups, outputs.embedding, outputs.stats)
    thresholds: dict[str, dict[str, float | None]] = {n: {} for n in names}
    calibration = {}
    for mid, rows in groups.items():
        held = rows[calibrate[rows]]
        source = "held-out validation normals" if kind.trainable else "training normals, cross-fitted"
        if len(held) < MIN_CALIBRATION:
            held = rows
            source = ("training normals, cross-fitted (the network saw them: optimistic)" if kind.trainable
                      else "training normals, cross-fitted")
        calibration[mid] = f"{source} ({len(held)} clips)"
        for n in names:
            if len(held) < MIN_CALIBRATION:
                thresholds[n][mid] = None
                continue
            local = np.searchsorted(rows, held)  # held rows as positions within this ID's rows
            if n == FUSED:
                cal = fused.cross_fitted(mid, outputs.embedding[rows], outputs.stats[rows], local)
            elif n in EMBEDDING_SCORERS:
                cal = cross_fitted_scores(n, outputs.embedding[rows], local, seed=cfg.train.seed,
                                          **scorer_params(cfg, n))
            else:
                cal = outputs.native[held]
            thresholds[n][mid] = fit_threshold(cal, s.threshold_method, s.threshold_quantile, MIN_CALIBRATION)
    settings = {"threshold_method": s.threshold_method, "threshold_quantile": s.threshold_quantile,
                "aggregate": s.aggregate}
    return Scoring(kind.name, resolve_scorer(kind, s.scorer), scorers, thresholds, calibration, settings, fused)


# --------------------------------------------------------------------------------------------- proxy AUC
@dataclass
class Proxies:
    """Proxy outliers for ``val_proxy_auc``: rows of ``clips`` (key ``path``, ``owner``: the ID whose
    normals a corruption came from, None for another type's normal clip; ``family``) and their features."""

    clips: pd.DataFrame
    features: dict[str, dict[str, np.ndarray]]


def make_proxies(cfg: Config, kind: ModelKind, val: pd.DataFrame, others: pd.DataFrame, cache: FeatureCache) -> Proxies:
    """Corruptions (``mimimi.data.corrupt``) of up to ``validation.max_clips_per_id`` held-out normals per
    ID, and the other machine types' clips in ``others`` (``mimimi.train.other_type_proxies`` picks up to
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
        groups = _groups(train)
        emb_scorer = IDScorers(scorer, **scorer_params(cfg, scorer)).fit(
            {mid: train.embedding[r] for mid, r in groups.items()})
    elif scorer == FUSED:
        fused = FusedKNN(cfg.scoring.knn_k, cfg.train.seed).fit(_groups(train), train.embedding, train.stats)

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


def with_scores(outputs: ClipOutputs, scoring: Scoring, names: Sequence[str] | None = None,
                default: str | None = None) -> pd.DataFrame:
    """The clips with ``score`` (scorer ``default``), ``score_<name>`` for each of ``names`` and ``pred_id``."""
    out = outputs.clips.copy()
    for n in names or ():
        out[f"score_{n}"] = scoring.score(n, outputs)
    main = scoring.check(default)
    out["score"] = out[f"score_{main}"] if f"score_{main}" in out else scoring.score(main, outputs)
    out["pred_id"] = outputs.pred_id
    return out
