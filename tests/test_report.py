"""mimimi.report: the DCASE CSVs, the plots, results.md and metrics.json."""
from __future__ import annotations

import csv
import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from mimimi import metrics as M
from mimimi import report as R

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def fake_scores(seed: int = 0, pred_id: bool = True) -> pd.DataFrame:
    """fan IDs 00/02/04 and valve 00/02 (+ valve 04 with normal clips only), in shuffled row order."""
    rng = np.random.default_rng(seed)
    rows = []
    for mt, ids in (("fan", ("00", "02", "04")), ("valve", ("00", "02", "04"))):
        for k, mid in enumerate(ids):
            for label, n in (("normal", 12), ("anomaly", 0 if (mt, mid) == ("valve", "04") else 9)):
                for i in range(n):
                    path = f"/data/{mt}/test/{label}_id_{mid}_{i:08d}.wav"
                    score = float(rng.normal(k + (label == "anomaly"), 1.0))  # ID k's scores offset by k
                    rows.append(dict(machine_type=mt, machine_id=mid, path=path, label=label, score=score,
                                     pred_id=mid if rng.random() < 0.8 else ids[0]))
    df = pd.DataFrame(rows).sample(frac=1.0, random_state=seed).reset_index(drop=True)
    return df if pred_id else df.drop(columns="pred_id")


def assert_png(path, min_bytes: int = 10_000):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, path
    assert len(data) > min_bytes, (path, len(data))


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    scores = fake_scores()
    return scores, R.write_report(scores, tmp_path_factory.mktemp("report"))


# ------------------------------------------------------------------------------------------ CSVs
def test_score_csvs_names_contents_and_order(tmp_path):
    scores = fake_scores()
    paths = R.write_scores_csv(scores, tmp_path)
    expected = [f"anomaly_score_{mt}_id_{mid}.csv" for mt in ("fan", "valve") for mid in ("00", "02", "04")]
    assert [p.name for p in paths] == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == expected
    for p in paths:
        mt, mid = p.stem.split("_")[2], p.stem.split("_")[-1]
        lines = p.read_text().splitlines()
        names = [line.split(",")[0] for line in lines]
        assert names == sorted(names), "rows sorted by file name"
        assert all(n.startswith(("normal_id_", "anomaly_id_")) for n in names), "no header, base names"
        group = scores[(scores.machine_type == mt) & (scores.machine_id == mid)]
        want = {r.path.rsplit("/", 1)[1]: r.score for r in group.itertuples()}
        got = {n: float(v) for n, v in (line.split(",") for line in lines)}
        assert got == want  # every clip once, scores read back exactly


def test_decision_csvs_follow_the_threshold(tmp_path):
    scores = fake_scores()
    groups = sorted(set(zip(scores.machine_type, scores.machine_id)))
    thresholds = {(mt, mid): 0.5 + i for i, (mt, mid) in enumerate(groups)}
    thresholds[("valve", "04")] = math.nan  # no threshold -> no file
    paths = R.write_decisions_csv(scores, tmp_path, thresholds)
    assert [p.name for p in paths] == [f"decision_result_{mt}_id_{mid}.csv" for mt, mid in sorted(thresholds)
                                       if (mt, mid) != ("valve", "04")]
    for p in paths:
        mt, mid = p.stem.split("_")[2], p.stem.split("_")[-1]
        group = scores[(scores.machine_type == mt) & (scores.machine_id == mid)]
        thr = thresholds[(mt, mid)]
        want = sorted((r.path.rsplit("/", 1)[1], str(int(r.score >= thr))) for r in group.itertuples())
        assert [tuple(line.split(",")) for line in p.read_text().splitlines()] == want
    with pytest.raises(ValueError, match="machine type fan, ID 00: no threshold"):
        R.write_decisions_csv(scores, tmp_path, {})


def test_mimii_names_that_repeat_get_their_folder(tmp_path):
    scores = pd.DataFrame(dict(machine_type="pump", machine_id="00", label=["normal", "anomaly", "normal"],
                               path=["/m/pump/id_00/normal/00000000.wav", "/m/pump/id_00/abnormal/00000000.wav",
                                     "/m/pump/id_00/normal/00000001.wav"], score=[0.1, 0.9, 0.2]))
    (p,) = R.write_scores_csv(scores, tmp_path)
    assert p.read_text() == "abnormal/00000000.wav,0.9\nnormal/00000000.wav,0.1\nnormal/00000001.wav,0.2\n"


# ----------------------------------------------------------------------------------------- plots
def test_plots_are_pngs(tmp_path):
    import matplotlib.pyplot as plt  # only to check that report leaves pyplot's registry alone

    before = plt.get_fignums()
    fan = fake_scores().query("machine_type == 'fan'")
    paths = [R.plot_roc(fan, tmp_path / "roc.png"),
             R.plot_score_distributions(fan, tmp_path / "d" / "scores.png", threshold={"00": 0.5, "02": 1.5}),
             R.plot_score_distributions(fan, tmp_path / "scores_one.png", threshold=1.0),
             R.plot_confusion(np.array([[5, 1], [2, 7]]), M.LABELS, tmp_path / "cm.png", "title")]
    for p in paths:
        assert_png(p)
    assert plt.get_fignums() == before


def test_plot_inputs_are_checked(tmp_path):
    with pytest.raises(ValueError, match="one machine type"):
        R.plot_roc(fake_scores(), tmp_path / "x.png")
    with pytest.raises(ValueError, match="does not match 3 labels"):
        R.plot_confusion(np.eye(2, dtype=int), ["a", "b", "c"], tmp_path / "x.png", "t")
    only_normal = fake_scores().query("machine_type == 'valve' and machine_id == '04'")
    with pytest.raises(ValueError, match="no machine ID has both"):
        R.plot_roc(only_normal, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_report_modules_import_no_pyplot_torch_ray_mlflow():
    code = ("import sys, mimimi.metrics, mimimi.report; "
            "print(sorted(m for m in ('matplotlib.pyplot', 'torch', 'ray', 'mlflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ---------------------------------------------------------------------------------------- report
def test_report_writes_every_file(report):
    _, rep = report
    out = rep.out_dir
    assert all(p.exists() for p in rep.files) and len(set(rep.files)) == len(rep.files)
    for mt in ("fan", "valve"):
        for kind in ("roc", "scores", "confusion", "id_confusion"):
            assert_png(out / "plots" / f"{kind}_{mt}.png")
    assert len(list(out.glob("anomaly_score_*.csv"))) == 6
    # valve 04 has one class: no Youden threshold, so no decisions for it
    assert sorted(p.name for p in out.glob("decision_result_*.csv")) == [
        f"decision_result_{mt}_id_{mid}.csv" for mt, mid in
        [("fan", "00"), ("fan", "02"), ("fan", "04"), ("valve", "00"), ("valve", "02")]]
    assert {p.name for p in out.iterdir()} >= {"results.md", "metrics.json", "per_id.csv", "per_type.csv", "plots"}


def test_results_md_holds_the_tables(report):
    scores, rep = report
    text = rep.results_md.read_text()
    assert rep.markdown == M.results_markdown(M.per_type_table(scores))
    assert rep.markdown in text
    assert "| machine type | best ID (AUC) | mean AUC over IDs | mean pAUC | pooled AUC |" in text
    assert "IDs excluded from the means (one class only; see the per-ID notes): valve 04." in text
    per_id = M.per_id_table(scores)
    for r in per_id.itertuples():
        if r.note:
            assert f"| {r.machine_type} | {r.machine_id} | {r.n_normal} | 0 | — | — | — |" in text
            assert r.note in text
        else:
            assert f"| {r.machine_type} | {r.machine_id} | {r.n_normal} | {r.n_anomaly} | {100 * r.auc:.2f} | " \
                   f"{100 * r.pauc:.2f} |" in text


def test_metrics_json_matches_the_tables(report):
    scores, rep = report
    data = json.loads(rep.metrics_json.read_text())
    per_id, per_type = M.per_id_table(scores), M.per_type_table(scores)
    thr = M.threshold_table(scores)
    assert data["max_fpr"] == 0.1 and data["threshold_method"] == "youden"
    assert len(data["per_id"]) == len(per_id)
    for j, r, t in zip(data["per_id"], per_id.itertuples(), thr.itertuples()):
        assert (j["machine_type"], j["machine_id"], j["n_normal"], j["n_anomaly"], j["note"]) == \
               (r.machine_type, r.machine_id, r.n_normal, r.n_anomaly, r.note)
        if r.note:
            assert j["auc"] is None and j["pauc"] is None and j["threshold"] is None and j["tp"] is None
        else:
            assert (j["auc"], j["pauc"], j["threshold"]) == (r.auc, r.pauc, t.threshold)
            assert (j["tp"], j["fp"], j["tn"], j["fn"], j["f1"]) == (t.tp, t.fp, t.tn, t.fn, t.f1)
    for j, r in zip(data["per_type"], per_type.itertuples()):
        assert (j["machine_type"], j["mean_auc"], j["mean_pauc"], j["pooled_auc"], j["best_id"], j["excluded_ids"]) == \
               (r.machine_type, r.mean_auc, r.mean_pauc, r.pooled_auc, r.best_id, r.excluded_ids)
        ids = thr[(thr.machine_type == r.machine_type) & thr.threshold.notna()]
        (tn, fp), (fn, tp) = j["confusion"]
        assert (tp, fp, tn, fn) == tuple(int(ids[c].sum()) for c in ("tp", "fp", "tn", "fn"))
        assert j["f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
        normal = scores[(scores.machine_type == r.machine_type) & (scores.label == "normal")]
        assert np.sum(j["id_confusion_normal"]) == len(normal)
        assert np.trace(j["id_confusion_normal"]) == (normal.machine_id == normal.pred_id).sum()
        assert j["id_accuracy_normal"] == pytest.approx((normal.machine_id == normal.pred_id).mean())
    assert data["mean"]["mean_auc"] == pytest.approx(per_type.mean_auc.mean())
    assert data["mean"]["pooled_auc"] == pytest.approx(per_type.pooled_auc.mean())
    assert pd.read_csv(rep.out_dir / "per_type.csv", dtype={"best_id": str})["mean_auc"].tolist() == \
           pytest.approx(per_type.mean_auc.tolist())


def test_report_flat_metrics(report):
    _, rep = report
    flat = rep.flat_metrics()
    # in percent with two decimals, as MLflow shows them (metrics.percent)
    assert flat["fan/mean_auc"] == round(100 * rep.per_type.set_index("machine_type").loc["fan", "mean_auc"], 2)
    assert flat["mean/mean_auc"] == pytest.approx(100 * rep.per_type.mean_auc.mean(), abs=0.005)
    assert all(isinstance(v, float) and math.isfinite(v) and v == round(v, 2) for v in flat.values())
    tracked = rep.tracked_metrics()
    assert {k.removeprefix("test/") for k in tracked} == set(flat) | set(rep.comparison_metrics())


def test_report_with_given_thresholds_and_no_pred_id(tmp_path):
    scores = fake_scores(seed=1, pred_id=False).query("machine_type == 'fan'")
    rep = R.write_report(scores, tmp_path, thresholds=1.0)
    data = json.loads(rep.metrics_json.read_text())
    assert data["threshold_method"] == "given" and {r["threshold"] for r in data["per_id"]} == {1.0}
    assert "id_confusion_normal" not in data["per_type"][0]
    assert not list((tmp_path / "plots").glob("id_confusion_*"))
    assert "Thresholds: given" in rep.results_md.read_text()
    flagged = sum(int(line.split(",")[1]) for p in tmp_path.glob("decision_result_*.csv")
                  for line in p.read_text().splitlines())
    assert flagged == int((scores.score >= 1.0).sum())


def test_all_missing_pred_id_means_no_classifier(tmp_path):
    scores = fake_scores(seed=2).query("machine_type == 'fan'").assign(pred_id=None)
    rep = R.write_report(scores, tmp_path)
    assert "id_accuracy_normal" not in rep.per_type.columns
    assert not list((tmp_path / "plots").glob("id_confusion_*"))
    partial = fake_scores(seed=2).astype({"pred_id": object})
    partial.loc[3, "pred_id"] = None
    with pytest.raises(ValueError, match="1 clip\\(s\\) lack a pred_id"):
        M.check_scores(partial)


def test_a_report_says_why_it_has_no_official_score(report):
    _, rep = report  # valve 04 has normal clips only: no AUC there, so no official score
    assert rep.official is None and "test/official/dcase2020" not in rep.tracked_metrics()
    why = (rep.out_dir / "official_score.md").read_text()
    assert "Not computed under the dcase2020 protocol" in why and "valve" in why
    assert why.splitlines()[-1] in rep.results_md.read_text()
    assert json.loads(rep.metrics_json.read_text())["official"] is None


def section_scores(layout: str, seed: int = 0) -> pd.DataFrame:
    """fan sections 00 and 01, source and target domains, 6 normals + 4 anomalies each, 2021+ file names."""
    rng = np.random.default_rng(seed)
    rows = []
    for sec in ("00", "01"):
        for domain in ("source", "target"):
            for label, n in (("normal", 6), ("anomaly", 4)):
                for i in range(n):
                    folder = f"{domain}_test" if layout == "dcase2021" else "test"
                    name = f"section_{sec}_{domain}_test_{label}_{i:04d}" + ("" if layout == "dcase2021" else "_vel_1")
                    rows.append(dict(machine_type="fan", machine_id=sec, path=f"/d/fan/{folder}/{name}.wav",
                                     label=label, domain=domain, layout=layout, section=sec,
                                     score=float(rng.normal(label == "anomaly", 1.0))))
    return pd.DataFrame(rows)


@pytest.mark.parametrize("layout, names", [
    ("dcase2022", ["anomaly_score_fan_section_00_test.csv", "anomaly_score_fan_section_01_test.csv"]),
    ("dcase2021", ["anomaly_score_fan_section_00_source_test.csv", "anomaly_score_fan_section_00_target_test.csv",
                   "anomaly_score_fan_section_01_source_test.csv", "anomaly_score_fan_section_01_target_test.csv"]),
])
def test_section_layouts_are_named_and_scored_as_the_challenge(tmp_path, layout, names):
    scores = section_scores(layout)
    rep = R.write_report(scores, tmp_path, thresholds=0.5)
    assert sorted(p.name for p in tmp_path.glob("anomaly_score_*.csv")) == names
    assert sorted(p.name for p in tmp_path.glob("decision_result_*.csv")) == [n.replace("anomaly_score", "decision_result")
                                                                                 for n in names]
    rows = sum((list(csv.reader(p.open())) for p in tmp_path.glob("anomaly_score_*.csv")), [])
    assert len(rows) == len(scores) and all(len(r) == 2 for r in rows)  # <file name>,<score>, no header
    want = M.official_score(scores, layout)
    assert rep.official.protocol == layout and rep.official.score == pytest.approx(want.score)
    assert rep.tracked_metrics()[f"test/official/{layout}"] == M.percent(want.score)
    assert pd.read_csv(tmp_path / "official_score.csv", dtype={"section": str}).shape[0] == len(want.table)
    assert "Official score:" in rep.results_md.read_text() and "per section" in rep.results_md.read_text()
    assert_png(tmp_path / "plots" / "roc_domains_fan.png")  # per section and domain, as the score sees them
