"""mimimi.metrics against sklearn and against hand-computed cases."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support, roc_auc_score

from mimimi import metrics as M


def make_scores(groups: dict[tuple[str, str], tuple[list[float], list[float]]]) -> pd.DataFrame:
    """{(type, id): (normal scores, anomaly scores)} -> a per-clip score table in the DCASE naming."""
    rows = []
    for (mt, mid), (normal, anomaly) in groups.items():
        for label, values in (("normal", normal), ("anomaly", anomaly)):
            for i, v in enumerate(values):
                rows.append(dict(machine_type=mt, machine_id=mid, path=f"/d/{mt}/test/{label}_id_{mid}_{i:08d}.wav",
                                 label=label, score=float(v)))
    return pd.DataFrame(rows)


def random_case(seed: int, n0: int = 60, n1: int = 40, ties: bool = False):
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.r_[np.zeros(n0, int), np.ones(n1, int)])
    s = rng.normal(size=n0 + n1) + 0.8 * y
    return y, (np.round(s, 1) if ties else s)


# ------------------------------------------------------------------------------------ AUC / pAUC
@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("ties", [False, True])
def test_auc_and_pauc_equal_sklearn(seed, ties):
    y, s = random_case(seed, ties=ties)
    assert M.auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    for max_fpr in (0.1, 0.05, 0.3):
        assert M.pauc(y, s, max_fpr) == pytest.approx(roc_auc_score(y, s, max_fpr=max_fpr), abs=1e-12)
    labels = np.where(y == 1, "anomaly", "normal")  # string labels give the same numbers
    assert M.auc(labels, s) == M.auc(y, s) and M.pauc(labels, s) == M.pauc(y, s)


def test_perfect_and_reversed_separation():
    y, s = [0, 0, 0, 1, 1], [0.1, 0.2, 0.3, 0.7, 0.9]
    assert M.auc(y, s) == 1.0 and M.pauc(y, s) == 1.0
    rev = [-v for v in s]
    assert M.auc(y, rev) == 0.0
    # raw partial area 0 -> McClish 0.5 * (1 + (0 - 0.005) / (0.1 - 0.005)) = 9/19
    assert M.pauc(y, rev) == pytest.approx(9 / 19, abs=1e-12)


def test_pauc_by_hand_mcclish():
    # 10 normals scored 0..9; anomalies at 9.5 (above all), 8.5, 4.5, -1.
    # ROC up to FPR 0.1: TPR 0.25 on [0, 0.1] -> raw area 0.025.
    y = [0] * 10 + [1] * 4
    s = list(range(10)) + [9.5, 8.5, 4.5, -1]
    min_area, max_area = 0.1 ** 2 / 2, 0.1
    assert M.pauc(y, s, 0.1) == pytest.approx(0.5 * (1 + (0.025 - min_area) / (max_area - min_area)), abs=1e-12)
    assert M.pauc(y, s, 0.1) == pytest.approx(23 / 38, abs=1e-12)
    assert M.auc(y, s) == pytest.approx((10 + 9 + 5 + 0) / 40, abs=1e-12)  # pairs won / pairs


@pytest.mark.parametrize("fn", [M.auc, M.pauc, M.youden_threshold])
def test_one_class_raises_with_the_group_name(fn):
    with pytest.raises(ValueError, match=r"machine type fan, ID 02: .*2 normal and 0 anomalous"):
        fn(["normal", "normal"], [0.1, 0.2], where=M.group_name("fan", "02"))
    with pytest.raises(ValueError, match="0 normal and 3 anomalous"):
        fn([1, 1, 1], [0.1, 0.2, 0.3])


@pytest.mark.parametrize("y, s, match", [
    ([0, 1, 2], [0.1, 0.2, 0.3], "0 \\(normal\\) or 1"),
    (["normal", "unknown"], [0.1, 0.2], "unknown"),
    ([0, 1], [0.1, float("nan")], "NaN or infinite"),
    ([0, 1], [0.1, float("inf")], "NaN or infinite"),
    ([0, 1, 1], [0.1, 0.2], "3 labels but 2 scores"),
])
def test_bad_inputs_raise(y, s, match):
    with pytest.raises(ValueError, match=match):
        M.auc(y, s)


# -------------------------------------------------------------------------------------- tables
def test_per_id_table_matches_sklearn_per_group():
    rng = np.random.default_rng(1)
    groups = {(mt, mid): (rng.normal(size=30).tolist(), (rng.normal(size=20) + 1).tolist())
              for mt in ("fan", "pump") for mid in ("00", "02", "04")}
    scores = make_scores(groups)
    table = M.per_id_table(scores)
    assert list(table.columns) == M.PER_ID_COLUMNS
    assert list(zip(table.machine_type, table.machine_id)) == sorted(groups)
    for r in table.itertuples():
        normal, anomaly = groups[(r.machine_type, r.machine_id)]
        y, s = [0] * len(normal) + [1] * len(anomaly), normal + anomaly
        assert (r.n_normal, r.n_anomaly, r.note) == (30, 20, "")
        assert r.auc == pytest.approx(roc_auc_score(y, s), abs=1e-12)
        assert r.pauc == pytest.approx(roc_auc_score(y, s, max_fpr=0.1), abs=1e-12)


def test_per_type_mean_is_arithmetic_mean_over_ids_not_pooled():
    rng = np.random.default_rng(2)
    # ID 02's scores sit 2 above ID 00's: each ID separates perfectly, but pooled, ID 02's normals
    # outrank ID 00's anomalies -> pooled AUC = 3/4 (equal counts), mean over IDs = 1.
    groups = {("fan", "00"): (rng.uniform(0, 1, 10).tolist(), rng.uniform(1, 2, 10).tolist()),
              ("fan", "02"): (rng.uniform(2, 3, 10).tolist(), rng.uniform(3, 4, 10).tolist())}
    t = M.per_type_table(make_scores(groups)).iloc[0]
    assert t.mean_auc == 1.0 and t.mean_pauc == 1.0
    assert t.pooled_auc == pytest.approx(0.75, abs=1e-12)
    # and on unequal per-ID AUCs the mean is the plain mean of the per-ID numbers
    groups = {("pump", mid): (rng.normal(size=40).tolist(), (rng.normal(size=25 + 5 * k) + k).tolist())
              for k, mid in enumerate(("00", "02", "04"))}
    scores = make_scores(groups)
    per_id, t = M.per_id_table(scores), M.per_type_table(scores).iloc[0]
    assert t.mean_auc == pytest.approx(per_id.auc.mean(), abs=1e-12)
    assert t.mean_pauc == pytest.approx(per_id.pauc.mean(), abs=1e-12)
    assert (t.best_id, t.best_auc) == (per_id.machine_id[per_id.auc.idxmax()], per_id.auc.max())
    assert t.pooled_auc == pytest.approx(roc_auc_score(scores.label == "anomaly", scores.score), abs=1e-12)
    assert t.pooled_pauc == pytest.approx(roc_auc_score(scores.label == "anomaly", scores.score, max_fpr=0.1))
    assert (t.n_ids, t.n_scored_ids, t.excluded_ids) == (3, 3, "")


def test_single_class_ids_are_recorded_and_excluded():
    groups = {("fan", "00"): ([0.1, 0.2, 0.3], [0.25, 0.9]),
              ("fan", "02"): ([0.1, 0.5], []),           # no anomalous clips
              ("fan", "04"): ([], [0.3, 0.4]),           # no normal clips
              ("fan", "06"): ([0.1, 0.4], [0.2, 0.9])}
    scores = make_scores(groups)
    per_id = M.per_id_table(scores).set_index("machine_id")
    assert per_id.loc["02", "note"] == M.NO_ANOMALY and per_id.loc["04", "note"] == M.NO_NORMAL
    assert per_id.loc[["02", "04"], ["auc", "pauc"]].isna().all().all()
    assert per_id.loc[["00", "06"], "note"].tolist() == ["", ""]
    t = M.per_type_table(scores).iloc[0]
    assert t.excluded_ids == "02, 04" and (t.n_ids, t.n_scored_ids) == (4, 2)
    assert t.mean_auc == pytest.approx((per_id.loc["00", "auc"] + per_id.loc["06", "auc"]) / 2)
    assert "fan 02, 04" in M.results_markdown(M.per_type_table(scores))
    with pytest.raises(ValueError, match=r"machine type pump: no machine ID .*ID 00: no anomalous clips"):
        M.per_type_table(make_scores({**groups, ("pump", "00"): ([0.1, 0.2], [])}))


@pytest.mark.parametrize("mutate, match", [
    (lambda d: d.drop(columns="score"), "lack column"),
    (lambda d: d.assign(score=d.score.where(d.index != 3, float("nan"))), "NaN or infinite score, e.g. /d/fan"),
    (lambda d: pd.concat([d, d.iloc[:1]]), "scored more than once"),
    (lambda d: d.assign(label=d.label.where(d.index != 0, "unknown")), "unknown"),
    (lambda d: d.iloc[:0], "empty"),
])
def test_score_table_validation(mutate, match):
    scores = make_scores({("fan", "00"): ([0.1, 0.2], [0.3, 0.4])})
    with pytest.raises(ValueError, match=match):
        M.per_id_table(mutate(scores))


# --------------------------------------------------------------------------- threshold, P/R/F1
def test_youden_threshold_constructed():
    # at 0.5: TPR 2/3, FPR 0 (J 0.667); at 0.35: TPR 1, FPR 1/4 (J 0.75, the maximum)
    y, s = [0, 0, 0, 0, 1, 1, 1], [0.1, 0.2, 0.3, 0.4, 0.35, 0.5, 0.6]
    assert M.youden_threshold(y, s) == 0.35
    assert M.youden_threshold(y, [v + 10 for v in s]) == pytest.approx(10.35)
    assert M.youden_threshold([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 0.8  # highest of the J = 1 thresholds


@pytest.mark.parametrize("seed", range(4))
def test_youden_threshold_maximises_j_by_brute_force(seed):
    y, s = random_case(seed, ties=seed % 2 == 1)
    thr = M.youden_threshold(y, s)
    j = {t: ((s >= t) & (y == 1)).sum() / y.sum() - ((s >= t) & (y == 0)).sum() / (y == 0).sum() for t in np.unique(s)}
    best = max(j.values())
    assert j[thr] == pytest.approx(best, abs=1e-12)
    assert thr == max(t for t, v in j.items() if v >= best - 1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_binary_metrics_equal_sklearn(seed):
    y, s = random_case(seed)
    thr = float(np.quantile(s, 0.3 + 0.1 * seed))
    m = M.binary_metrics(y, s, thr)
    pred = (s >= thr).astype(int)
    p, r, f, _ = precision_recall_fscore_support(y, pred, average="binary", zero_division=0)
    assert (m.precision, m.recall, m.f1) == pytest.approx((p, r, f), abs=1e-12)
    assert m.accuracy == pytest.approx(accuracy_score(y, pred), abs=1e-12)
    assert [[m.tn, m.fp], [m.fn, m.tp]] == confusion_matrix(y, pred, labels=[0, 1]).tolist()
    assert m.threshold == thr


def test_binary_metrics_zero_division_and_bad_threshold():
    m = M.binary_metrics([0, 1, 1], [0.1, 0.2, 0.3], threshold=5.0)  # nothing flagged
    assert (m.tp, m.fp, m.tn, m.fn) == (0, 0, 1, 2) and (m.precision, m.recall, m.f1) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="finite"):
        M.binary_metrics([0, 1], [0.1, 0.2], float("nan"))


def test_confusion_equals_sklearn_and_refuses_unknown_values():
    rng = np.random.default_rng(3)
    labels = ["00", "02", "04", "06"]
    t, p = rng.choice(labels, 200), rng.choice(labels, 200)
    assert M.confusion(t, p, labels).tolist() == confusion_matrix(t, p, labels=labels).tolist()
    order = labels[::-1]
    assert M.confusion(t, p, order).tolist() == confusion_matrix(t, p, labels=order).tolist()
    y, pred = rng.integers(0, 2, 50), rng.integers(0, 2, 50)
    assert M.confusion(y, pred, (0, 1)).tolist() == confusion_matrix(y, pred, labels=[0, 1]).tolist()
    with pytest.raises(ValueError, match=r"\['08'\] not among labels"):
        M.confusion(["00", "08"], ["00", "00"], labels)  # sklearn would drop the row silently


def test_threshold_table_modes():
    scores = make_scores({("fan", "00"): ([0.1, 0.2, 0.3, 0.4], [0.35, 0.5, 0.6]),
                          ("fan", "02"): ([0.1, 0.2], [])})
    t = M.threshold_table(scores)
    assert list(t.columns) == M.THRESHOLD_COLUMNS
    t = t.set_index("machine_id")
    assert t.loc["00", "threshold"] == 0.35 and t.loc["00", "threshold_method"] == "youden"
    assert (t.loc["00", "tp"], t.loc["00", "fp"], t.loc["00", "tn"], t.loc["00", "fn"]) == (3, 1, 3, 0)
    assert math.isnan(t.loc["02", "threshold"]) and pd.isna(t.loc["02", "tp"]) and t.loc["02", "threshold_method"] == ""
    g = M.threshold_table(scores, 0.25).set_index("machine_id")
    assert (g.threshold_method == "given").all() and g.loc["02", "fp"] == 0 and g.loc["02", "tn"] == 2
    m = M.threshold_table(scores, {("fan", "00"): 0.55, ("fan", "02"): 0.15}).set_index("machine_id")
    assert (m.loc["00", "tp"], m.loc["02", "fp"]) == (1, 1)
    with pytest.raises(ValueError, match="machine type fan, ID 02: no threshold"):
        M.threshold_table(scores, {("fan", "00"): 0.5})
    # NaN in the mapping: the model has no threshold for that ID, so no decisions for it
    n = M.threshold_table(scores, {("fan", "00"): 0.55, ("fan", "02"): math.nan}).set_index("machine_id")
    assert n.loc["00", "tp"] == 1 and math.isnan(n.loc["02", "threshold"]) and pd.isna(n.loc["02", "tp"])


# -------------------------------------------------------------------------- aggregate, markdown
def test_aggregate():
    seg = np.array([0.5, 1.5, 4.0])
    assert M.aggregate(seg) == 2.0 and M.aggregate(seg, "mean") == 2.0 and M.aggregate(seg, "max") == 4.0
    assert isinstance(M.aggregate(seg), float)
    for bad, match in (([], "non-empty"), ([[1.0]], "1-D"), ([1.0, float("nan")], "NaN")):
        with pytest.raises(ValueError, match=match):
            M.aggregate(bad)
    with pytest.raises(ValueError, match="'median'"):
        M.aggregate(seg, "median")


def test_results_markdown_is_exact():
    per_type = pd.DataFrame([
        dict(machine_type="fan", n_ids=4, n_scored_ids=4, mean_auc=0.8, mean_pauc=0.6, best_id="02",
             best_auc=0.912345, pooled_auc=0.75, pooled_pauc=0.55, excluded_ids=""),
        dict(machine_type="valve", n_ids=4, n_scored_ids=3, mean_auc=0.9, mean_pauc=0.70005, best_id="00",
             best_auc=0.99999, pooled_auc=0.8, pooled_pauc=0.6, excluded_ids="06"),
        dict(machine_type="pump", n_ids=4, n_scored_ids=4, mean_auc=0.4, mean_pauc=0.5, best_id="04",
             best_auc=0.6, pooled_auc=0.2, pooled_pauc=0.5, excluded_ids=""),
    ], columns=M.PER_TYPE_COLUMNS)
    assert M.results_markdown(per_type) == "\n".join([
        "| machine type | best ID (AUC) | mean AUC over IDs | mean pAUC | pooled AUC |",
        "|---|---|---|---|---|",
        "| fan | 02 (91.23) | 80.00 | 60.00 | 75.00 |",
        "| valve | 00 (100.00) | 90.00 | 70.00 | 80.00 |",
        "| pump | 04 (60.00) | 40.00 | 50.00 | 20.00 |",
        "| mean | — | 70.00 | 60.00 | 58.33 |",
        "",
        "IDs excluded from the means (one class only; see the per-ID notes): valve 06.",
    ])
