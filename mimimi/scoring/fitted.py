"""The back-ends of a model, fitted per machine ID on its normal training clips, and the scoring state a
checkpoint carries (``Scoring``): every back-end per ID, the statistics that normalise them, their
normal-only decision thresholds, what fell back where, and which back-end validation chose.

The back-ends (``backend_names(kind)`` says which a kind offers); a clip's score is higher when it is more
anomalous:

* ``ce`` / ``recon``: the kind's native score (the paper's cross-entropy for the network);
* ``knn`` (cosine, ``scoring.knn_k``), ``mahalanobis`` (shrinkage covariance), ``gmm`` (diagonal mixture),
  ``knn-density`` (kNN over each reference's local density, ``scoring.density_k``): on the clip embedding,
  against the ID's training clips (``mimimi.scoring.backends``);
* ``knn-domain`` and ``mahalanobis-domain`` (data with a source and a target domain, DCASE 2021+; absent
  elsewhere): the references of each domain apart, the smaller distance wins. ``mahalanobis-domain`` is the
  DCASE 2023 baseline's selective Mahalanobis (a mean and covariance per domain; raw distances);
  ``knn-domain`` standardises each domain's distances on that domain's own cross-fitted normal scores
  before the minimum, so that the 10 target clips are not drowned by the 990 source clips. Where a domain
  is too small to standardise (one clip), no domain is: the raw distances' minimum; where the data has one
  domain they are the plain ``knn`` / ``mahalanobis``. A test clip needs no domain label (evaluation sets hide it);
* ``stats-knn``: cosine kNN on the clip's log-mel mean and standard deviation, against the ID's training
  clips: the training-free baseline as a back-end of the model, "no network";
* ``knn-stats``: ``knn / s_knn + stats-knn / s_stats``, each divided by the median of its cross-fitted
  normal scores in the ID, so that neither dominates by its scale: the network's view and the
  training-free view, averaged;
* ``fusion``: ``knn``, ``mahalanobis``, ``gmm`` and ``stats-knn`` each standardised per ID on its
  cross-fitted normal scores (z-scores), then combined: their mean (``scoring.fusion: mean``) or their
  minimum (``min``, the "Z-MIN" of Zhou & Wang 2026, arXiv 2606.19269, who found such a fusion within about
  a point of picking the best back-end per machine with hindsight).

"Cross-fitted" normal scores: the ID's clips are split into ``scoring.folds`` folds (seeded) and each clip
is scored by back-ends fitted on the other folds, so no clip is scored against itself. They set the
thresholds (``fit_threshold``: a gamma fit to normal scores only) and the normalisation statistics.

**Any number of training clips.** A back-end that cannot be fitted on an ID's clips (``gmm`` needs 2: an
ID with 1 clip) is replaced for that ID by ``knn``, and the checkpoint, the report and MLflow say so
(``Scoring.fallbacks``); an ID with one clip has no cross-fitted scores, so its normalisation statistics are
pooled from the other IDs of the type (or none: 1 and 0), also recorded; an ID with fewer than
``MIN_CALIBRATION`` calibration clips gets no threshold (no decisions for it). One ID's problem never stops
the others' fit.

Cost per ID of ``n`` clips with ``D``-dim embeddings: kNN ``O(n² D)``, Mahalanobis ``O(n D² + D³)``, GMM
``O(iterations · n D)``, each fitted ``folds + 1`` times; linear in IDs.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from mimimi.config import Config
from mimimi.kinds import ModelKind
from mimimi.scoring.backends import (Scorer, ScorerError, cross_fitted_scores, fit_threshold, make_scorer,
                                     scorer_from_state)
from mimimi.scoring.outputs import ClipOutputs

EMBEDDING_SCORERS = ("knn", "mahalanobis", "gmm")
DENSITY = "knn-density"
DOMAIN_AWARE = ("knn-domain", "mahalanobis-domain")  # only where the training clips hold two domains
STATS = "stats-knn"  # kNN on log-mel statistics: no network
FUSED = "knn-stats"  # knn + stats-knn, each median-normalised
FUSION = "fusion"  # z-normalised knn, mahalanobis, gmm and stats-knn, combined
BASE = (*EMBEDDING_SCORERS, STATS)  # the back-ends fitted on references; FUSED and FUSION combine them
FUSION_MEMBERS = BASE
NATIVE = ("ce", "recon")
FALLBACK = "knn"  # what an ID gets where a back-end cannot be fitted on its clips
MIN_ROWS = {"knn": 1, "mahalanobis": 1, "gmm": 2, DENSITY: 1, STATS: 1, "knn-domain": 1,
            "mahalanobis-domain": 1}  # clips a back-end needs to be fitted
MIN_CALIBRATION = 3  # normal scores an ID needs for a threshold
STATE_VERSION = 2


class ScoringError(ValueError):
    """A scorer that the model does not have, or scoring state that cannot be used."""


def backend_names(kind: ModelKind, domains: bool = False) -> tuple[str, ...]:
    """The back-ends a kind offers: its native score first, then the embedding back-ends (the domain-aware
    ones where the training clips hold two domains), then for trained kinds ``stats-knn`` and the combined
    ones. (For the ``stats-knn`` kind the embedding IS the statistics.)"""
    native = (kind.native,) if kind.native else ()
    embedding = (*EMBEDDING_SCORERS, *((DENSITY,) if kind.trainable else ()), *(DOMAIN_AWARE if domains else ()))
    return native + embedding + ((STATS, FUSED, FUSION) if kind.trainable else (FUSION,))


scorer_names = backend_names  # the name the rest of the code and the CLIs use: a scorer is a back-end


def base_names(kind: ModelKind, domains: bool = False) -> tuple[str, ...]:
    """The back-ends a kind's banks fit: every one but the native and the combined ones (``knn-stats``,
    ``fusion``: they combine these)."""
    return tuple(n for n in backend_names(kind, domains) if n not in (*NATIVE, FUSED, FUSION))


def default_scorer(kind: ModelKind) -> str:
    """The back-end a model uses before validation chooses one: ``knn-stats`` for a trained kind, ``knn``
    for the ``stats-knn`` kind (the evidence for that default: ``docs/scorers.md``)."""
    return FUSED if kind.trainable else "knn"


def resolve_scorer(kind: ModelKind, name: str | None) -> str:
    """``None`` / ``"default"`` -> ``default_scorer(kind)``; a name the kind does not offer raises ScoringError."""
    name = default_scorer(kind) if name in (None, "", "default") else name
    if name not in backend_names(kind):
        raise ScoringError(f"scorer {name!r} is not one of the {kind.name} model's: {', '.join(backend_names(kind))}")
    return name


def scorer_params(cfg: Config, name: str) -> dict[str, Any]:
    """The ``mimimi.scoring.backends`` parameters of a base back-end."""
    s = cfg.scoring
    return {"knn": {"k": s.knn_k}, STATS: {"k": s.knn_k}, "mahalanobis": {"shrinkage": s.mahalanobis_shrinkage},
            "gmm": {"n_components": s.gmm_components}, DENSITY: {"k_ref": s.density_k},
            "knn-domain": {"k": s.knn_k}, "mahalanobis-domain": {"shrinkage": s.mahalanobis_shrinkage}}[name]


# --------------------------------------------------------------------------------------------- rows
@dataclass
class Rows:
    """What the back-ends see of some clips of one machine ID: embeddings (n, D), log-mel statistics
    (n, S) (None for the ``stats-knn`` kind, whose embedding they are), native scores (n,) or None."""

    emb: np.ndarray
    stats: np.ndarray | None
    native: np.ndarray | None
    domains: np.ndarray | None = None  # (n,) "source" / "target" (None: one domain, or unknown)

    def take(self, idx) -> Rows:
        return Rows(self.emb[idx], None if self.stats is None else self.stats[idx],
                    None if self.native is None else self.native[idx],
                    None if self.domains is None else self.domains[idx])

    def __len__(self) -> int:
        return len(self.emb)

    def view(self, name: str) -> np.ndarray:
        """The array a base back-end reads: the statistics for ``stats-knn``, else the embedding."""
        if name == STATS and self.stats is not None:
            return self.stats
        return self.emb


def rows_of(outputs: ClipOutputs, idx: np.ndarray | None = None) -> Rows:
    domains = outputs.clips["domain"].to_numpy(dtype=object) if "domain" in outputs.clips else None
    rows = Rows(outputs.embedding, outputs.stats, outputs.native, domains)
    return rows if idx is None else rows.take(idx)


def two_domains(outputs: ClipOutputs) -> bool:
    """Whether the clips hold a source and a target domain (the domain-aware back-ends then exist)."""
    return "domain" in outputs.clips and {"source", "target"} <= set(outputs.clips["domain"])


def groups_of(outputs: ClipOutputs) -> dict[str, np.ndarray]:
    """machine ID -> row numbers of its clips."""
    ids = outputs.clips["machine_id"].to_numpy()
    return {mid: np.flatnonzero(ids == mid) for mid in sorted(set(ids))}


# --------------------------------------------------------------------------------------------- one ID
class Bank:
    """Every base back-end (``BASE``, or the embedding ones for the ``stats-knn`` kind) fitted on one
    machine ID's normal training clips; ``fallbacks``: base back-end -> why ``knn`` stands in for it."""

    def __init__(self, scorers: dict[str, Scorer], fallbacks: dict[str, str] | None = None):
        self.scorers, self.fallbacks = scorers, dict(fallbacks or {})

    @classmethod
    def fit(cls, cfg: Config, rows: Rows, names: Sequence[str]) -> Bank:
        scorers, fallbacks = {}, {}
        for name in names:
            X = rows.view(name)
            need = MIN_ROWS[name]
            try:
                if len(X) < need:
                    raise ScorerError(f"{len(X)} training clip(s); {name} needs {need}")
                if name in DOMAIN_AWARE:
                    scorers[name] = PerDomain(cfg, name).fit(X, rows.domains)
                else:
                    scorers[name] = make_scorer(_array_scorer(name), **scorer_params(cfg, name)).fit(X)
            except (ScorerError, ValueError, np.linalg.LinAlgError) as e:  # never one ID's problem for all
                fallbacks[name] = f"{FALLBACK}: {str(e).splitlines()[0]}"
                scorers[name] = make_scorer("knn", k=cfg.scoring.knn_k).fit(X)
        return cls(scorers, fallbacks)

    def scores(self, rows: Rows, one_at_a_time: bool = False) -> dict[str, np.ndarray]:
        """Base back-end -> (n,) scores of ``rows``. ``one_at_a_time``: each clip scored alone, so that its
        score never depends on the clips beside it (a matrix product over several rows may round
        differently): what evaluation and ``mimimi score`` use."""
        out = {}
        for name, scorer in self.scorers.items():
            X = rows.view(name)
            out[name] = (np.array([scorer.score(X[i:i + 1])[0] for i in range(len(X))]) if one_at_a_time
                         else scorer.score(X))
        return out

    def state(self) -> dict[str, Any]:
        return {"scorers": {n: s.state() for n, s in self.scorers.items()}, "fallbacks": dict(self.fallbacks)}

    @classmethod
    def from_state(cls, state: Mapping) -> Bank:
        return cls({str(n): PerDomain.from_state(s) if "domains" in s else scorer_from_state(s)
                    for n, s in state["scorers"].items()}, dict(state["fallbacks"]))


def _array_scorer(name: str) -> str:
    return "knn" if name == STATS else name.removesuffix("-domain")


class PerDomain:
    """A domain-aware back-end of one ID: the base scorer (``knn`` or ``mahalanobis``) fitted on each domain's
    clips apart; a clip's score is the smallest over the domains of its distance, standardised on that
    domain's cross-fitted normal scores for ``knn-domain`` when every domain has two clips or more (raw
    otherwise, and for ``mahalanobis-domain``, as the DCASE 2023 baseline's selective Mahalanobis). One domain
    present: the base scorer on all clips. No domain label is needed to score."""

    def __init__(self, cfg: Config | None, name: str):
        self.name, self.cfg = name, cfg
        self.base = _array_scorer(name)
        self.standardise = name == "knn-domain"
        self.parts: dict[str, Scorer] = {}
        self.z: dict[str, tuple[float, float]] = {}

    def fit(self, X: np.ndarray, domains: np.ndarray | None) -> PerDomain:
        params = scorer_params(self.cfg, self.name)
        names = sorted(set(domains)) if domains is not None else []
        if len(names) < 2:  # one domain: the plain base scorer
            self.parts = {"all": make_scorer(self.base, **params).fit(X)}
            return self
        own = {}
        for d in names:
            mine = np.asarray(domains == d)
            self.parts[d] = make_scorer(self.base, **params).fit(X[mine])
            if self.standardise and mine.sum() >= 2:  # each clip against the domain's other clips
                v = cross_fitted_scores(self.base, X[mine], np.arange(int(mine.sum())), folds=self.cfg.scoring.folds,
                                        seed=self.cfg.train.seed, **params)
                own[d] = (float(v.mean()), float(v.std()))
        if len(own) == len(names):  # a domain with one clip cannot be standardised: then no domain is (raw min)
            self.z = {d: (mean, sd if sd > 0 else 1.0) for d, (mean, sd) in own.items()}
        return self

    def score(self, X) -> np.ndarray:
        per = [(s.score(X) - self.z[d][0]) / self.z[d][1] if d in self.z else s.score(X)
               for d, s in self.parts.items()]  # (domains, m)
        return np.min(per, axis=0)

    def state(self) -> dict[str, Any]:
        return {"name": self.name, "domains": {d: {"scorer": s.state(), "z": list(self.z[d]) if d in self.z else None}
                                               for d, s in self.parts.items()}}

    @classmethod
    def from_state(cls, state: Mapping) -> PerDomain:
        obj = cls(None, str(state["name"]))
        for d, part in state["domains"].items():
            obj.parts[str(d)] = scorer_from_state(part["scorer"])
            if part["z"] is not None:
                obj.z[str(d)] = (float(part["z"][0]), float(part["z"][1]))
        return obj


def fold_of(n: int, folds: int, seed: int) -> np.ndarray:
    """(n,) the fold of each of ``n`` clips: ``min(folds, n)`` folds of a seeded permutation."""
    k = max(1, min(folds, n))
    out = np.empty(n, dtype=np.int64)
    out[np.random.default_rng(seed).permutation(n)] = np.arange(n) % k
    return out


def cross_fit(cfg: Config, rows: Rows, names: Sequence[str], *, proxies: Rows | None = None,
              source: np.ndarray | None = None,
              scored: np.ndarray | None = None) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Cross-fitted base scores: (back-end -> (n,) scores of ``rows``, each clip scored by back-ends fitted
    on the other folds; back-end -> (p,) scores of ``proxies``). A proxy whose ``source`` is row ``i`` (a
    corruption of it) is scored by the fold model that did not see row ``i``; ``source`` -1 (a clip of
    another machine type) by every fold model, averaged. With one clip nothing can be cross-fitted: NaN.

    ``scored`` (a boolean mask; default every row): only those rows are split into folds and scored, each by
    back-ends fitted on every row but its fold's (the others NaN), so that scoring a bounded sample costs
    ``folds`` fits on all ``n`` rows and ``O(sample x n)`` distances: linear in ``n``."""
    n = len(rows)
    normal = {name: np.full(n, np.nan) for name in names}
    scored = np.ones(n, bool) if scored is None else np.asarray(scored, dtype=bool)
    p = 0 if proxies is None else len(proxies)
    prox = {name: np.zeros(p) for name in names}
    source = np.full(p, -1, dtype=np.int64) if source is None else np.asarray(source, dtype=np.int64)
    if n < 2:
        for name in names:
            prox[name][:] = np.nan
        return normal, prox
    fold = np.full(n, -1, dtype=np.int64)  # -1: never held out, always a reference
    fold[scored] = fold_of(int(scored.sum()), cfg.scoring.folds, cfg.train.seed)
    k = int(fold.max()) + 1
    foreign = source < 0
    for f in range(k):
        mine = fold == f
        bank = Bank.fit(cfg, rows.take(~mine), names)
        for name, v in bank.scores(rows.take(mine)).items():
            normal[name][mine] = v
        if p:
            own = ~foreign & np.isin(source, np.flatnonzero(mine))
            sel = own | foreign
            for name, v in bank.scores(proxies.take(sel)).items():
                prox[name][np.flatnonzero(sel)] += np.where(foreign[sel], v / k, v)
    return normal, prox


# --------------------------------------------------------------------------------------------- norms
@dataclass
class Norms:
    """Per machine ID: ``scale`` (base back-end -> median of its cross-fitted normal scores, ``knn-stats``)
    and ``z`` (back-end -> (mean, std) of them, ``fusion``); ``note``: where they were pooled from the other
    IDs (an ID with one clip has no cross-fitted scores of its own)."""

    scale: dict[str, dict[str, float]]
    z: dict[str, dict[str, tuple[float, float]]]
    note: dict[str, str]

    @classmethod
    def fit(cls, cf: Mapping[str, Mapping[str, np.ndarray]]) -> Norms:
        """``cf``: machine ID -> back-end -> its cross-fitted normal scores (NaN where none: a one-clip ID)."""
        own = {m: {b: v[np.isfinite(v)] for b, v in by.items()} for m, by in cf.items()}
        scale, z, note = {}, {}, {}
        for m, by in own.items():
            scale[m], z[m] = {}, {}
            for b, v in by.items():
                if len(v) < 2:  # too few of its own: the other IDs' scores of the same back-end, pooled
                    v = np.concatenate([o[b] for mm, o in own.items() if mm != m and len(o[b]) >= 2] or [v])
                    note[m] = (f"{len(cf[m][b])} training clip(s): normalised with the other IDs' statistics"
                               if len(v) >= 2 else "too few training clips in the type: not normalised")
                med, mean, sd = ((float(np.median(v)), float(np.mean(v)), float(np.std(v))) if len(v) >= 2
                                 else (1.0, 0.0, 1.0))
                scale[m][b] = med if med > 0 and math.isfinite(med) else 1.0
                z[m][b] = (mean if math.isfinite(mean) else 0.0, sd if sd > 0 and math.isfinite(sd) else 1.0)
        return cls(scale, z, note)

    def state(self) -> dict[str, Any]:
        return {"scale": self.scale, "z": {m: {b: list(v) for b, v in d.items()} for m, d in self.z.items()},
                "note": dict(self.note)}

    @classmethod
    def from_state(cls, state: Mapping) -> Norms:
        return cls({str(m): {str(b): float(v) for b, v in d.items()} for m, d in state["scale"].items()},
                   {str(m): {str(b): (float(v[0]), float(v[1])) for b, v in d.items()} for m, d in state["z"].items()},
                   {str(m): str(v) for m, v in state["note"].items()})


def combine(name: str, base: Mapping[str, np.ndarray], norms: Norms, mid: str, native: np.ndarray | None = None,
            fusion: str = "mean") -> np.ndarray:
    """A back-end's scores from the base back-ends' scores of the same clips (one ID)."""
    if name in base:
        return base[name]
    if name == FUSED:
        s = norms.scale[mid]
        return base["knn"] / s["knn"] + base[STATS] / s[STATS]
    if name == FUSION:
        z = np.stack([(base[b] - norms.z[mid][b][0]) / norms.z[mid][b][1] for b in base])  # (members, n)
        return z.min(axis=0) if fusion == "min" else z.mean(axis=0)
    if name in NATIVE:
        if native is None:
            raise ScoringError(f"scorer {name!r} needs the model's native scores")
        return np.asarray(native, dtype=np.float64)
    raise ScoringError(f"unknown back-end {name!r}")


# --------------------------------------------------------------------------------------------- the state
class Scoring:
    """Per machine ID a ``Bank`` of fitted base back-ends and their ``Norms``; normal-only thresholds per
    (back-end, ID); ``calibration`` (ID -> which clips set its thresholds); ``default`` (the back-end used
    unless another is asked for: validation's choice); ``choice`` (how it was chosen: metric, value per
    candidate, noise; empty when it was not chosen on validation)."""

    def __init__(self, kind: str, default: str, banks: dict[str, Bank], norms: Norms,
                 thresholds: dict[str, dict[str, float | None]], calibration: dict[str, str], settings: dict,
                 choice: dict | None = None):
        self.kind, self.default, self.banks, self.norms = kind, default, banks, norms
        self.thresholds, self.calibration, self.settings = thresholds, calibration, settings
        self.choice = dict(choice or {})

    @property
    def names(self) -> list[str]:
        return list(self.thresholds)

    @property
    def fallbacks(self) -> dict[str, dict[str, str]]:
        """back-end -> machine ID -> why ``knn`` stands in for it there; ``fusion`` / ``knn-stats`` -> ID ->
        where its normalisation was pooled from the other IDs."""
        out: dict[str, dict[str, str]] = {}
        for mid, bank in self.banks.items():
            for name, why in bank.fallbacks.items():
                out.setdefault(name, {})[mid] = why
        for mid, why in self.norms.note.items():
            for name in (FUSED, FUSION):
                if name in self.thresholds:
                    out.setdefault(name, {})[mid] = why
        return out

    def check(self, name: str | None) -> str:
        name = self.default if name in (None, "", "default") else name
        if name not in self.thresholds:
            raise ScoringError(f"scorer {name!r} is not one this model has: {', '.join(self.names)}")
        return name

    def with_default(self, name: str, choice: dict | None = None) -> Scoring:
        """The same state with another default back-end (validation's choice)."""
        self.check(name)
        return Scoring(self.kind, name, self.banks, self.norms, self.thresholds, self.calibration, self.settings,
                       choice if choice is not None else self.choice)

    def score(self, name: str | None, outputs: ClipOutputs) -> np.ndarray:
        """(n,) scores of the clips of ``outputs`` under back-end ``name`` (None: the default), each clip
        scored alone."""
        name = self.check(name)
        out = np.empty(len(outputs.clips))
        for mid, idx in groups_of(outputs).items():
            if name in NATIVE:
                if outputs.native is None:
                    raise ScoringError(f"scorer {name!r} needs the model's native scores")
                out[idx] = outputs.native[idx]
                continue
            if mid not in self.banks:
                raise ScoringError(f"machine ID {mid}: unknown group {mid!r}; known groups: "
                                   f"{', '.join(map(repr, sorted(self.banks)))}")
            rows = rows_of(outputs, idx)
            if rows.stats is None and any(b == STATS for b in self.banks[mid].scorers):
                raise ScoringError(f"scorer {name!r} needs the clips' log-mel statistics")
            try:
                base = self.banks[mid].scores(rows, one_at_a_time=True)
            except ScorerError as e:
                raise ScoringError(f"machine ID {mid}: {e}") from None
            if name in base:
                out[idx] = base[name]
            else:
                members = {b: v for b, v in base.items() if b in FUSION_MEMBERS} if name == FUSION else base
                out[idx] = combine(name, members, self.norms, mid, fusion=self.settings.get("fusion", "mean"))
        return out

    def state(self) -> dict[str, Any]:
        return {"version": STATE_VERSION, "kind": self.kind, "default": self.default, "settings": dict(self.settings),
                "banks": {m: b.state() for m, b in self.banks.items()}, "norms": self.norms.state(),
                "thresholds": {n: dict(t) for n, t in self.thresholds.items()}, "calibration": dict(self.calibration),
                "choice": _plain(self.choice)}

    @classmethod
    def from_state(cls, state: Mapping) -> Scoring:
        try:
            if state.get("version") != STATE_VERSION:
                return _from_v1(state)
            return cls(state["kind"], state["default"], {str(m): Bank.from_state(b) for m, b in state["banks"].items()},
                       Norms.from_state(state["norms"]), _thresholds(state["thresholds"]), dict(state["calibration"]),
                       dict(state["settings"]), dict(state.get("choice") or {}))
        except (KeyError, TypeError, AttributeError, IndexError, ScorerError) as e:
            raise ScoringError(f"not a MIMIMI scoring state ({e})") from None


def _thresholds(t: Mapping) -> dict[str, dict[str, float | None]]:
    return {str(n): {str(k): (None if v is None else float(v)) for k, v in d.items()} for n, d in t.items()}


def _plain(obj: Any) -> Any:
    """Plain values only (a checkpoint is read with ``weights_only``)."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    return obj


def _from_v1(state: Mapping) -> Scoring:
    """A scoring state written before back-ends were banked per ID (per-scorer ``IDScorers`` and a ``fused``
    knn-stats part): the same fitted scorers, no ``fusion``."""
    per_scorer = {n: {str(g): scorer_from_state(s) for g, s in st["groups"].items()}
                  for n, st in state["scorers"].items()}
    fused = state.get("fused")
    if fused:
        per_scorer[STATS] = {str(g): scorer_from_state(s) for g, s in fused["parts"]["stats"]["groups"].items()}
    ids = sorted(next(iter(per_scorer.values())))
    banks = {m: Bank({n: per_scorer[n][m] for n in per_scorer}) for m in ids}
    scale = ({m: {"knn": float(fused["scales"]["emb"][m]), STATS: float(fused["scales"]["stats"][m])} for m in ids}
             if fused else {})
    return Scoring(state["kind"], state["default"], banks, Norms(scale, {}, {}), _thresholds(state["thresholds"]),
                   dict(state["calibration"]), dict(state["settings"]))


# --------------------------------------------------------------------------------------------- fitting
def calibration_sample(calibrate: np.ndarray, cap: int, seed: int) -> np.ndarray:
    """(n,) the rows of one ID whose cross-fitted scores set its thresholds and normalisation: the calibration
    rows first (held out of training), then a seeded sample of the others, ``cap`` in all — so fitting costs
    the same per clip at 200 clips per ID as at 2000.

    >>> picked = calibration_sample(np.array([False, True, False, False]), 2, 0)
    >>> int(picked.sum()), bool(picked[1])  # the held-out row, and one other
    (2, True)
    """
    calibrate = np.asarray(calibrate, dtype=bool)
    order = np.r_[np.flatnonzero(calibrate), np.random.default_rng(seed).permutation(np.flatnonzero(~calibrate))]
    out = np.zeros(len(calibrate), bool)
    out[order[:cap]] = True
    return out


def fit_scoring(cfg: Config, kind: ModelKind, outputs: ClipOutputs, calibrate: np.ndarray,
                choice: dict | None = None) -> Scoring:
    """Fit every back-end per machine ID on ALL clips of ``outputs`` (the normal training clips), the
    normalisation statistics on their cross-fitted scores, and each back-end's thresholds on the
    cross-fitted scores of the clips ``calibrate`` marks (normals held out of training; all clips for a kind
    that is not trained). ``choice``: validation's choice of back-end (``mimimi.scoring.objective``), which
    becomes the default; else ``scoring.scorer``.

    An ID with fewer than ``MIN_CALIBRATION`` marked clips is calibrated on all its clips, cross-fitted
    (optimistic for a trained kind: the network saw them), recorded in ``calibration``; with fewer than
    ``MIN_CALIBRATION`` clips in all it gets no threshold (None: no decisions for it).
    """
    s = cfg.scoring
    domains = two_domains(outputs)
    names, base = backend_names(kind, domains), base_names(kind, domains)
    groups = groups_of(outputs)
    calibrate = np.asarray(calibrate, dtype=bool)
    banks, cf, sample = {}, {}, {}
    for mid, idx in groups.items():
        rows = rows_of(outputs, idx)
        banks[mid] = Bank.fit(cfg, rows, base)
        sample[mid] = calibration_sample(calibrate[idx], cfg.validation.max_references_per_id, cfg.train.seed)
        cf[mid], _ = cross_fit(cfg, rows, base, scored=sample[mid])
    norms = Norms.fit(cf)
    thresholds: dict[str, dict[str, float | None]] = {n: {} for n in names}
    calibration = {}
    for mid, idx in groups.items():
        held = np.flatnonzero(calibrate[idx] & sample[mid])
        what = "held-out validation normals" if kind.trainable else "training normals, cross-fitted"
        if len(held) < MIN_CALIBRATION:
            held = np.flatnonzero(sample[mid])
            what = ("training normals, cross-fitted (the network saw them: optimistic)" if kind.trainable
                    else "training normals, cross-fitted")
        calibration[mid] = f"{what} ({len(held)} clips)"
        for n in names:
            scores = combine(n, {b: v[held] for b, v in cf[mid].items() if n != FUSION or b in FUSION_MEMBERS},
                             norms, mid, None if outputs.native is None else outputs.native[idx][held], s.fusion)
            ok = len(held) >= MIN_CALIBRATION and np.isfinite(scores).all()
            thresholds[n][mid] = fit_threshold(scores, s.threshold_method, s.threshold_quantile,
                                               MIN_CALIBRATION) if ok else None
    settings = {"threshold_method": s.threshold_method, "threshold_quantile": s.threshold_quantile,
                "aggregate": s.aggregate, "fusion": s.fusion, "folds": s.folds}
    default = choice["chosen"] if choice and choice.get("chosen") else resolve_scorer(kind, s.scorer)
    return Scoring(kind.name, default, banks, norms, thresholds, calibration, settings, choice)


def with_scores(outputs: ClipOutputs, scoring: Scoring, names: Sequence[str] | None = None,
                default: str | None = None) -> pd.DataFrame:
    """The clips with ``score`` (back-end ``default``), ``score_<name>`` for each of ``names`` and ``pred_id``."""
    out = outputs.clips.copy()
    for n in names or ():
        out[f"score_{n}"] = scoring.score(n, outputs)
    main = scoring.check(default)
    out["score"] = out[f"score_{main}"] if f"score_{main}" in out else scoring.score(main, outputs)
    out["pred_id"] = outputs.pred_id
    return out

