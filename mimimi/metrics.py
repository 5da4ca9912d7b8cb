"""Evaluation metrics (DCASE Task 2, 2020–2025): small pure functions on per-clip scores.

Input to the table functions is a per-clip DataFrame ``scores`` with the columns ``machine_type``,
``machine_id`` (the index's two-digit strings, e.g. ``"00"``), ``path``, ``label`` (``"normal"`` /
``"anomaly"``) and ``score`` (float, higher = more anomalous); optionally ``pred_id``, the ID the
classifier predicted, spelled like ``machine_id``.

Protocol:

* per machine ID: AUC = ``roc_auc_score(y, s)``, pAUC = ``roc_auc_score(y, s, max_fpr=0.1)`` (McClish-
  standardised, as the official DCASE 2020 code);
* per machine type: the arithmetic mean over its IDs. The AUC of all IDs of a type pooled together (the
  seed's number) is reported beside it, for comparison only.

An ID whose test clips are all of one class has no AUC. ``per_id_table`` keeps its row with NaN AUC/pAUC
and a ``note`` ("no anomalous clips" / "no normal clips"); ``per_type_table`` leaves it out of the means
and lists it in ``excluded_ids``; a type with no scorable ID at all raises ``ValueError``. ``auc``/``pauc``
called directly on one class raise ``ValueError``: nothing here returns 0 or NaN in place of an error.

Official scores (``official_score``; ``mimimi.data.dcase.protocol_for`` picks the protocol from the index's
``layout``; the protocols, their pooled values and descriptions are ``mimimi.data.dcase``'s ``PROTOCOLS``).
Each year's evaluator scores differently, and ``official_score`` follows its code; pAUC is always the
McClish-standardised ``roc_auc_score(y, s, max_fpr=0.1)`` and every group must hold both classes:

* ``"dcase2020"`` (DCASE 2020, and MIMII): AUC and pAUC per (machine type, machine ID); the score is the
  arithmetic mean of all of them together.
* ``"dcase2021"``: AUC and pAUC per (machine type, section, domain), each on that domain's clips only;
  the score is the harmonic mean of all of them pooled, each floored at ``sys.float_info.epsilon``. (The
  2021 evaluator prints no single score: it reports the floored harmonic means of the AUCs and of the
  pAUCs apart, which ``OfficialScore.table`` allows to recompute.)
* ``"dcase2022"`` (2022, 2023, 2024 and 2025, which share the file naming): per (machine type, section),
  AUC (source) on the source-domain normals plus ALL the section's anomalies, AUC (target) likewise with
  the target-domain normals, and one pAUC over all the section's clips; the score is
  ``scipy.stats.hmean(numpy.maximum(values, eps), axis=None)`` over those three values of every type
  and section pooled. The 2025 evaluator was not read: its baseline computes the same figures.

>>> import pandas as pd
>>> scores = pd.DataFrame({
...     "machine_type": "fan", "machine_id": ["00"] * 4 + ["02"] * 4,
...     "path": [f"{l}_id_{i}_{n:08d}.wav" for i in ("00", "02") for l, n in
...              (("normal", 0), ("normal", 1), ("anomaly", 0), ("anomaly", 1))],
...     "label": ["normal", "normal", "anomaly", "anomaly"] * 2,
...     "score": [0.1, 0.2, 0.3, 0.4,   1.0, 1.3, 1.2, 1.4]})
>>> per_id_table(scores)[["machine_id", "n_normal", "n_anomaly", "auc", "pauc"]].round(4)
  machine_id  n_normal  n_anomaly   auc    pauc
0         00         2          2  1.00  1.0000
1         02         2          2  0.75  0.7368
>>> print(results_markdown(per_type_table(scores)))
| machine type | best ID (AUC) | mean AUC over IDs | mean pAUC | pooled AUC |
|---|---|---|---|---|
| fan | 00 (100.00) | 87.50 | 86.84 | 68.75 |
| mean | — | 87.50 | 86.84 | 68.75 |
"""
from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from typing import Literal, NamedTuple

import numpy as np
import pandas as pd
from scipy.stats import hmean
from sklearn.metrics import roc_auc_score

from mimimi import markdown
from mimimi.data.dcase import DOMAINS, PROTOCOLS

LABELS = ("normal", "anomaly")  # y = 0 / 1
REQUIRED_COLUMNS = ("machine_type", "machine_id", "path", "label", "score")
PER_ID_COLUMNS = ["machine_type", "machine_id", "n_normal", "n_anomaly", "auc", "pauc", "note"]
PER_TYPE_COLUMNS = ["machine_type", "n_ids", "n_scored_ids", "mean_auc", "mean_pauc", "best_id", "best_auc",
                    "pooled_auc", "pooled_pauc", "excluded_ids"]
BINARY_COLUMNS = ["threshold", "tp", "fp", "tn", "fn", "precision", "recall", "f1", "accuracy"]
THRESHOLD_COLUMNS = ["machine_type", "machine_id", "threshold_method", *BINARY_COLUMNS]
NO_ANOMALY, NO_NORMAL = "no anomalous clips", "no normal clips"


# --------------------------------------------------------------------------------------------- inputs
def labels_to_y(labels) -> np.ndarray:
    """``"normal"/"anomaly"`` strings, or 0/1 (bool) values -> int array of 0/1; anything else raises.

    >>> labels_to_y(["normal", "anomaly", "normal"]).tolist()
    [0, 1, 0]
    >>> labels_to_y([True, False]).tolist()
    [1, 0]
    """
    a = np.asarray(labels)
    if a.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {a.shape}")
    if a.dtype.kind in "biuf":
        bad = sorted(set(np.unique(a[~np.isin(a, (0, 1))]).tolist()))
        if bad:
            raise ValueError(f"numeric labels must be 0 (normal) or 1 (anomaly); got {bad[:5]}")
        return a.astype(int)
    a = a.astype(str)
    bad = sorted(set(a.tolist()) - set(LABELS))
    if bad:
        raise ValueError(f"labels must be one of {LABELS} (an unlabeled evaluation set cannot be scored); "
                         f"got {bad[:5]}")
    return (a == "anomaly").astype(int)


def _scores_array(s, where: str = "") -> np.ndarray:
    a = np.asarray(s, dtype=float)
    if a.ndim != 1:
        raise ValueError(f"{_at(where)}scores must be 1-D, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{_at(where)}{int((~np.isfinite(a)).sum())} score(s) are NaN or infinite")
    return a


def _at(where: str) -> str:
    return f"{where}: " if where else ""


def _two_class(y, s, where: str) -> tuple[np.ndarray, np.ndarray]:
    y, s = labels_to_y(y), _scores_array(s, where)
    if len(y) != len(s):
        raise ValueError(f"{_at(where)}{len(y)} labels but {len(s)} scores")
    n_anomaly = int(y.sum())
    if n_anomaly == 0 or n_anomaly == len(y):
        raise ValueError(f"{_at(where)}AUC needs both normal and anomalous clips; got {len(y) - n_anomaly} "
                         f"normal and {n_anomaly} anomalous")
    return y, s


def check_scores(scores: pd.DataFrame) -> pd.DataFrame:
    """A validated copy of a per-clip score table: required columns present, IDs as strings, labels
    normal/anomaly, scores finite floats, no clip twice. Raises ``ValueError`` naming what is wrong."""
    missing = [c for c in REQUIRED_COLUMNS if c not in scores.columns]
    if missing:
        raise ValueError(f"scores lack column(s) {missing}; need {list(REQUIRED_COLUMNS)}")
    if len(scores) == 0:
        raise ValueError("scores is empty")
    df = scores.copy()
    for col in ("machine_type", "machine_id", "path"):
        df[col] = df[col].astype(str)
    if "pred_id" in df.columns:
        missing_pred = df["pred_id"].isna()
        if missing_pred.all():  # a model without an ID classifier (the autoencoder): no ID metrics
            df = df.drop(columns="pred_id")
        elif missing_pred.any():
            raise ValueError(f"{int(missing_pred.sum())} clip(s) lack a pred_id while others have one, e.g. "
                             f"{', '.join(df.loc[missing_pred, 'path'].iloc[:3])}")
        else:
            df["pred_id"] = df["pred_id"].astype(str)
    labels_to_y(df["label"])  # raises on "unknown" and anything else
    df["score"] = pd.to_numeric(df["score"], errors="raise").astype(float)
    bad = df.loc[~np.isfinite(df["score"].to_numpy()), "path"]
    if len(bad):
        raise ValueError(f"{len(bad)} clip(s) have a NaN or infinite score, e.g. {', '.join(bad.iloc[:3])}")
    dup = df.loc[df["path"].duplicated(), "path"]
    if len(dup):
        raise ValueError(f"{len(dup)} clip(s) are scored more than once, e.g. {', '.join(dup.iloc[:3])}")
    return df


def group_name(machine_type: str, machine_id: str | None = None) -> str:
    """How errors and notes name a group: ``machine type fan, ID 00``."""
    return f"machine type {machine_type}" + ("" if machine_id is None else f", ID {machine_id}")


# ---------------------------------------------------------------------------------------- AUC, pAUC
def auc(y, s, *, where: str = "") -> float:
    """Area under the ROC curve, ``roc_auc_score(y, s)``; ``y`` labels or 0/1, ``s`` higher = anomalous.

    Raises ``ValueError`` (prefixed with ``where``) when ``y`` holds one class only.

    >>> auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.75
    >>> auc(["normal", "normal"], [0.1, 0.2], where="machine type fan, ID 00")
    Traceback (most recent call last):
    ...
    ValueError: machine type fan, ID 00: AUC needs both normal and anomalous clips; got 2 normal and 0 anomalous
    """
    y, s = _two_class(y, s, where)
    return float(roc_auc_score(y, s))


def pauc(y, s, max_fpr: float = 0.1, *, where: str = "") -> float:
    """Partial AUC over FPR in [0, max_fpr], McClish-standardised as sklearn's ``roc_auc_score(y, s,
    max_fpr=max_fpr)``: ``0.5 * (1 + (A - max_fpr²/2) / (max_fpr - max_fpr²/2))`` for the raw area A.

    >>> pauc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4])
    1.0
    """
    if not 0 < max_fpr <= 1:
        raise ValueError(f"max_fpr must be in (0, 1], got {max_fpr}")
    y, s = _two_class(y, s, where)
    return float(roc_auc_score(y, s, max_fpr=max_fpr))


def _note(n_normal: int, n_anomaly: int) -> str:
    return NO_ANOMALY if n_anomaly == 0 else NO_NORMAL if n_normal == 0 else ""


def per_id_table(scores: pd.DataFrame, max_fpr: float = 0.1) -> pd.DataFrame:
    """One row per (machine_type, machine_id), sorted: columns ``PER_ID_COLUMNS``.

    ``auc``/``pauc`` are fractions in [0, 1]. An ID with one class only gets NaN and a ``note``.
    """
    df = check_scores(scores)
    rows = []
    for (mt, mid), g in df.groupby(["machine_type", "machine_id"], sort=True):
        y, s = labels_to_y(g["label"]), g["score"].to_numpy()
        n_anomaly = int(y.sum())
        n_normal = len(y) - n_anomaly
        note = _note(n_normal, n_anomaly)
        a = p = math.nan
        if not note:
            a, p = auc(y, s, where=group_name(mt, mid)), pauc(y, s, max_fpr, where=group_name(mt, mid))
        rows.append(dict(machine_type=mt, machine_id=mid, n_normal=n_normal, n_anomaly=n_anomaly,
                         auc=a, pauc=p, note=note))
    return pd.DataFrame(rows, columns=PER_ID_COLUMNS)


def per_type_table(scores: pd.DataFrame, max_fpr: float = 0.1, *,
                   per_id: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per machine type: columns ``PER_TYPE_COLUMNS``.

    ``mean_auc``/``mean_pauc``: arithmetic means over the type's scorable IDs (the DCASE protocol);
    ``best_id``/``best_auc``: the ID with the highest AUC (the first in ID order on ties);
    ``pooled_auc``/``pooled_pauc``: one AUC over all the type's clips, every ID pooled (the seed's number,
    for comparison); ``excluded_ids``: the IDs left out of the means, ``", "``-joined (reasons are in the
    per-ID ``note``); ``n_ids``/``n_scored_ids``: IDs seen / IDs in the means. ``per_id`` may be passed to
    avoid recomputing it; a type with no scorable ID raises ``ValueError``.
    """
    df = check_scores(scores)
    per_id = per_id_table(df, max_fpr) if per_id is None else per_id
    rows = []
    for mt, g in df.groupby("machine_type", sort=True):
        ids = per_id[per_id["machine_type"] == mt]
        scored = ids[ids["note"] == ""]
        if scored.empty:
            why = "; ".join(f"ID {r.machine_id}: {r.note}" for r in ids.itertuples())
            raise ValueError(f"{group_name(mt)}: no machine ID has both normal and anomalous clips ({why})")
        best = scored.loc[scored["auc"].idxmax()]
        y, s = labels_to_y(g["label"]), g["score"].to_numpy()
        rows.append(dict(
            machine_type=mt, n_ids=len(ids), n_scored_ids=len(scored),
            mean_auc=float(scored["auc"].mean()), mean_pauc=float(scored["pauc"].mean()),
            best_id=best["machine_id"], best_auc=float(best["auc"]),
            pooled_auc=auc(y, s, where=group_name(mt) + " (pooled)"),
            pooled_pauc=pauc(y, s, max_fpr, where=group_name(mt) + " (pooled)"),
            excluded_ids=", ".join(ids.loc[ids["note"] != "", "machine_id"]),
        ))
    return pd.DataFrame(rows, columns=PER_TYPE_COLUMNS)


# ------------------------------------------------------------------------------ threshold, P/R/F1
def youden_threshold(y, s, *, where: str = "") -> float:
    """The score threshold maximising Youden's J = TPR − FPR on the ROC curve; a clip is anomalous if
    ``score >= threshold``. Always one of the scores (never sklearn's leading ``inf``); on ties in J the
    highest such threshold (fewest alarms), J compared exactly. Chosen on labelled data, so on test data
    it is an optimistic (oracle) operating point, as the seed's.

    >>> youden_threshold([0, 0, 0, 0, 1, 1, 1], [0.1, 0.2, 0.3, 0.4, 0.35, 0.5, 0.6])
    0.35
    """
    y, s = _two_class(y, s, where)
    thr = np.unique(s)[::-1]  # candidate thresholds, descending: every ROC vertex
    pos, neg = np.sort(s[y == 1]), np.sort(s[y == 0])
    tp = len(pos) - np.searchsorted(pos, thr, side="left")  # clips with score >= threshold
    fp = len(neg) - np.searchsorted(neg, thr, side="left")
    # J = tp/P - fp/N, compared as the integer J*P*N so that ties are exact (float J can differ by an ulp)
    j = tp.astype(np.int64) * len(neg) - fp.astype(np.int64) * len(pos)
    return float(thr[int(np.argmax(j))])  # first maximum = the highest threshold on ties


class BinaryMetrics(NamedTuple):
    """Detection quality at one threshold; positive = anomaly. Undefined ratios (0/0) are 0.0, as
    sklearn's ``zero_division=0``."""

    threshold: float
    tp: int
    fp: int
    tn: int
    fn: int
    precision: float
    recall: float
    f1: float
    accuracy: float


def _ratio(a: float, b: float) -> float:
    return float(a / b) if b else 0.0


def binary_metrics_from_counts(tp: int, fp: int, tn: int, fn: int, threshold: float = math.nan) -> BinaryMetrics:
    """P/R/F1/accuracy from confusion counts (e.g. summed over the IDs of a type).

    >>> binary_metrics_from_counts(3, 1, 3, 0).f1
    0.8571428571428571
    """
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    return BinaryMetrics(threshold=float(threshold), tp=int(tp), fp=int(fp), tn=int(tn), fn=int(fn),
                         precision=precision, recall=recall, f1=_ratio(2 * tp, 2 * tp + fp + fn),
                         accuracy=_ratio(tp + tn, tp + fp + tn + fn))


def binary_metrics(y, s, threshold: float) -> BinaryMetrics:
    """Precision, recall, F1, accuracy and TP/FP/TN/FN when ``score >= threshold`` flags an anomaly.

    >>> m = binary_metrics([0, 0, 0, 0, 1, 1, 1], [0.1, 0.2, 0.3, 0.4, 0.35, 0.5, 0.6], 0.35)
    >>> (m.tp, m.fp, m.tn, m.fn), m.precision, m.recall
    ((3, 1, 3, 0), 0.75, 1.0)
    """
    y, s = labels_to_y(y), _scores_array(s)
    if len(y) != len(s):
        raise ValueError(f"{len(y)} labels but {len(s)} scores")
    if not np.isfinite(threshold):
        raise ValueError(f"threshold must be finite, got {threshold}")
    pred = (s >= threshold).astype(int)
    tp, fp = int(((pred == 1) & (y == 1)).sum()), int(((pred == 1) & (y == 0)).sum())
    tn, fn = int(((pred == 0) & (y == 0)).sum()), int(((pred == 0) & (y == 1)).sum())
    return binary_metrics_from_counts(tp, fp, tn, fn, threshold)


def confusion(y_true, y_pred, labels: Sequence) -> np.ndarray:
    """Confusion matrix (len(labels), len(labels)): rows = true, columns = predicted, in ``labels``
    order, as ``sklearn.metrics.confusion_matrix``; but a value outside ``labels`` raises instead of being
    dropped. For the anomaly matrix pass ``labels=(0, 1)`` ([[TN, FP], [FN, TP]]); for the ID matrix
    ``machine_id`` vs ``pred_id`` with the type's IDs.

    >>> confusion(["00", "02", "02"], ["00", "00", "02"], labels=["00", "02"]).tolist()
    [[1, 0], [1, 1]]
    """
    t, p = np.asarray(y_true), np.asarray(y_pred)
    if t.shape != p.shape or t.ndim != 1:
        raise ValueError(f"y_true and y_pred must be 1-D of equal length, got {t.shape} and {p.shape}")
    labels = list(labels)
    if len(set(labels)) != len(labels):
        raise ValueError(f"labels repeat: {labels}")
    index = {v: i for i, v in enumerate(labels)}
    unknown = sorted({str(v) for v in (*t.tolist(), *p.tolist()) if v not in index})
    if unknown:
        raise ValueError(f"value(s) {unknown[:5]} not among labels {labels}")
    m = np.zeros((len(labels), len(labels)), dtype=np.int64)
    np.add.at(m, ([index[v] for v in t.tolist()], [index[v] for v in p.tolist()]), 1)
    return m


def threshold_table(scores: pd.DataFrame,
                    thresholds: float | Mapping[tuple[str, str], float] | None = None) -> pd.DataFrame:
    """Per (machine_type, machine_id): the threshold and ``binary_metrics`` at it; columns
    ``THRESHOLD_COLUMNS``.

    ``thresholds`` None: Youden's J per ID (``threshold_method`` "youden"; an ID with one class gets NaN
    and method ""). A float: that threshold for every ID ("given"). A mapping ``{(type, id): threshold}``
    (e.g. fitted on normal-only validation scores): must cover every ID, else ``ValueError``; a NaN there
    means no threshold for that ID (NaN row, method "").
    """
    df = check_scores(scores)
    rows = []
    for (mt, mid), g in df.groupby(["machine_type", "machine_id"], sort=True):
        y, s = labels_to_y(g["label"]), g["score"].to_numpy()
        if thresholds is None:
            if _note(len(y) - int(y.sum()), int(y.sum())):
                rows.append(dict(machine_type=mt, machine_id=mid, threshold_method="",
                                 **{c: math.nan for c in BINARY_COLUMNS}))
                continue
            thr, method = youden_threshold(y, s, where=group_name(mt, mid)), "youden"
        elif isinstance(thresholds, Mapping):
            if (mt, mid) not in thresholds:
                raise ValueError(f"{group_name(mt, mid)}: no threshold given (keys are (type, id) tuples)")
            thr, method = float(thresholds[(mt, mid)]), "given"
            if math.isnan(thr):  # the model has no threshold for this ID (too few normal clips to fit one)
                rows.append(dict(machine_type=mt, machine_id=mid, threshold_method="",
                                 **{c: math.nan for c in BINARY_COLUMNS}))
                continue
        else:
            thr, method = float(thresholds), "given"
        rows.append(dict(machine_type=mt, machine_id=mid, threshold_method=method,
                         **binary_metrics(y, s, thr)._asdict()))
    out = pd.DataFrame(rows, columns=THRESHOLD_COLUMNS)
    for c in ("tp", "fp", "tn", "fn"):
        out[c] = out[c].astype("Int64")  # counts stay integers; NA where no threshold
    return out


# ---------------------------------------------------------------------------------- official scores
OFFICIAL_COLUMNS = {  # the official_score table of each protocol
    "dcase2020": ["machine_type", "machine_id", "n_normal", "n_anomaly", "auc", "pauc"],
    "dcase2021": ["machine_type", "section", "domain", "n_normal", "n_anomaly", "auc", "pauc"],
    "dcase2022": ["machine_type", "section", "n_normal_source", "n_normal_target", "n_anomaly",
                  "auc_source", "auc_target", "pauc"],
}
OFFICIAL_DESCRIPTIONS = {name: p.description for name, p in PROTOCOLS.items()}  # how each pools (a search prints it)


class OfficialScore(NamedTuple):
    """A year's official score. ``score``: a fraction in [0, 1]; ``table``: the per-group figures the
    score is computed from, columns ``OFFICIAL_COLUMNS[protocol]`` (fractions; ``machine_id`` holds the
    section for 2021+, named ``section`` here)."""

    protocol: str
    score: float
    table: pd.DataFrame

    @property
    def means(self) -> dict[str, float]:
        """Arithmetic mean over the table's groups of each pooled metric (``PROTOCOLS[protocol].pooled``), as the
        evaluators' "arithmetic mean" rows; with one value per group and metric, their mean is the
        2023/2024 evaluators' "a-mean"."""
        return {c: float(self.table[c].mean()) for c in PROTOCOLS[self.protocol].pooled}


def _official_frame(scores: pd.DataFrame, protocol: str) -> pd.DataFrame:
    """``check_scores`` plus the ``domain`` column (required from 2021 on); hidden labels or domains (an
    evaluation set without ground truth) are refused by count and first path."""
    need = [*REQUIRED_COLUMNS, *(() if protocol == "dcase2020" else ("domain",))]
    missing = [c for c in need if c not in scores.columns]
    if missing:
        raise ValueError(f"scores lack column(s) {missing}; the {protocol} protocol needs {need}")
    for col in ("label", "domain"):
        if col in scores.columns:
            unknown = scores[col].astype(str) == "unknown"
            if unknown.any():
                raise ValueError(f"{int(unknown.sum())} clip(s) have {col} 'unknown' (no ground truth: an "
                                 f"evaluation set cannot be scored), e.g. {scores.loc[unknown, 'path'].iloc[0]}")
    df = check_scores(scores)
    if "domain" in df.columns:
        df["domain"] = df["domain"].astype(str)
        bad = ~df["domain"].isin(DOMAINS)
        if bad.any():
            raise ValueError(f"{int(bad.sum())} clip(s) have a domain other than {DOMAINS} "
                             f"({sorted(set(df.loc[bad, 'domain']))[:5]}), e.g. {df.loc[bad, 'path'].iloc[0]}")
    return df


def _floored_hmean(values) -> float:
    # as the evaluators: scipy.stats.hmean(numpy.maximum(x, sys.float_info.epsilon), axis=None)
    return float(hmean(np.maximum(np.asarray(values, dtype=float), sys.float_info.epsilon), axis=None))


def domain_rows(y, domains, domain: str, protocol: str) -> np.ndarray:
    """Which clips of one section an official per-domain AUC uses: the domain's own test clips (2021), or
    the domain's normals and every anomaly of the section (2022–2025: the evaluators'
    ``(y_domain == domain_idx) | (y_true_all != 0)``)."""
    keep = np.asarray(domains) == domain
    return keep if protocol == "dcase2021" else keep | (np.asarray(y) == 1)


def official_score(scores: pd.DataFrame, protocol: str, max_fpr: float = 0.1) -> OfficialScore:
    """The official score of ``protocol`` (one of ``PROTOCOLS``; see the module docstring) on a per-clip
    table with ``machine_type``, ``machine_id`` (the section for 2021+), ``path``, ``domain`` (``"source"``
    / ``"target"``; not used by, nor needed for, ``"dcase2020"``), ``label`` and ``score``.

    Raises ``ValueError`` on an unknown protocol, on clips with label or domain ``"unknown"``, and on a
    group where an AUC cannot be computed (one class only), naming it: no score silently becomes NaN.

    >>> scores = pd.DataFrame({
    ...     "machine_type": "fan", "machine_id": "00", "path": [f"c{i}.wav" for i in range(6)],
    ...     "domain": ["source"] * 3 + ["target"] * 3,
    ...     "label": ["normal", "normal", "anomaly", "normal", "normal", "anomaly"],
    ...     "score": [0.1, 0.2, 0.5, 0.3, 0.6, 0.7]})
    >>> r = official_score(scores, "dcase2022")  # AUC (target): 0.6 outranks the anomaly at 0.5
    >>> r.table[["section", "auc_source", "auc_target", "pauc"]].round(4)
      section  auc_source  auc_target    pauc
    0      00         1.0        0.75  0.7368
    >>> round(r.score, 4)  # 3 / (1/1 + 1/0.75 + 19/14)
    0.8129
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; known: {list(PROTOCOLS)}")
    if not 0 < max_fpr <= 1:
        raise ValueError(f"max_fpr must be in (0, 1], got {max_fpr}")
    df = _official_frame(scores, protocol)
    rows = []
    if protocol == "dcase2020":
        for (mt, mid), g in df.groupby(["machine_type", "machine_id"], sort=True):
            y, s, where = labels_to_y(g["label"]), g["score"].to_numpy(), group_name(mt, mid)
            rows.append(dict(machine_type=mt, machine_id=mid, n_normal=int((y == 0).sum()), n_anomaly=int(y.sum()),
                             auc=auc(y, s, where=where), pauc=pauc(y, s, max_fpr, where=where)))
    elif protocol == "dcase2021":  # each domain's test clips alone (the 2021 source_test / target_test files)
        for (mt, sec, dom), g in df.groupby(["machine_type", "machine_id", "domain"], sort=True):
            y, s = labels_to_y(g["label"]), g["score"].to_numpy()
            where = f"{group_name(mt)}, section {sec}, {dom} domain"
            rows.append(dict(machine_type=mt, section=sec, domain=dom, n_normal=int((y == 0).sum()),
                             n_anomaly=int(y.sum()), auc=auc(y, s, where=where),
                             pauc=pauc(y, s, max_fpr, where=where)))
    else:  # dcase2022: AUC per domain = that domain's normals vs ALL anomalies; pAUC over the whole section
        for (mt, sec), g in df.groupby(["machine_type", "machine_id"], sort=True):
            y, s, d = labels_to_y(g["label"]), g["score"].to_numpy(), g["domain"].to_numpy()
            where = f"{group_name(mt)}, section {sec}"
            row = dict(machine_type=mt, section=sec, n_normal_source=int(((y == 0) & (d == "source")).sum()),
                       n_normal_target=int(((y == 0) & (d == "target")).sum()), n_anomaly=int(y.sum()))
            for dom in DOMAINS:
                keep = domain_rows(y, d, dom, protocol)
                row[f"auc_{dom}"] = auc(y[keep], s[keep],
                                        where=f"{where}, AUC ({dom}: {dom}-domain normals + all anomalies)")
            row["pauc"] = pauc(y, s, max_fpr, where=f"{where}, pAUC (all clips)")
            rows.append(row)
    table = pd.DataFrame(rows, columns=OFFICIAL_COLUMNS[protocol])
    return _scored(table, protocol)


def _scored(table: pd.DataFrame, protocol: str) -> OfficialScore:
    values = table[list(PROTOCOLS[protocol].pooled)].to_numpy(dtype=float)
    score = float(values.mean()) if PROTOCOLS[protocol].mean == "arithmetic" else _floored_hmean(values)
    return OfficialScore(protocol=protocol, score=score, table=table)


def pooled_official(results: Sequence[OfficialScore]) -> OfficialScore:
    """One official score over several evaluations of one protocol (a search evaluates each machine type
    apart; the challenge pools every type's and section's figures into one mean).

    >>> a = OfficialScore("dcase2022", 0.0, pd.DataFrame({"machine_type": ["fan"], "auc_source": [0.8],
    ...                   "auc_target": [0.6], "pauc": [0.6]}))
    >>> b = a._replace(table=a.table.assign(machine_type="valve", auc_target=0.4))
    >>> round(pooled_official([a, b]).score, 4)  # 6 / (1/0.8 + 1/0.6 + 1/0.6 + 1/0.8 + 1/0.4 + 1/0.6)
    0.6
    """
    protocols = sorted({r.protocol for r in results})
    if len(protocols) != 1:
        raise ValueError(f"cannot pool official scores of protocols {protocols or 'none'}: one protocol at a time")
    return _scored(pd.concat([r.table for r in results], ignore_index=True), protocols[0])


# ------------------------------------------------------------------------------------ aggregation
def aggregate(segment_scores, how: Literal["mean", "max"] = "mean") -> float:
    """A clip's score from its per-segment scores (1-D): their mean (the paper's) or max.

    >>> aggregate([1.0, 2.0, 6.0]), aggregate([1.0, 2.0, 6.0], how="max")
    (3.0, 6.0)
    """
    a = np.asarray(segment_scores, dtype=float)
    if a.ndim != 1 or a.size == 0:
        raise ValueError(f"segment scores must be a non-empty 1-D array, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{int((~np.isfinite(a)).sum())} of {a.size} segment score(s) are NaN or infinite")
    if how == "mean":
        return float(a.mean())
    if how == "max":
        return float(a.max())
    raise ValueError(f"how must be 'mean' or 'max', got {how!r}")


def percent(v: float) -> float:
    """A rate (AUC, pAUC, accuracy, precision, recall, F1) as MIMIMI shows and logs it: percent, two decimals.

    >>> percent(0.8333333333333334)
    83.33
    """
    return round(100 * float(v), 2)


# -------------------------------------------------------------------------------------- markdown
def _pct(v: float) -> str:
    return "—" if pd.isna(v) else f"{100 * v:.2f}"


def results_markdown(per_type: pd.DataFrame) -> str:
    """The results table (AUC/pAUC in %, 2 decimals) with a mean row over the types, and a footnote
    naming the IDs left out of the means, if any."""
    rows = [[r.machine_type, f"{r.best_id} ({_pct(r.best_auc)})", _pct(r.mean_auc), _pct(r.mean_pauc),
             _pct(r.pooled_auc)] for r in per_type.itertuples()]
    rows.append(["mean", None, *(_pct(per_type[c].mean()) for c in ("mean_auc", "mean_pauc", "pooled_auc"))])
    lines = [markdown.table(["machine type", "best ID (AUC)", "mean AUC over IDs", "mean pAUC", "pooled AUC"], rows)]
    excluded = [f"{r.machine_type} {r.excluded_ids}" for r in per_type.itertuples() if r.excluded_ids]
    if excluded:
        lines += ["", "IDs excluded from the means (one class only; see the per-ID notes): "
                  + "; ".join(excluded) + "."]
    return "\n".join(lines)


def official_markdown(result: OfficialScore) -> str:
    """The official score as markdown: the per-group figures (%, 2 decimals), an arithmetic-mean row, and
    the score with the protocol it follows.

    >>> table = pd.DataFrame([dict(machine_type="fan", machine_id="00", n_normal=2, n_anomaly=2, auc=0.75,
    ...                            pauc=0.736842)])
    >>> print(official_markdown(OfficialScore("dcase2020", 0.743421, table)))
    | machine type | machine ID | AUC | pAUC |
    |---|---|---|---|
    | fan | 00 | 75.00 | 73.68 |
    | arithmetic mean | — | 75.00 | 73.68 |
    <BLANKLINE>
    Official score: 74.34 (DCASE 2020: arithmetic mean of AUC and pAUC over every machine type and machine ID).
    """
    if result.protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {result.protocol!r}; known: {list(PROTOCOLS)}")
    metric_cols = PROTOCOLS[result.protocol].pooled
    key_cols, head = {"dcase2020": (["machine_id"], ["machine ID", "AUC", "pAUC"]),
                      "dcase2021": (["section", "domain"], ["section", "domain", "AUC", "pAUC"]),
                      "dcase2022": (["section"], ["section", "AUC (source)", "AUC (target)", "pAUC"])}[result.protocol]
    rows = [[r["machine_type"], *(r[c] for c in key_cols), *(_pct(r[c]) for c in metric_cols)]
            for r in result.table.to_dict("records")]
    means = result.means
    rows.append(["arithmetic mean", *[None] * len(key_cols), *(_pct(means[c]) for c in metric_cols)])
    lines = [markdown.table(["machine type", *head], rows), "", f"Official score: {_pct(result.score)} ({OFFICIAL_DESCRIPTIONS[result.protocol]})."]
    return "\n".join(lines)
