"""The leak-free validation objective, with resolution, and the choice of back-end.

Normal training clips against proxy outliers (corruptions of some of those clips, ``mimimi.data.corrupt``,
and normal clips of other machine types), scored as the model will be. No test clip is read. Two families
of figures, for every candidate back-end ``b`` (``mimimi.scoring.fitted``):

* ``cv_proxy_auc`` (cross-fitted): every validation clip of an ID is a normal, scored by back-ends fitted
  on the other folds of the ID's clips; a corruption is scored by the fold model that did not see the clip
  it was made from. Uses every clip, so 15 training clips give 15 normal scores per type, not 1 or 2.
  The network has seen these clips (it trains on them): their embeddings are tighter than new clips' are.
  Native scores (``ce``, ``recon``) are left out of this family: for a clip the network trained on they are
  biased low.
* ``val_proxy_auc`` (held out): only the normals held out of training (``train.val_fraction``), scored by
  back-ends fitted on the training split, against corruptions of those normals. Unbiased, but with few
  clips it takes a handful of values.

``<family>_network`` is the best figure among the back-ends that read the network alone (``knn``,
``mahalanobis``, ``gmm``, and ``ce`` held out): the one that tells trials apart when a back-end that does not
use the network (``stats-knn``) wins in every trial.

Per ID the AUC of normals against proxies (and per proxy family), then the mean over IDs. The chosen
back-end is the candidate with the highest figure of the monitored family (ties: ``PREFERENCE`` order);
``<family>`` is then its figure, ``<family>_se`` its noise: the standard error of the mean over IDs when
normals and proxies are resampled (bootstrap), i.e. how much the figure would move with other clips.

Cost per epoch: the model's pass over the validation clips and the proxies (bounded per ID by
``validation.max_references_per_id`` and ``validation.max_clips_per_id``), and ``scoring.folds + 2`` fits
of each base back-end per ID; independent of the number of trials.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.stats

from mimimi.config import Config
from mimimi.kinds import ModelKind
from mimimi import metrics as M
from mimimi.data.dcase import DOMAINS
from mimimi.scoring.fitted import (DENSITY, DOMAIN_AWARE, EMBEDDING_SCORERS, FUSED, FUSION, FUSION_MEMBERS, NATIVE,
                                   STATS, Bank, Norms, backend_names, base_names, combine, cross_fit, groups_of,
                                   rows_of, two_domains)
from mimimi.scoring.outputs import ClipOutputs

FAMILIES = ("cv_proxy_auc", "val_proxy_auc")

# ties go to the earlier back-end
PREFERENCE = (FUSED, FUSION, "knn", "mahalanobis", "gmm", DENSITY, *DOMAIN_AWARE, STATS, *NATIVE)
BOOTSTRAP = 200  # resamples for a figure's standard error
NETWORK_ONLY = (*EMBEDDING_SCORERS, DENSITY, *DOMAIN_AWARE, *NATIVE)  # the back-ends that read the network alone


def family_of(monitor: str | None) -> str | None:
    """The family a monitored figure belongs to, which also picks the back-end; None for another figure.

    >>> family_of("cv_proxy_auc_network"), family_of("val_proxy_auc"), family_of("val_loss")
    ('cv_proxy_auc', 'val_proxy_auc', None)
    """
    return next((f for f in FAMILIES if (monitor or "").startswith(f)), None)


def auc(normal: np.ndarray, outlier: np.ndarray) -> float:
    """P(outlier score > normal score) + ½ P(tie): the ROC AUC by ranks (Mann–Whitney), NaN if a side is empty.
    Not ``mimimi.metrics.auc``, which reports a test split and raises on a missing class: validation computes
    this thousands of times per epoch (per ID, back-end, family and bootstrap resample), where an empty side
    is ordinary (an ID with no proxies of a family) and sklearn's per-call overhead would dominate.

    >>> auc(np.array([0.1, 0.2]), np.array([0.15, 0.3]))
    0.75
    """
    if not len(normal) or not len(outlier):
        return math.nan
    ranks = scipy.stats.rankdata(np.concatenate([normal, outlier]))  # ties get their mean rank
    u = ranks[len(normal):].sum() - len(outlier) * (len(outlier) + 1) / 2
    return float(u / (len(normal) * len(outlier)))


@dataclass
class Scored:
    """One family's scores of one ID under every candidate: normals (n,) and proxies (p,) with their family,
    and the normals' domains (None: one domain)."""

    normal: dict[str, np.ndarray]
    proxy: dict[str, np.ndarray]
    family: np.ndarray  # (p,) proxy family names
    domain: np.ndarray | None = None  # (n,) "source" / "target"

    def resampled(self, rng: np.random.Generator) -> Scored:
        """The same ID with its normals (within each domain) and proxies drawn again with replacement."""
        n, p = len(next(iter(self.normal.values()))), len(self.family)
        if self.domain is None:
            pick = rng.integers(0, n, n)
        else:
            pick = np.concatenate([rng.choice(idx, len(idx)) for d in DOMAINS
                                   if len(idx := np.flatnonzero(self.domain == d))])
        q = rng.integers(0, p, p)
        return Scored({k: v[pick] for k, v in self.normal.items()}, {k: v[q] for k, v in self.proxy.items()},
                      self.family[q], None if self.domain is None else self.domain[pick])


def _values(normal: np.ndarray, proxy: np.ndarray, domain: np.ndarray | None) -> list[float]:
    """What one ID contributes to a figure: its AUC; with two domains, as the DCASE 2022+ score counts a
    section, the AUC of each domain's normals against every proxy and the pAUC of all of them."""
    if domain is None:
        return [auc(normal, proxy)]
    out = [auc(normal[domain == d], proxy) for d in DOMAINS if (domain == d).any()]
    if len(normal) and len(proxy):
        out.append(M.pauc(np.r_[np.zeros(len(normal)), np.ones(len(proxy))], np.r_[normal, proxy]))
    return out


def figure(scored: Mapping[str, Scored], name: str, family: str | None = None) -> float:
    """A family's figure under back-end ``name`` (proxies of one ``family`` only, when given): the mean over
    IDs of their AUC; with two domains the harmonic mean of every ID's AUC (source), AUC (target) and pAUC,
    each floored at machine epsilon, as the DCASE 2022+ official score (``mimimi.metrics``). NaN without any."""
    values = []
    for s in scored.values():
        prox = s.proxy[name] if family is None else s.proxy[name][s.family == family]
        values += [v for v in _values(s.normal[name], prox, s.domain) if math.isfinite(v)]
    if not values:
        return math.nan
    if any(s.domain is not None for s in scored.values()):
        return float(scipy.stats.hmean(np.maximum(values, np.finfo(float).eps)))
    return float(np.mean(values))


def domain_figures(scored: Mapping[str, Scored], name: str) -> dict[str, float]:
    """Per domain: the mean over IDs of the AUC of that domain's normals against every proxy."""
    out = {}
    for d in DOMAINS:
        per = [auc(s.normal[name][s.domain == d], s.proxy[name]) for s in scored.values()
               if s.domain is not None and (s.domain == d).any()]
        if per := [v for v in per if math.isfinite(v)]:
            out[d] = float(np.mean(per))
    return out


@dataclass
class Figures:
    """The validation figures of one epoch: ``values`` (metric name -> value, as reported), the candidates'
    figures per family, the chosen back-end and the clips the figures rest on."""

    values: dict[str, float] = field(default_factory=dict)
    by_backend: dict[str, dict[str, float]] = field(default_factory=dict)  # family -> back-end -> figure
    chosen: str | None = None
    normals_per_id: dict[str, int] = field(default_factory=dict)  # cross-fitted normals per ID

    def choice(self, family: str) -> dict:
        """What the checkpoint records about the choice (``Scoring.choice``)."""
        return {"metric": family, "chosen": self.chosen, "values": dict(self.by_backend.get(family, {})),
                "se": self.values.get(f"{family}_se", math.nan), "normals_per_id": dict(self.normals_per_id)}


def candidates(cfg: Config, kind: ModelKind, family: str, domains: bool = False) -> list[str]:
    """The back-ends validation chooses among: ``scoring.candidates`` (empty: every back-end of the kind),
    without the native score in the cross-fitted family."""
    names = [n for n in backend_names(kind, domains) if not cfg.scoring.candidates or n in cfg.scoring.candidates]
    return [n for n in names if not (family == "cv_proxy_auc" and n in NATIVE)]


def _all(names: Sequence[str], base: Mapping[str, np.ndarray], norms: Norms, mid: str, native, fusion: str):
    out = {}
    for n in names:
        members = {b: v for b, v in base.items() if b in FUSION_MEMBERS} if n == FUSION else base
        out[n] = combine(n, members, norms, mid, native, fusion)
    return out


def _bootstrap_se(scored: Mapping[str, Scored], name: str, seed: int) -> float:
    """Standard error of a figure when each ID's normals and proxies are resampled (``BOOTSTRAP`` times)."""
    usable = {m: s for m, s in scored.items() if len(s.normal[name]) and len(s.proxy[name])}
    if not usable:
        return math.nan
    rng = np.random.default_rng(seed)
    draws = [figure({m: s.resampled(rng) for m, s in usable.items()}, name) for _ in range(BOOTSTRAP)]
    return float(np.nanstd(draws, ddof=1))


def figures(cfg: Config, kind: ModelKind, normals: ClipOutputs, held: np.ndarray, proxies: ClipOutputs,
            proxy_rows: pd.DataFrame, monitor: str) -> Figures:
    """The validation figures of one epoch (module docstring). ``normals``: the validation clips' outputs,
    ``held``: (n,) which of them were held out of training; ``proxies`` / ``proxy_rows``: the proxy clips'
    outputs and their ``owner`` (the ID a corruption came from, None for another type's clip), ``family``
    and ``source`` (the path of the clip a corruption was made from); ``monitor``: the family whose figure
    chooses the back-end (``val_loss``: the cross-fitted one)."""
    s = cfg.scoring
    domains = two_domains(normals)
    base = base_names(kind, domains)
    held = np.asarray(held, dtype=bool)
    owner = proxy_rows["owner"].to_numpy(dtype=object)
    family = proxy_rows["family"].to_numpy(dtype=object)
    source = proxy_rows["source"].to_numpy(dtype=object)
    foreign = np.array([o is None or (isinstance(o, float) and math.isnan(o)) for o in owner])
    paths = normals.clips["path"].to_numpy(dtype=object)
    cv: dict[str, Scored] = {}
    val: dict[str, Scored] = {}
    out = Figures()
    for mid, idx in groups_of(normals).items():
        rows = rows_of(normals, idx)
        mine = np.flatnonzero(owner == mid)
        sel = np.r_[mine, np.flatnonzero(foreign)]  # this ID's corruptions, then every foreign proxy
        position = {p: i for i, p in enumerate(paths[idx])}
        src = np.array([position.get(p, -1) if i in set(mine) else -1 for i, p in zip(sel, source[sel])])
        keep = (src >= 0) | foreign[sel]  # a corruption of a clip outside the validation set is not scored
        sel, src = sel[keep], src[keep]
        cf_normal, cf_proxy = cross_fit(cfg, rows, base, proxies=rows_of(proxies, sel), source=src)
        out.normals_per_id[mid] = int(np.isfinite(next(iter(cf_normal.values()))).sum())
        norms = Norms.fit({mid: cf_normal})
        dom = rows.domains if domains else None
        if out.normals_per_id[mid]:
            names = candidates(cfg, kind, "cv_proxy_auc", domains)
            cv[mid] = Scored(_all(names, cf_normal, norms, mid, None, s.fusion),
                             _all(names, cf_proxy, norms, mid, None, s.fusion), family[sel], dom)
        h = held[idx]
        if h.any() and (~h).any():  # the held-out family: back-ends fitted on the training split
            bank = Bank.fit(cfg, rows.take(~h), base)
            hsrc = np.isin(src, np.flatnonzero(h)) | foreign[sel]  # corruptions of held-out clips, foreign ones
            names = candidates(cfg, kind, "val_proxy_auc", domains)
            pn = proxies.native[sel[hsrc]] if proxies.native is not None else None
            val[mid] = Scored(_all(names, bank.scores(rows.take(h)), norms, mid, rows.take(h).native, s.fusion),
                              _all(names, bank.scores(rows_of(proxies, sel[hsrc])), norms, mid, pn, s.fusion),
                              family[sel[hsrc]], None if dom is None else dom[h])
    for fam, scored in (("cv_proxy_auc", cv), ("val_proxy_auc", val)):
        if not scored:
            continue
        out.by_backend[fam] = {n: figure(scored, n) for n in candidates(cfg, kind, fam, domains)}
    chooser = family if (family := family_of(monitor)) in out.by_backend else next(iter(out.by_backend), None)
    if chooser is not None:
        ranked = sorted(out.by_backend[chooser].items(),
                        key=lambda kv: (-(kv[1] if math.isfinite(kv[1]) else -1.0), PREFERENCE.index(kv[0])))
        out.chosen = ranked[0][0]
    for fam, scored in (("cv_proxy_auc", cv), ("val_proxy_auc", val)):
        if fam not in out.by_backend or out.chosen not in out.by_backend[fam]:
            continue
        out.values[fam] = out.by_backend[fam][out.chosen]
        out.values[f"{fam}_se"] = _bootstrap_se(scored, out.chosen, cfg.train.seed)
        for f in sorted({f for sc in scored.values() for f in sc.family}):
            if math.isfinite(v := figure(scored, out.chosen, f)):
                out.values[f"{fam}/{f}"] = v
        for d, v in domain_figures(scored, out.chosen).items():  # two domains: what the harmonic mean hides
            out.values[f"{fam}/{d}"] = v
        for n, v in out.by_backend[fam].items():
            out.values[f"backend/{n}/{fam}"] = v
        network = [(v, n) for n, v in out.by_backend[fam].items() if n in NETWORK_ONLY and math.isfinite(v)]
        if network:  # what the network alone reaches: the figure that can tell trials apart when stats-knn wins
            v, n = max(network, key=lambda vn: (vn[0], -PREFERENCE.index(vn[1])))
            out.values[f"{fam}_network"] = v
            out.values[f"{fam}_network_se"] = (out.values[f"{fam}_se"] if n == out.chosen
                                               else _bootstrap_se(scored, n, cfg.train.seed))
    return out
