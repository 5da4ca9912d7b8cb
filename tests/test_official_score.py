"""mimimi.metrics.official_score against hand-computed cases and against the evaluators' own formulas,
re-implemented here the way their code loops over machines, sections and domains."""
from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest
import scipy.stats
from sklearn import metrics as skm

from mimimi import metrics as M
from mimimi.data import dcase

EPS = sys.float_info.epsilon


def mcclish(raw_area: float, max_fpr: float = 0.1) -> float:
    """sklearn's standardised pAUC from the raw area under the ROC curve on FPR in [0, max_fpr]."""
    min_area, max_area = max_fpr ** 2 / 2, max_fpr
    return 0.5 * (1 + (raw_area - min_area) / (max_area - min_area))


def clips(groups: dict[tuple, tuple[list[float], list[float]]]) -> pd.DataFrame:
    """{(type, id or section, domain): (normal scores, anomaly scores)} -> a per-clip score table."""
    rows = []
    for (mt, sec, dom), (normal, anomaly) in groups.items():
        for label, values in (("normal", normal), ("anomaly", anomaly)):
            for i, v in enumerate(values):
                rows.append(dict(machine_type=mt, machine_id=sec, domain=dom, label=label, score=float(v),
                                 path=f"/d/{mt}/test/section_{sec}_{dom}_test_{label}_{i:04d}.wav"))
    return pd.DataFrame(rows)


def assert_same(got: dict, want: dict) -> None:
    """Per-group figures equal the reference's: the same groups, each value within 1e-12."""
    assert sorted(got) == sorted(want)
    for k in want:
        assert got[k] == pytest.approx(want[k], abs=1e-12), k


def row(table: pd.DataFrame, **keys) -> pd.Series:
    hit = table
    for k, v in keys.items():
        hit = hit[hit[k] == v]
    assert len(hit) == 1, keys
    return hit.iloc[0]


# ------------------------------------------------------------------------------ protocol_for
@pytest.mark.parametrize("layouts, protocol", [
    (["dcase2020"], "dcase2020"), (["mimii"], "dcase2020"), ({"mimii", "dcase2020"}, "dcase2020"),
    (["dcase2021", "dcase2021"], "dcase2021"), ("dcase2022", "dcase2022"),
    (pd.Series(["dcase2022"] * 3), "dcase2022"),
])
def test_protocol_for(layouts, protocol):
    assert dcase.protocol_for(layouts) == protocol
    assert protocol in M.PROTOCOLS


@pytest.mark.parametrize("layouts, match", [
    (["dcase2021", "dcase2022"], r"mix the scoring protocols dcase2021, dcase2022"),
    (["mimii", "dcase2022"], r"mix the scoring protocols dcase2020, dcase2022"),
    (["dcase"], r"unknown layout\(s\) \['dcase'\]"),
    ([], "no layouts"),
])
def test_protocol_for_refuses(layouts, match):
    with pytest.raises(ValueError, match=match):
        dcase.protocol_for(layouts)


# ------------------------------------------------------------------------------ hand-computed
def test_dcase2020_by_hand():
    scores = clips({("fan", "00", "source"): ([0.1, 0.2], [0.3, 0.4]),   # AUC 1, pAUC 1
                    ("fan", "02", "source"): ([1.0, 1.3], [1.2, 1.4])})  # 3 of 4 pairs; TPR 1/2 before FPR 1/2
    r = M.official_score(scores.drop(columns="domain"), "dcase2020")  # 2020 needs no domain
    assert r.protocol == "dcase2020" and list(r.table.columns) == M.OFFICIAL_COLUMNS["dcase2020"]
    t = r.table.set_index("machine_id")
    assert (t.loc["00", "auc"], t.loc["00", "pauc"]) == (1.0, 1.0)
    assert t.loc["02", "auc"] == 0.75
    assert t.loc["02", "pauc"] == pytest.approx(mcclish(0.5 * 0.1), abs=1e-12)  # = 14/19
    assert t.loc["02", "pauc"] == pytest.approx(14 / 19, abs=1e-12)
    assert (t.loc["02", "n_normal"], t.loc["02", "n_anomaly"]) == (2, 2)
    assert r.score == pytest.approx((1 + 1 + 0.75 + 14 / 19) / 4, abs=1e-12)  # arithmetic, not harmonic
    assert r.means == pytest.approx({"auc": 0.875, "pauc": (1 + 14 / 19) / 2})


def test_dcase2021_scores_each_domain_alone():
    # target normal 0.9 outranks the source anomalies: pooling domains would lower the source AUC
    scores = clips({("fan", "00", "source"): ([0.1, 0.2], [0.3, 0.4]),
                    ("fan", "00", "target"): ([0.5, 0.9], [0.6, 0.3])})
    r = M.official_score(scores, "dcase2021")
    assert list(r.table.columns) == M.OFFICIAL_COLUMNS["dcase2021"]
    src, tgt = row(r.table, domain="source"), row(r.table, domain="target")
    assert (src.section, src.auc, src.pauc) == ("00", 1.0, 1.0)
    assert tgt.auc == 0.25  # only 0.6 > 0.5 of the four pairs
    assert tgt.pauc == pytest.approx(mcclish(0.0), abs=1e-12)  # a normal ranks first: no area before FPR 1/2
    assert tgt.pauc == pytest.approx(9 / 19, abs=1e-12)
    assert r.score == pytest.approx(4 / (1 + 1 + 4 + 19 / 9), abs=1e-12)  # one hmean over AUCs and pAUCs
    assert r.means == pytest.approx({"auc": 0.625, "pauc": (1 + 9 / 19) / 2})


SECTION_2022 = {("fan", "00", "source"): ([0.1, 0.2], [0.5, 0.35]),
                ("fan", "00", "target"): ([0.4, 0.8], [0.9, 0.3])}


def test_dcase2022_by_hand():
    r = M.official_score(clips(SECTION_2022), "dcase2022")
    assert list(r.table.columns) == M.OFFICIAL_COLUMNS["dcase2022"] and len(r.table) == 1
    t = r.table.iloc[0]
    assert (t.section, t.n_normal_source, t.n_normal_target, t.n_anomaly) == ("00", 2, 2, 4)
    assert t.auc_source == 1.0  # source normals 0.1, 0.2 under all four anomalies
    # target normals 0.4, 0.8 against ALL anomalies 0.5 0.35 0.9 0.3: 0.5 > 0.4, 0.9 > both -> 3 of 8
    # (the target domain's clips alone would give 2 of 4)
    assert t.auc_target == 3 / 8
    # pAUC over all 8 clips: 0.9 (anomaly) first, then 0.8 (normal): TPR 1/4 on FPR [0, 0.1]
    assert t.pauc == pytest.approx(mcclish(0.25 * 0.1), abs=1e-12)
    assert t.pauc == pytest.approx(23 / 38, abs=1e-12)
    assert r.score == pytest.approx(3 / (1 + 8 / 3 + 38 / 23), abs=1e-12)
    assert r.means == pytest.approx({"auc_source": 1.0, "auc_target": 3 / 8, "pauc": 23 / 38})


def test_dcase2022_domain_rule():
    base = M.official_score(clips(SECTION_2022), "dcase2022").table.iloc[0]
    for v in (-5.0, 0.45, 100.0):  # move a target normal anywhere: AUC (source) stays
        moved = dict(SECTION_2022)
        moved[("fan", "00", "target")] = ([0.4, v], [0.9, 0.3])
        t = M.official_score(clips(moved), "dcase2022").table.iloc[0]
        assert t.auc_source == base.auc_source
    assert t.auc_target == 2 / 8 and t.pauc != base.pauc  # normal 100 tops every anomaly: the others move
    moved = dict(SECTION_2022)
    moved[("fan", "00", "source")] = ([0.1, 100.0], [0.5, 0.35])  # and a source normal leaves AUC (target)
    t = M.official_score(clips(moved), "dcase2022").table.iloc[0]
    assert t.auc_target == base.auc_target and t.auc_source == 0.5
    # a target-domain anomaly counts for AUC (source): pushed below the source normals, it costs 2 of 8 pairs
    moved = dict(SECTION_2022)
    moved[("fan", "00", "target")] = ([0.4, 0.8], [0.9, 0.05])
    assert M.official_score(clips(moved), "dcase2022").table.iloc[0].auc_source == 6 / 8


def test_eps_floor_keeps_a_zero_auc_finite():
    # a reversed target domain: AUC 0. The evaluators floor at eps, so the hmean is tiny, not 0 or NaN
    scores = clips({("fan", "00", "source"): ([0.1, 0.2], [0.3, 0.4]),
                    ("fan", "00", "target"): ([0.9, 0.8], [0.1, 0.2])})
    r = M.official_score(scores, "dcase2021")
    values = np.r_[r.table.auc, r.table.pauc]
    assert 0.0 in values.tolist()
    assert r.score == pytest.approx(len(values) / np.sum(1 / np.maximum(values, EPS)), rel=1e-12)
    assert 0 < r.score < 1e-14


# ------------------------------------------------------------------- the evaluators, re-implemented
def random_clips(seed: int, types=("fan", "valve", "ToyCar"), sections=("00", "01", "02")) -> pd.DataFrame:
    """Several types and sections, unequal group sizes, tied scores, rows shuffled."""
    rng = np.random.default_rng(seed)
    groups = {}
    for mt in types:
        for sec in sections:
            for dom in ("source", "target"):
                n0, n1 = rng.integers(3, 30), rng.integers(3, 30)
                shift = rng.uniform(-0.5, 2.0)
                groups[(mt, sec, dom)] = (np.round(rng.normal(size=n0), 1).tolist(),
                                          np.round(rng.normal(size=n1) + shift, 1).tolist())
    df = clips(groups)
    return df.sample(frac=1.0, random_state=seed).reset_index(drop=True)


def evaluator_2020(df):
    per_id = {}
    for mt in sorted(set(df.machine_type)):
        for mid in sorted(set(df.machine_id[df.machine_type == mt])):
            g = df[(df.machine_type == mt) & (df.machine_id == mid)]
            y, s = (g.label == "anomaly").astype(int).to_numpy(), g.score.to_numpy()
            per_id[(mt, mid)] = (skm.roc_auc_score(y, s), skm.roc_auc_score(y, s, max_fpr=0.1))
    return per_id, float(np.mean([v for pair in per_id.values() for v in pair]))


def evaluator_2021(df):
    # y-kawagu/dcase2021_task2_evaluator: one (AUC, pAUC) per machine, domain, section on that domain's file
    per_group, performance_over_all = {}, []
    for mt in sorted(set(df.machine_type)):
        for dom in ("source", "target"):
            for sec in sorted(set(df.machine_id[df.machine_type == mt])):
                g = df[(df.machine_type == mt) & (df.machine_id == sec) & (df.domain == dom)]
                y_true, y_pred = (g.label == "anomaly").astype(int).to_numpy(), g.score.to_numpy()
                auc = skm.roc_auc_score(y_true, y_pred)
                p_auc = skm.roc_auc_score(y_true, y_pred, max_fpr=0.1)
                per_group[(mt, sec, dom)] = (auc, p_auc)
                performance_over_all.append([auc, p_auc])
    perf = np.maximum(np.array(performance_over_all, dtype=float), EPS)
    return per_group, float(scipy.stats.hmean(perf, axis=None))


def evaluator_2022(df):
    # Kota-Dohi/dcase2022_evaluator (and nttcslab 2023/2024): per section, domain index 0 source / 1 target
    domain_idx = {"source": 0, "target": 1}
    per_section, auc_s, auc_t, paucs = {}, [], [], []
    for mt in sorted(set(df.machine_type)):
        for sec in sorted(set(df.machine_id[df.machine_type == mt])):
            g = df[(df.machine_type == mt) & (df.machine_id == sec)]
            y_true_all = (g.label == "anomaly").astype(int).to_numpy()
            y_pred_all = g.score.to_numpy()
            y_domain = g.domain.map(domain_idx).to_numpy()
            res = {}
            for domain, idx in domain_idx.items():
                y_pred_auc = y_pred_all[(y_domain == idx) | (y_true_all != 0)]
                y_true_auc = y_true_all[(y_domain == idx) | (y_true_all != 0)]
                res[domain] = skm.roc_auc_score(y_true_auc, y_pred_auc)
            p_auc = skm.roc_auc_score(y_true_all, y_pred_all, max_fpr=0.1)
            per_section[(mt, sec)] = (res["source"], res["target"], p_auc)
            auc_s.append(res["source"]), auc_t.append(res["target"]), paucs.append(p_auc)
    all_perf = np.array([auc_s + auc_t + paucs], dtype=float)
    return per_section, float(scipy.stats.hmean(np.maximum(all_perf, EPS), axis=None))


@pytest.mark.parametrize("seed", range(4))
def test_equals_the_evaluators_on_random_data(seed):
    df = random_clips(seed)
    per_id, score = evaluator_2020(df)
    r = M.official_score(df, "dcase2020")
    assert r.score == pytest.approx(score, abs=1e-12)
    assert_same({(t.machine_type, t.machine_id): (t.auc, t.pauc) for t in r.table.itertuples()}, per_id)

    per_group, score = evaluator_2021(df)
    r = M.official_score(df, "dcase2021")
    assert r.score == pytest.approx(score, abs=1e-12) and len(r.table) == 3 * 3 * 2
    assert_same({(t.machine_type, t.section, t.domain): (t.auc, t.pauc) for t in r.table.itertuples()}, per_group)

    per_section, score = evaluator_2022(df)
    r = M.official_score(df, "dcase2022")
    assert r.score == pytest.approx(score, abs=1e-12) and len(r.table) == 3 * 3
    assert_same({(t.machine_type, t.section): (t.auc_source, t.auc_target, t.pauc)
                 for t in r.table.itertuples()}, per_section)
    assert list(zip(r.table.machine_type, r.table.section)) == sorted(per_section)
    # the three protocols really differ on these data (a test that cannot tell them apart proves little)
    assert len({round(M.official_score(df, p).score, 9) for p in M.PROTOCOLS}) == 3


def test_max_fpr_is_passed_through():
    df = random_clips(7, types=("fan",), sections=("00",))
    r = M.official_score(df, "dcase2022", max_fpr=0.3)
    y = (df.label == "anomaly").astype(int)
    assert r.table.pauc.iloc[0] == pytest.approx(skm.roc_auc_score(y, df.score, max_fpr=0.3), abs=1e-12)
    with pytest.raises(ValueError, match="max_fpr"):
        M.official_score(df, "dcase2022", max_fpr=0.0)


# ------------------------------------------------------------------------------------ errors
def test_unknown_domain_or_label_refused_by_count_and_first_path():
    df = clips(SECTION_2022)
    hidden = df.assign(domain=df.domain.where(df.index < 5, "unknown"))
    with pytest.raises(ValueError, match=rf"3 clip\(s\) have domain 'unknown' .*e\.g\. {df.path[5]}$"):
        M.official_score(hidden, "dcase2022")
    hidden = df.assign(label=df.label.where(df.index != 2, "unknown"))
    with pytest.raises(ValueError, match=rf"1 clip\(s\) have label 'unknown' .*e\.g\. {df.path[2]}$"):
        M.official_score(hidden, "dcase2021")
    with pytest.raises(ValueError, match=r"domain other than .*\['src'\]"):
        M.official_score(df.assign(domain="src"), "dcase2022")
    with pytest.raises(ValueError, match=r"lack column\(s\) \['domain'\]"):
        M.official_score(df.drop(columns="domain"), "dcase2021")


@pytest.mark.parametrize("protocol, drop, match", [
    ("dcase2020", ("valve", "00", "anomaly"), r"machine type valve, ID 00: AUC needs both .* 4 normal and 0"),
    ("dcase2021", ("valve", "00", "normal"), r"machine type valve, section 00, source domain: AUC needs both"),
    ("dcase2022", ("valve", "00", "anomaly"), r"machine type valve, section 00, AUC \(source"),
])
def test_single_class_group_raises_naming_it(protocol, drop, match):
    groups = {("fan", "00", "source"): ([0.1, 0.2], [0.3, 0.4]), ("fan", "00", "target"): ([0.1, 0.5], [0.3, 0.6]),
              ("valve", "00", "source"): ([0.1, 0.2], [0.3, 0.4]),
              ("valve", "00", "target"): ([0.1, 0.5], [0.3, 0.6])}
    df = clips(groups)
    mt, sec, label = drop
    keep = ~((df.machine_type == mt) & (df.machine_id == sec) & (df.label == label))
    if protocol == "dcase2021":  # only the source domain of valve 00 loses its normals
        keep |= df.domain == "target"
    with pytest.raises(ValueError, match=match):
        M.official_score(df[keep], protocol)


def test_dcase2022_section_without_target_normals_raises():
    df = clips(SECTION_2022)
    df = df[~((df.domain == "target") & (df.label == "normal"))]
    with pytest.raises(ValueError, match=r"machine type fan, section 00, AUC \(target: .*0 normal and 4 anomalous"):
        M.official_score(df, "dcase2022")


def test_unknown_protocol():
    with pytest.raises(ValueError, match=r"unknown protocol 'dcase2023'"):
        M.official_score(clips(SECTION_2022), "dcase2023")


# ---------------------------------------------------------------------------------- markdown
def test_official_markdown_2022_is_exact():
    r = M.official_score(clips(SECTION_2022), "dcase2022")
    assert M.official_markdown(r) == "\n".join([
        "| machine type | section | AUC (source) | AUC (target) | pAUC |",
        "|---|---|---|---|---|",
        "| fan | 00 | 100.00 | 37.50 | 60.53 |",
        "| arithmetic mean | — | 100.00 | 37.50 | 60.53 |",
        "",
        f"Official score: {100 * 3 / (1 + 8 / 3 + 38 / 23):.2f} (DCASE 2022–2025: harmonic mean of AUC (source), "
        "AUC (target) and pAUC over every machine type and section).",
    ])


def test_official_markdown_2021_rows_and_means():
    scores = clips({("fan", "00", "source"): ([0.1, 0.2], [0.3, 0.4]),
                    ("fan", "00", "target"): ([0.5, 0.9], [0.6, 0.3])})
    md = M.official_markdown(M.official_score(scores, "dcase2021")).splitlines()
    assert md[:5] == ["| machine type | section | domain | AUC | pAUC |", "|---|---|---|---|---|",
                      "| fan | 00 | source | 100.00 | 100.00 |", "| fan | 00 | target | 25.00 | 47.37 |",
                      "| arithmetic mean | — | — | 62.50 | 73.68 |"]
    assert md[-1].startswith("Official score: 49.32 (DCASE 2021: harmonic mean of AUC and pAUC over every")


def test_pooled_official_scores_must_share_one_protocol():
    a = M.OfficialScore("dcase2022", 0.5, pd.DataFrame({"machine_type": ["fan"], "auc_source": [0.5],
                                                        "auc_target": [0.5], "pauc": [0.5]}))
    b = M.OfficialScore("dcase2021", 0.5, pd.DataFrame({"machine_type": ["fan"], "auc": [0.5], "pauc": [0.5]}))
    assert M.pooled_official([a, a]).score == pytest.approx(0.5)
    with pytest.raises(ValueError, match="one protocol at a time"):
        M.pooled_official([a, b])
