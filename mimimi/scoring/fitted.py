"""The fitted scoring state a checkpoint carries: every scorer per machine ID, their normal-only decision
thresholds and the default scorer.

The scorers of a model (``scorer_names``):

* ``ce`` / ``recon``: the kind's native score itself (the paper's score for the network);
* ``knn`` (cosine, ``scoring.knn_k``), ``mahalanobis`` (shrinkage covariance), ``gmm`` (diagonal mixture):
  fitted per machine ID on the clip embeddings of ALL that ID's normal training clips
  (``mimimi.scoring.backends``);
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
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from mimimi.config import Config
from mimimi.kinds import ModelKind
from mimimi.scoring.backends import IDScorers, ScorerError, cross_fitted_scores, fit_threshold
from mimimi.scoring.outputs import ClipOutputs

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


def groups_of(outputs: ClipOutputs) -> dict[str, np.ndarray]:
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
    groups = groups_of(outputs)
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

