"""Evaluation metrics (DCASE 2020 Task 2 protocol): small pure functions on per-clip scores.

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
from collections.abc import Mapping, Sequence
from typing import Literal, NamedTuple

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

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
    lines = ["| machine type | best ID (AUC) | mean AUC over IDs | mean pAUC | pooled AUC |",
             "|---|---|---|---|---|"]
    for r in per_type.itertuples():
        lines.append(f"| {r.machine_type} | {r.best_id} ({_pct(r.best_auc)}) | {_pct(r.mean_auc)} | "
                     f"{_pct(r.mean_pauc)} | {_pct(r.pooled_auc)} |")
    lines.append(f"| mean | — | {_pct(per_type['mean_auc'].mean())} | {_pct(per_type['mean_pauc'].mean())} | "
                 f"{_pct(per_type['pooled_auc'].mean())} |")
    excluded = [f"{r.machine_type} {r.excluded_ids}" for r in per_type.itertuples() if r.excluded_ids]
    if excluded:
        lines += ["", "IDs excluded from the means (one class only; see the per-ID notes): "
                  + "; ".join(excluded) + "."]
    return "\n".join(lines)
