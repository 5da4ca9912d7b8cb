"""Write evaluation results to disk: DCASE-style score CSVs, PNG plots, tables, ``results.md`` and
``metrics.json``. The numbers come from ``mimimi.metrics``; this module only formats and writes them.

Plots use matplotlib's object API (``Figure`` + ``FigureCanvasAgg``): no pyplot, so no global backend
switch and no figure registry to leak into.

Layout written by ``write_report(scores, out_dir)``::

    out_dir/results.md, metrics.json, per_id.csv, per_type.csv, official_score.csv, official_score.md
    out_dir/anomaly_score_<...>.csv      <file name>,<score>   (no header, as the challenge's submissions)
    out_dir/decision_result_<...>.csv    <file name>,<0|1>     (1 = anomaly, score >= threshold)
    out_dir/plots/roc_<type>.png, scores_<type>.png, confusion_<type>.png[, id_confusion_<type>.png,
                  roc_domains_<type>.png (2021+: per section and domain)]

The score and decision files are named as each year's challenge names its submission files
(``mimimi.data.dcase.submission_file``): ``anomaly_score_<type>_id_XX.csv`` (DCASE 2020, MIMII),
``anomaly_score_<type>_section_XX_<source|target>_test.csv`` (2021: one per domain),
``anomaly_score_<type>_section_XX_test.csv`` (2022–2025). With 2021+ data, ``machine_id`` is the section.
The year's official score (``metrics.official_score``, its protocol picked from the clips' ``layout``) is in
``official_score.csv`` / ``.md``, ``results.md`` and ``metrics.json``.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import roc_curve

from mimimi import markdown
from mimimi import metrics as M
from mimimi.data.dcase import DOMAINS, LAYOUTS, PROTOCOLS, protocol_for, submission_file

DPI = 120
_COLORS = {"normal": "tab:blue", "anomaly": "tab:red"}


# ----------------------------------------------------------------------------------------- CSVs
def _file_names(paths: pd.Series) -> pd.Series:
    """Base names; where those repeat within a group (MIMII: ``normal/00000000.wav`` and
    ``abnormal/00000000.wav``), paths relative to the group's common folder instead."""
    names = paths.map(lambda p: Path(p).name)
    if names.duplicated().any():
        common = os.path.commonpath(list(paths)) if len(paths) > 1 else str(Path(paths.iloc[0]).parent)
        names = paths.map(lambda p: Path(os.path.relpath(p, common)).as_posix())
    return names


def protocol_of(scores: pd.DataFrame) -> str:
    """The scoring protocol of a score table: from its ``layout`` column (``mimimi.data.dcase.protocol_for``); a table
    without one is DCASE 2020's."""
    return protocol_for(set(scores["layout"])) if "layout" in scores.columns else "dcase2020"


def _groups(scores: pd.DataFrame):
    """(file-name arguments, clips sorted by file name) per submission file: per (type, ID) — per (type,
    section, domain) for 2021, whose submissions are split by domain."""
    protocol = protocol_of(scores)
    keys = ["machine_type", "machine_id"] + (["domain"] if PROTOCOLS[protocol].per_domain else [])
    for key, g in scores.groupby(keys, sort=True):
        mt, mid, *domain = key
        g = g.assign(file_name=_file_names(g["path"])).sort_values("file_name", kind="stable")
        yield (mt, mid, protocol, *domain), g


def _write_rows(path: Path, names, values) -> Path:
    path.write_text("".join(f"{n},{v}\n" for n, v in zip(names, values)))
    return path


def write_scores_csv(scores: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """One score file per (type, ID) — per (type, section, domain) for 2021 — named by ``submission_file``:
    ``<file name>,<score>`` rows sorted by file name, no header (the challenge's format; scores written with
    ``repr`` so they read back exactly)."""
    df, out = M.check_scores(scores), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return [_write_rows(out / submission_file("anomaly_score", *key), g["file_name"],
                        [repr(float(v)) for v in g["score"]])
            for key, g in _groups(df)]


def write_decisions_csv(scores: pd.DataFrame, out_dir: str | Path,
                        thresholds: float | Mapping[tuple[str, str], float]) -> list[Path]:
    """One ``decision_result_...`` file (``submission_file``) per group that has a threshold: ``<file name>,<0|1>``
    (1 = anomaly, ``score >= threshold``), sorted by file name, no header. ``thresholds``: one float, or
    ``{(type, id): threshold}``; a NaN entry (no threshold for that ID) writes no file."""
    df, out = M.check_scores(scores), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for key, g in _groups(df):
        mt, mid = key[:2]
        if isinstance(thresholds, Mapping):
            if (mt, mid) not in thresholds:
                raise ValueError(f"{M.group_name(mt, mid)}: no threshold given")
            thr = float(thresholds[(mt, mid)])
        else:
            thr = float(thresholds)
        if math.isnan(thr):
            continue
        paths.append(_write_rows(out / submission_file("decision_result", *key), g["file_name"],
                                 (g["score"] >= thr).astype(int)))
    return paths


# ---------------------------------------------------------------------------------------- plots
def _figure(nrows: int = 1, ncols: int = 1, size: tuple[float, float] = (6.4, 4.8)):
    fig = Figure(figsize=size, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def _save(fig: Figure, out_path: str | Path) -> Path:
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=DPI, format="png")
    fig.clear()  # not in pyplot's registry: nothing else holds it once this returns
    return out_path


def _one_type(scores: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    df = M.check_scores(scores)
    types = sorted(df["machine_type"].unique())
    if len(types) != 1:
        raise ValueError(f"expected the scores of one machine type, got {types}")
    return df, types[0]


def plot_roc(scores: pd.DataFrame, out_path: str | Path, max_fpr: float = 0.1) -> Path:
    """ROC curves of every ID of one machine type in one figure, AUC and pAUC in the legend; an ID with
    one class only is named in the legend as not scorable. Raises if no ID is scorable."""
    df, mt = _one_type(scores)
    table = M.per_id_table(df, max_fpr)
    if (table["note"] != "").all():
        raise ValueError(f"{M.group_name(mt)}: no machine ID has both normal and anomalous clips")
    fig, axes = _figure()
    ax = axes[0, 0]
    for r in table.itertuples():
        if r.note:
            ax.plot([], [], " ", label=f"ID {r.machine_id}: not scorable ({r.note})")
            continue
        g = df[df["machine_id"] == r.machine_id]
        fpr, tpr, _ = roc_curve(M.labels_to_y(g["label"]), g["score"].to_numpy())
        ax.plot(fpr, tpr, lw=1.5, label=f"ID {r.machine_id}: AUC {100 * r.auc:.2f}%, pAUC {100 * r.pauc:.2f}%")
    return _save(_roc_frame(fig, ax, max_fpr, f"ROC per machine ID — {mt}"), out_path)


def _roc_frame(fig: Figure, ax, max_fpr: float, title: str, chance_ls: str = "--") -> Figure:
    """The chance diagonal, the pAUC limit, axes, title and legend of a ROC figure."""
    ax.plot([0, 1], [0, 1], ls=chance_ls, c="grey", lw=0.8, label="chance")
    ax.axvline(max_fpr, ls=":", c="k", lw=0.8, label=f"FPR = {max_fpr:g} (pAUC limit)")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate", ylabel="true positive rate", title=title)
    ax.legend(loc="lower right", fontsize="small")
    return fig


def plot_roc_domains(scores: pd.DataFrame, out_path: str | Path, protocol: str, max_fpr: float = 0.1) -> Path:
    """ROC curves per (section, domain) of one machine type, as the year's official score sees them: the
    domain's normals against all the section's anomalies (2022–2025), or the domain's own clips (2021)."""
    df, mt = _one_type(scores)
    fig, axes = _figure()
    ax = axes[0, 0]
    for sec, g in df.groupby("machine_id", sort=True):
        y = M.labels_to_y(g["label"])
        for domain, style in zip(DOMAINS, ("-", "--")):
            keep = M.domain_rows(y, g["domain"], domain, protocol)
            if len(set(y[keep])) < 2:
                ax.plot([], [], " ", label=f"section {sec} {domain}: not scorable (one class)")
                continue
            fpr, tpr, _ = roc_curve(y[keep], g["score"].to_numpy()[keep])
            auc = M.auc(y[keep], g["score"].to_numpy()[keep])
            ax.plot(fpr, tpr, ls=style, lw=1.5, label=f"section {sec} {domain}: AUC {100 * auc:.2f}%")
    title = f"ROC per section and domain ({protocol}) — {mt}"
    return _save(_roc_frame(fig, ax, max_fpr, title, chance_ls=":"), out_path)  # "--" is the target domain


def plot_score_distributions(scores: pd.DataFrame, out_path: str | Path,
                             threshold: float | Mapping[str, float] | None = None) -> Path:
    """Normal vs anomalous score histograms (density), one panel per ID of one machine type; a vertical
    line at ``threshold`` (one float, or ``{machine_id: threshold}``; NaN or a missing ID draws none)."""
    df, mt = _one_type(scores)
    ids = sorted(df["machine_id"].unique())
    ncols = min(len(ids), 4)
    nrows = math.ceil(len(ids) / ncols)
    fig, axes = _figure(nrows, ncols, size=(3.6 * ncols, 3.0 * nrows))
    for ax, mid in zip(axes.flat, ids):
        g = df[df["machine_id"] == mid]
        bins = np.histogram_bin_edges(g["score"].to_numpy(), bins=30)
        for label in M.LABELS:
            s = g.loc[g["label"] == label, "score"].to_numpy()
            if len(s):
                ax.hist(s, bins=bins, density=True, alpha=0.5, color=_COLORS[label], label=f"{label} ({len(s)})")
        thr = threshold.get(mid, math.nan) if isinstance(threshold, Mapping) else threshold
        if thr is not None and not math.isnan(thr):
            ax.axvline(thr, c="k", ls="--", lw=1, label=f"threshold {thr:.4g}")
        ax.set(title=f"ID {mid}", xlabel="anomaly score", ylabel="density")
        ax.legend(fontsize="x-small")
    for ax in list(axes.flat)[len(ids):]:
        ax.set_axis_off()
    fig.suptitle(f"Anomaly score distributions — {mt}")
    return _save(fig, out_path)


def plot_confusion(matrix, labels, out_path: str | Path, title: str) -> Path:
    """A confusion matrix as an annotated heat map: rows = true, columns = predicted."""
    m = np.asarray(matrix)
    labels = [str(v) for v in labels]
    if m.ndim != 2 or m.shape != (len(labels), len(labels)):
        raise ValueError(f"matrix of shape {m.shape} does not match {len(labels)} labels")
    side = 2.2 + 0.7 * len(labels)
    fig, axes = _figure(size=(side + 1.0, side))
    ax = axes[0, 0]
    im = ax.imshow(m, cmap="Blues", vmin=0)
    fig.colorbar(im, ax=ax, shrink=0.8)
    ticks = np.arange(len(labels))
    ax.set_xticks(ticks, labels)
    ax.set_yticks(ticks, labels)
    half = m.max() / 2 if m.size else 0
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(j, i, f"{m[i, j]:d}" if m.dtype.kind in "iu" else f"{m[i, j]:.3g}", ha="center",
                    va="center", color="white" if m[i, j] > half else "black")
    ax.set(xlabel="predicted", ylabel="true", title=title)
    return _save(fig, out_path)


# --------------------------------------------------------------------------------------- report
@dataclass
class Report:
    """What ``write_report`` computed and wrote. ``per_id``: ``metrics.PER_ID_COLUMNS`` + the threshold
    columns (``metrics.THRESHOLD_COLUMNS``); ``per_type``: ``metrics.PER_TYPE_COLUMNS`` + P/R/F1/accuracy at
    the per-ID thresholds (counts summed over the type's IDs) and, with ``pred_id``, ``id_accuracy_normal``
    / ``id_accuracy_anomaly``."""

    out_dir: Path
    per_id: pd.DataFrame
    per_type: pd.DataFrame
    markdown: str
    results_md: Path
    metrics_json: Path
    files: list[Path] = field(default_factory=list)
    comparison: pd.DataFrame | None = None  # mimimi.evaluate: key, scorer, machine_type, machine_id|"mean", auc,
    #                                            pauc, default (the scorer of the main report)
    official: M.OfficialScore | None = None  # the year's official score of these clips

    def flat_metrics(self) -> dict[str, float]:
        """``{"<type>/<metric>": value}`` plus ``mean/<metric>`` across types, for a tracker: every one a rate,
        in percent with two decimals (``metrics.percent``)."""
        out: dict[str, float] = {}
        keys = ["mean_auc", "mean_pauc", "pooled_auc", "pooled_pauc", "best_auc", "precision", "recall", "f1"]
        for r in self.per_type.to_dict("records"):
            out.update({f"{r['machine_type']}/{k}": M.percent(r[k]) for k in keys if not pd.isna(r[k])})
        for k in ("mean_auc", "mean_pauc", "pooled_auc"):
            out[f"mean/{k}"] = M.percent(self.per_type[k].mean())
        return out

    def comparison_metrics(self) -> dict[str, float]:
        """``{"scorers/<key>/<id or mean>/auc": value, ...}`` from ``comparison``, in percent (empty without it)."""
        if self.comparison is None:
            return {}
        return {f"scorers/{r.key}/{r.machine_id}/{k}": M.percent(getattr(r, k)) for r in self.comparison.itertuples()
                for k in ("auc", "pauc") if not pd.isna(getattr(r, k))}

    def tracked_metrics(self) -> dict[str, float]:
        """What MLflow gets for this evaluation on the test split, every figure in percent:
        ``test/<type>/<metric>``, ``test/mean/<metric>``, ``test/scorers/<key>/<id or mean>/<auc|pauc>`` and
        the year's official score, ``test/official/<protocol>``."""
        out = {f"test/{k}": v for k, v in {**self.flat_metrics(), **self.comparison_metrics()}.items()}
        if self.official is not None:  # the year's official score (metrics.official_score)
            out[f"test/official/{self.official.protocol}"] = M.percent(self.official.score)
        return out


def _jsonable(v):
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return None
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return None if np.isnan(v) else float(v)
    return v


def _records(df: pd.DataFrame) -> list[dict]:
    return [{k: _jsonable(v) for k, v in r.items()} for r in df.astype(object).to_dict("records")]


def _cell(v, kind: str) -> str:
    if pd.isna(v):
        return "—"
    return {"pct": lambda: f"{100 * v:.2f}", "num": lambda: f"{v:.4g}", "int": lambda: f"{int(v)}",
            "ratio": lambda: f"{v:.3f}"}.get(kind, lambda: str(v))()


def _per_id_markdown(per_id: pd.DataFrame) -> str:
    cols = [("machine type", "machine_type", "str"), ("ID", "machine_id", "str"), ("normal", "n_normal", "int"),
            ("anomalous", "n_anomaly", "int"), ("AUC", "auc", "pct"), ("pAUC", "pauc", "pct"),
            ("threshold", "threshold", "num"), ("precision", "precision", "ratio"), ("recall", "recall", "ratio"),
            ("F1", "f1", "ratio"), ("note", "note", "str")]
    return markdown.table([c[0] for c in cols],
                          [[_cell(r[k], kind) for _, k, kind in cols] for r in per_id.to_dict("records")])


@dataclass
class Tables:
    """What an evaluation report shows, computed from the scores alone (``compute_tables``; no file written)."""

    per_id: pd.DataFrame  # metrics.per_id_table + the threshold table (threshold, tp, fp, tn, fn, P/R/F1)
    per_type: pd.DataFrame  # metrics.per_type_table + P/R/F1/accuracy from the summed counts, ID accuracy
    thresholds: dict[tuple[str, str], float]  # (machine type, ID) -> the threshold the decisions used
    confusions: dict[str, dict]  # machine type -> its anomaly confusion matrix (and ID confusion), as JSON
    protocol: str  # the official score's protocol (from the clips' layout)
    official: M.OfficialScore | None
    official_md: str  # the official score as markdown, or why it was not computed


def compute_tables(df: pd.DataFrame, max_fpr: float = 0.1,
                   thresholds: float | Mapping[tuple[str, str], float] | None = None) -> Tables:
    """The per-ID and per-type tables, the confusion matrices and the official score of checked scores
    ``df`` (``metrics.check_scores``). Per type, P/R/F1 come from the TP/FP/TN/FN summed over its IDs; with a
    ``pred_id`` column, the ID confusion of the normal clips and the ID accuracy of each label."""
    per_id_auc = M.per_id_table(df, max_fpr)
    per_type = M.per_type_table(df, max_fpr, per_id=per_id_auc)
    thr = M.threshold_table(df, thresholds)
    per_id = per_id_auc.merge(thr, on=["machine_type", "machine_id"], how="left", validate="1:1")
    thr_map = {(r.machine_type, r.machine_id): float(r.threshold) for r in thr.itertuples()}
    type_extra, confusions = [], {}
    for mt, g in df.groupby("machine_type", sort=True):
        ids = per_id[(per_id["machine_type"] == mt) & per_id["threshold"].notna()]
        counts = {c: int(ids[c].sum()) for c in ("tp", "fp", "tn", "fn")}
        bm = M.binary_metrics_from_counts(**counts)
        matrix = np.array([[counts["tn"], counts["fp"]], [counts["fn"], counts["tp"]]])
        extra = dict(machine_type=mt, precision=bm.precision, recall=bm.recall, f1=bm.f1, accuracy=bm.accuracy)
        info: dict = {"confusion_labels": list(M.LABELS), "confusion": matrix.tolist()}
        if "pred_id" in g.columns:
            # the model may predict an ID that has no test clips of its own
            id_labels = sorted(set(g["machine_id"]) | set(g["pred_id"]))
            normal = g[g["label"] == "normal"]
            info.update(id_confusion_labels=id_labels,
                        id_confusion_normal=M.confusion(normal["machine_id"], normal["pred_id"], id_labels).tolist())
            for label in M.LABELS:
                sub = g[g["label"] == label]
                hits = sub["machine_id"] == sub["pred_id"]
                extra[f"id_accuracy_{label}"] = float(hits.mean()) if len(sub) else math.nan
        type_extra.append(extra)
        confusions[mt] = info
    per_type = per_type.merge(pd.DataFrame(type_extra), on="machine_type", how="left", validate="1:1")
    protocol = protocol_of(df)
    official, official_md = _official(df if "domain" in df.columns else df.assign(domain="source"), protocol, max_fpr)
    return Tables(per_id, per_type, thr_map, confusions, protocol, official, official_md)


def write_plots(df: pd.DataFrame, tables: Tables, plots: Path, max_fpr: float = 0.1) -> list[Path]:
    """Per machine type: ROC curves (and per section and domain, 2021+), score distributions with the
    thresholds, the anomaly confusion matrix and, with ``pred_id``, the ID confusion of the normal clips."""
    files = []
    for mt, g in df.groupby("machine_type", sort=True):
        info = tables.confusions[mt]
        files.append(plot_roc(g, plots / f"roc_{mt}.png", max_fpr))
        if tables.protocol != "dcase2020" and "domain" in g.columns:  # the official score's view, per domain
            files.append(plot_roc_domains(g, plots / f"roc_domains_{mt}.png", tables.protocol, max_fpr))
        files.append(plot_score_distributions(
            g, plots / f"scores_{mt}.png", {mid: t for (t_, mid), t in tables.thresholds.items() if t_ == mt}))
        files.append(plot_confusion(np.array(info["confusion"]), M.LABELS, plots / f"confusion_{mt}.png",
                                    f"Anomaly detection at per-ID thresholds — {mt}"))
        if "id_confusion_labels" in info:
            files.append(plot_confusion(np.array(info["id_confusion_normal"]), info["id_confusion_labels"],
                                        plots / f"id_confusion_{mt}.png",
                                        f"Machine-ID classification, normal test clips — {mt}"))
    return files


def write_tables(tables: Tables, out: Path, max_fpr: float, threshold_note: str, threshold_method: str) -> list[Path]:
    """``per_id.csv``, ``per_type.csv``, ``official_score.csv`` / ``.md``, ``results.md`` and ``metrics.json``."""
    files = []
    for name, table in (("per_id.csv", tables.per_id), ("per_type.csv", tables.per_type)):
        table.to_csv(out / name, index=False)
        files.append(out / name)
    if tables.official is not None:
        tables.official.table.to_csv(out / "official_score.csv", index=False)
        files.append(out / "official_score.csv")
    (out / "official_score.md").write_text(f"# Official score\n\n{tables.official_md}\n")
    files.append(out / "official_score.md")
    role = LAYOUTS[tables.protocol].id_role  # a protocol is named after the layout it came with
    (out / "results.md").write_text(
        f"# Results\n\nAUC and pAUC (FPR ≤ {max_fpr:g}, McClish-standardised) in %, per {role} (the column "
        f"`machine_id` holds the {role}). Mean over {role}s: the DCASE 2020 Task 2 protocol; pooled AUC: all "
        f"{role}s of a type in one ROC (the seed's number), for comparison.\n\n{M.results_markdown(tables.per_type)}"
        f"\n\n## Official score\n\n{tables.official_md}\n\n"
        f"## Per {role}\n\nThresholds: {threshold_note}; a clip is anomalous if its score is "
        f">= the threshold.\n\n{_per_id_markdown(tables.per_id)}\n")
    per_type_records = _records(tables.per_type)
    for r in per_type_records:
        r.update(tables.confusions[r["machine_type"]])
    official = tables.official
    payload = {
        "max_fpr": max_fpr,
        "threshold_method": threshold_method,
        "mean": {k: float(tables.per_type[k].mean()) for k in ("mean_auc", "mean_pauc", "pooled_auc", "pooled_pauc")},
        "per_type": per_type_records,
        "per_id": _records(tables.per_id),
        "official": None if official is None else {"protocol": official.protocol, "score": float(official.score),
                                                   "table": _records(official.table)},
    }
    (out / "metrics.json").write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n")
    return files + [out / "results.md", out / "metrics.json"]


def write_report(scores: pd.DataFrame, out_dir: str | Path, max_fpr: float = 0.1,
                 thresholds: float | Mapping[tuple[str, str], float] | None = None,
                 threshold_source: str | None = None) -> Report:
    """Compute the tables (``compute_tables``) and write everything listed in the module docstring.

    Thresholds: per ID, Youden's J on these (labelled) scores unless ``thresholds`` is given (see
    ``metrics.threshold_table``) — Youden on test data is an optimistic operating point, reported as the
    seed did; AUC/pAUC do not depend on it.
    """
    df, out = M.check_scores(scores), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tables = compute_tables(df, max_fpr, thresholds)
    note = ("Youden's J per ID on these labelled scores (optimistic: chosen on test)" if thresholds is None else
            "stored with the model, fitted to normal training clips only (never to test data)"
            if threshold_source == "normal-only" else "given")
    method = "youden" if thresholds is None else (threshold_source or "given")
    files = (write_scores_csv(df, out) + write_decisions_csv(df, out, tables.thresholds)
             + write_plots(df, tables, out / "plots", max_fpr) + write_tables(tables, out, max_fpr, note, method))
    return Report(out_dir=out, per_id=tables.per_id, per_type=tables.per_type,
                  markdown=M.results_markdown(tables.per_type), results_md=out / "results.md",
                  metrics_json=out / "metrics.json", files=files, official=tables.official)


def _official(scores: pd.DataFrame, protocol: str, max_fpr: float) -> tuple[M.OfficialScore | None, str]:
    """The official score and its markdown; where it cannot be computed (a section without anomalies, say),
    None and the reason, written where the score would be: never a silent 0."""
    try:
        official = M.official_score(scores, protocol, max_fpr)
    except ValueError as e:
        return None, f"Not computed under the {protocol} protocol: {e}"
    return official, M.official_markdown(official)
