"""The accuracy report: ``python -m bench.accuracy [--quick] [--out ACCURACY.md]`` (``make accuracy``).

For each synthetic set (``SETS``) and seed, the set is generated with that seed, the default model
(``complex``, default recipe, ``--epochs``) is trained per machine type with that seed, and
``mimimi.evaluate`` scores the test split with every scorer of the model beside the training-free
``stats-knn`` baseline. The report gives mean ± std over the seeds of the mean per-ID AUC / pAUC per
machine type, and per ID on the fails-like-real set (where cross-entropy inverts for the majority ID).
The real-format sample clips (``../shared/data/real-samples``, test clips only, about 2 + 2 per ID) get the
only training-free check they allow: ``stats-knn`` with each normal scored leave-one-out.

These are synthetic AUCs and a handful of real clips: not real-data accuracy. ``--quick`` runs every step
at toy sizes (a smoke test, not a measurement).
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

from bench import domain_study, network_study, objective_study
from bench.report import replace_section
from mimimi import markdown as md_table
from mimimi import kinds, metrics
from mimimi.config import load_config, merge
from mimimi.data import synth
from mimimi.data.index import index_dataset
from mimimi.evaluation import evaluate
from mimimi.features import FeatureCache
from mimimi.scoring.backends import make_scorer
from mimimi.scoring.fitted import FUSED
from mimimi.scoring.outputs import clip_outputs
from mimimi.training import fit
from tuning.evidence import EVIDENCE  # what the search tells its user about data like its own
from tuning.space import SearchSettings

REPO = Path(__file__).resolve().parents[1]
REAL_SAMPLES = Path(os.environ.get("MIMIMI_REAL_SAMPLES", REPO.parent / "shared" / "data" / "real-samples"))
# generate() keywords per set; seeds and clip length come from the command line
SETS = {
    "synthetic": dict(machine_types=synth.MACHINE_TYPES, ids=synth.DEFAULT_IDS, n_train=12, n_test_normal=8,
                      n_test_anomaly=8),
    # FAILS_LIKE_REAL's imbalance (40/20/3/3) scaled to fit a 2-core budget, as in tests/test_fails_like_real.py
    "fails-like-real": {**{k: v for k, v in synth.FAILS_LIKE_REAL.items() if k != "seconds"},
                        "machine_types": ("fan",), "train_counts": {"00": 24, "02": 12, "04": 3, "06": 3},
                        "n_test_normal": 8, "n_test_anomaly": 8},
}
QUICK = dict(seconds=2.0, epochs=1, seeds=[0], sets=("fails-like-real",), features={
    "n_fft": 256, "hop_length": 128, "segment_frames": 32, "eval_hop_frames": 32, "n_mels": 64})


def study_config(root: Path, work: Path, features: dict | None, train: dict, **sections: dict):
    """The config every study trains with: data under ``root``, one feature cache in ``work``, the quick
    run's ``features`` when given, ``train`` settings (progress off) and any other ``sections``."""
    return load_config(overrides={
        "data": {"root": str(root), "cache_dir": str(work / "cache")}, **({"features": features} if features else {}),
        "train": {**train, "progress": False}, **sections})


def synthetic_set(root: Path, seed: int, seconds: float, quick_types: tuple[str, ...] | None) -> dict:
    """Generate the synthetic set (``SETS["synthetic"]``) with ``seed`` into ``root``; with ``quick_types``
    (a quick run) fewer clips of those types only. Returns the generator's keywords."""
    spec = dict(SETS["synthetic"], seconds=seconds, seed=seed)
    if quick_types:
        spec.update(n_train=6, n_test_normal=3, n_test_anomaly=3, machine_types=quick_types)
    synth.generate(root, workers=2, **spec)
    return spec


def run_set(name: str, seed: int, work: Path, seconds: float, epochs: int, features: dict | None,
            model: str) -> pd.DataFrame:
    """Generate set ``name`` with ``seed``, train ``model`` per type, evaluate: the comparison rows + set, seed."""
    root = work / f"{name}-{seed}"
    spec = dict(SETS[name], seconds=seconds, seed=seed)
    if name == "fails-like-real" and features:  # quick: fewer clips
        spec.update(train_counts={"00": 8, "02": 4, "04": 2, "06": 2}, n_test_normal=3, n_test_anomaly=3)
    synth.generate(root, workers=2, **spec)
    rows = []
    for mtype in spec["machine_types"]:
        cfg = study_config(root, work, features, {"machine_type": mtype, "epochs": epochs, "seed": seed},
                           model={"name": model})
        t = time.perf_counter()
        result = fit(cfg, work / "runs" / f"{name}-{seed}-{mtype}")
        rep = evaluate(result.best_checkpoint, root, work / "eval" / f"{name}-{seed}-{mtype}", progress=False)
        table = rep.comparison.assign(set=name, seed=seed, seconds=time.perf_counter() - t,
                                      best_epoch=result.best_epoch, val_proxy_auc=result.best.get("val_proxy_auc"))
        rows.append(table)
        mean = table[table.machine_id == "mean"].set_index("key").auc
        print(f"{name} seed {seed} {mtype}: " + ", ".join(f"{k} {100 * v:.1f}" for k, v in mean.items())
              + f" ({time.perf_counter() - t:.0f} s)", file=sys.stderr)
    return pd.concat(rows, ignore_index=True)


def real_samples(root: Path, cache_dir: Path) -> pd.DataFrame | None:
    """``stats-knn`` on the real DCASE 2020 sample clips: per ID, each normal clip scored by kNN against the
    ID's OTHER normals (leave-one-out), each anomalous clip against all of them; AUC per ID."""
    dev = root / "dcase2020"
    if not dev.is_dir():
        return None
    cfg = load_config(overrides={"model": {"name": "stats-knn"}})
    kind = kinds.get("stats-knn")
    clips = index_dataset(dev).clips
    clips = clips[clips.label != "unknown"].reset_index(drop=True)
    ids = {m: i for i, m in enumerate(sorted(set(clips.machine_id)))}
    out = clip_outputs(kind.build(cfg, len(ids)), kind, cfg, clips, ids, FeatureCache(cache_dir, cfg.features))
    rows = []
    for (mtype, mid), g in clips.groupby(["machine_type", "machine_id"], sort=True):
        normal = g.index[g.label == "normal"].to_numpy()
        anomal = g.index[g.label == "anomaly"].to_numpy()
        if len(normal) < 2 or not len(anomal):
            continue
        s_norm = [make_scorer("knn", k=1).fit(out.embedding[np.setdiff1d(normal, [i])]).score(out.embedding[[i]])[0]
                  for i in normal]
        s_anom = make_scorer("knn", k=1).fit(out.embedding[normal]).score(out.embedding[anomal])
        y = np.r_[np.zeros(len(normal)), np.ones(len(anomal))]
        rows.append(dict(machine_type=mtype, machine_id=mid, n_normal=len(normal), n_anomaly=len(anomal),
                         auc=metrics.auc(y, np.r_[s_norm, s_anom])))
    return pd.DataFrame(rows)


# one change at a time from the default recipe; each a config override
RECIPES = {
    "default": {},
    "head arcface": {"model": {"net": {"head": "arcface"}}},
    "sampler balanced": {"train": {"sampler": "balanced"}},
    "classes all": {"train": {"classes": "all"}},
}


def recipe_study(work: Path, seeds: list[int], seconds: float, epochs: int, features: dict | None) -> pd.DataFrame:
    """The training-recipe options, one at a time from the default: each trained per machine type of the
    synthetic set (generated with the seed) and evaluated; rows: recipe, seed, machine type, mean per-ID
    test AUC per scorer (``default``: the model's default scorer; ``knn``: the network's embedding alone)."""
    rows = []
    for seed in seeds:
        root = work / f"recipe-{seed}"
        spec = synthetic_set(root, seed, seconds, ("fan", "valve") if features else None)  # classes=all: 2 types
        for recipe, override in RECIPES.items():
            for mtype in spec["machine_types"]:
                cfg = merge(study_config(root, work, features, {"machine_type": mtype, "epochs": epochs, "seed": seed}),
                            override)
                t = time.perf_counter()
                tag = f"recipe-{seed}-{recipe.replace(' ', '-')}-{mtype}"
                result = fit(cfg, work / "runs" / tag)
                rep = evaluate(result.best_checkpoint, root, work / "eval" / tag, progress=False, baseline=False)
                mean = rep.comparison[rep.comparison.machine_id == "mean"]
                row = {"recipe": recipe, "seed": seed, "machine_type": mtype, "seconds": time.perf_counter() - t,
                       "val_proxy_auc": result.best.get("val_proxy_auc")}
                for r in mean.itertuples():
                    row["auc_default" if r.default else f"auc_{r.key.split('/')[-1]}"] = r.auc
                rows.append(row)
                print(f"recipe {recipe!r} seed {seed} {mtype}: default scorer {100 * row['auc_default']:.1f}, "
                      f"knn {100 * row.get('auc_knn', float('nan')):.1f} ({row['seconds']:.0f} s)", file=sys.stderr)
    return pd.DataFrame(rows)


# the first-shot search's synthetic 2023 set (configs/search/first_shot.yaml, `synthetic:`); seed and clip length
# come from the command line
FIRST_SHOT_SET = {k: v for k, v in yaml.safe_load((REPO / "configs" / "search" / "first_shot.yaml").read_text())[
    "synthetic"].items() if k not in ("seed", "seconds")}


def attribute_study(work: Path, seeds: list[int], seconds: float, epochs: int, features: dict | None) -> pd.DataFrame:
    """Section x attribute classes (``train.attributes``) against sections alone, both over every (type,
    section) (``train.classes: all``, as first-shot trains): per seed the first-shot synthetic 2023 set is
    generated, each type trained both ways and evaluated; one row per (seed, attributes, type, scorer) with
    the mean per-section AUC and pAUC, the per-domain AUC and the year's official score."""
    rows = []
    for seed in seeds:
        root = work / f"attributes-{seed}"
        spec = dict(FIRST_SHOT_SET, seconds=seconds, seed=seed)
        synth.generate(root, workers=2, **spec)
        for attributes in (False, True):
            for mtype in spec["machine_types"]:
                cfg = study_config(root, work, features, {"machine_type": mtype, "epochs": epochs, "seed": seed,
                                                          "classes": "all", "attributes": attributes})
                tag = f"attributes-{seed}-{attributes}-{mtype}"
                t = time.perf_counter()
                result = fit(cfg, work / "runs" / tag)
                rep = evaluate(result.best_checkpoint, root, work / "eval" / tag, progress=False, baseline=False)
                mean = rep.comparison[rep.comparison.machine_id == "mean"]
                rows += [{"seed": seed, "attributes": attributes, "machine_type": mtype, "scorer": r.key,
                          "default": bool(r.default), "auc": r.auc, "pauc": r.pauc,
                          "seconds": time.perf_counter() - t} for r in mean.itertuples()]
                print(f"attributes {attributes} seed {seed} {mtype}: " + ", ".join(
                    f"{r.key} {100 * r.auc:.1f}" for r in mean.itertuples()), file=sys.stderr)
    return pd.DataFrame(rows)


ATTRIBUTE_TITLE = "## Section × attribute classes (`train.attributes`)"


def attribute_section(study: pd.DataFrame, epochs: int, seconds: float, features: dict | None) -> str:
    seeds = sorted(set(study.seed))
    types = sorted(set(study.machine_type))
    default = study.loc[study["default"], "scorer"].iloc[0]
    lines = ["| scorer | classes | " + " | ".join(types) + " | mean over types | change, same seed |",
             "|---|---|" + "---|" * (len(types) + 2)]
    for scorer, g in study.groupby("scorer", sort=False):
        plain = g[~g.attributes].groupby("seed").auc.mean()  # per seed: the mean over types, sections alone
        for attributes, h in g.groupby("attributes", sort=True):
            per_seed = h.groupby("seed").auc.mean()
            change = _pm(per_seed - plain) if attributes else ""
            lines.append(f"| {scorer}{' (default)' if scorer == default else ''} | "
                         f"{'section × attribute' if attributes else 'section'} | "
                         + " | ".join(_pm(h[h.machine_type == t].auc) for t in types)
                         + f" | {_pm(per_seed)} | {change} |")
    spec = ", ".join(f"{k} {v}" for k, v in FIRST_SHOT_SET.items() if k != "layout")
    n, a = 2 * FIRST_SHOT_SET["n_test_normal"], 2 * FIRST_SHOT_SET["n_test_anomaly"]  # source + target
    shift = FIRST_SHOT_SET["domain_shift"]
    return "\n\n".join([
        ATTRIBUTE_TITLE,
        f"The classifier over every (type, section) (`train.classes: all`, as `--first-shot` trains) with its "
        f"classes split by the training clips' attributes (`train.attributes: true`) or not, on the first-shot "
        f"search's synthetic DCASE 2023 set ({spec}; {seconds:g} s clips), whose attribute is the domain's "
        f"operating speed (`{synth.attribute('source', shift)}` source, `{synth.attribute('target', shift)}` "
        f"target), so the split is section × domain here. Seeds {seeds} (the seed generates the set and seeds "
        f"training), {epochs} epochs" + (f", features {features}" if features else "")
        + "; test AUC in % of each type's one section over both domains (± std over seeds; the last column is "
        "the change of the mean over types against sections alone on the same seed's data). Each type has "
        f"{n} + {a} test clips (both domains), so one swapped normal/anomalous pair moves its AUC by "
        f"{100 / (n * a):.1f} points; pAUC (FPR ≤ 0.1 of {n} normals) is left out as too coarse here. "
        f"`python -m bench.accuracy --only attributes --attribute-seeds {','.join(map(str, seeds))} --epochs "
        f"{epochs} --threads {_threads()}` reruns this section alone.",
        "\n".join(lines)])


def precision_study(work: Path, seeds: list[int], seconds: float, epochs: int, features: dict | None) -> pd.DataFrame:
    """The default model trained and scored in fp32 and in bf16 (``train.precision`` and ``scoring.precision``)
    per machine type of the synthetic set, same seed, same data: one row per (seed, type, ID, precision) with
    the test AUC of every scorer, and the training run's seconds."""
    rows = []
    for seed in seeds:
        root = work / f"precision-{seed}"
        spec = synthetic_set(root, seed, seconds, ("valve",) if features else None)
        for mtype in spec["machine_types"]:
            for prec in ("fp32", "bf16"):
                cfg = study_config(root, work, features, {"machine_type": mtype, "epochs": epochs, "seed": seed,
                                                          "precision": prec}, scoring={"precision": prec})
                tag = f"precision-{seed}-{mtype}-{prec}"
                t = time.perf_counter()
                result = fit(cfg, work / "runs" / tag)
                train_s = time.perf_counter() - t
                # bf16 throughout; and the fp32-trained model scored in bf16 (inference alone, same weights)
                variants = {prec: prec} if prec == "bf16" else {"fp32": "fp32", "bf16 scoring": "bf16"}
                for variant, scoring_precision in variants.items():
                    rep = evaluate(result.best_checkpoint, root, work / "eval" / f"{tag}-{scoring_precision}",
                                   progress=False, baseline=False, precision=scoring_precision)
                    per_id = rep.comparison[rep.comparison.machine_id != "mean"]
                    rows += [{"seed": seed, "machine_type": mtype, "machine_id": r.machine_id, "precision": variant,
                              "scorer": r.key, "default": bool(r.default), "auc": r.auc, "train_seconds": train_s}
                             for r in per_id.itertuples()]
                print(f"precision {prec} seed {seed} {mtype}: {train_s:.0f} s", file=sys.stderr)
    return pd.DataFrame(rows)


PRECISION_TITLE = "## bf16 against fp32"
PRECISION_TOLERANCE = 0.02  # per-ID AUC, mean over seeds


def precision_section(study: pd.DataFrame, epochs: int) -> str:
    """Per scorer: the largest and the mean |AUC(bf16) - AUC(fp32)| over (type, ID), each the mean over seeds."""
    wide = study.pivot_table(index=["scorer", "machine_type", "machine_id", "seed"], columns="precision", values="auc")
    default = study.loc[study["default"], "scorer"].iloc[0]
    lines = ["| bf16 in | scorer | largest per-ID \\|ΔAUC\\| (mean over seeds) | mean per-ID ΔAUC | within "
             f"{PRECISION_TOLERANCE:g} |", "|---|---|---|---|---|"]
    for variant, label in (("bf16", "training and scoring"), ("bf16 scoring", "scoring only (fp32 weights)")):
        if variant not in wide:
            continue
        diff = (wide[variant] - wide["fp32"]).groupby(level=["scorer", "machine_type", "machine_id"]).mean()
        for scorer, d in diff.groupby(level="scorer", sort=False):
            worst = float(d.abs().max())
            lines.append(f"| {label} | {scorer}{' (default)' if scorer == default else ''} | {worst:.3f} "
                         f"| {float(d.mean()):+.3f} | {'yes' if worst <= PRECISION_TOLERANCE else '**no**'} |")
    t = study[study.precision != "bf16 scoring"].drop_duplicates(["seed", "machine_type", "precision"]).groupby(
        "precision").train_seconds.sum()
    seeds = sorted(set(study.seed))
    return "\n\n".join([
        PRECISION_TITLE,
        f"The default model trained and scored in bf16 (`train.precision: bf16`, `scoring.precision: bf16`), and "
        f"trained in fp32 then scored in bf16 (`scoring.precision: bf16` alone), against fp32 throughout: same data "
        f"and seeds {seeds}, {epochs} training epochs, per machine type of the synthetic set; ΔAUC = AUC(bf16) − "
        f"AUC(fp32) per machine ID, averaged over the seeds. Training in bf16 changes the weights' trajectory, so "
        f"its ΔAUC includes seed-like training noise (one swapped pair of the 8 + 8 test clips of an ID is 0.016); "
        f"scoring alone changes only the rounding of one model's outputs. Training time, all runs: fp32 "
        f"{t.get('fp32', float('nan')):.0f} s, bf16 {t.get('bf16', float('nan')):.0f} s ({_threads()} "
        f"torch threads). `python -m bench.accuracy --only precision --precision-seeds {','.join(map(str, seeds))} "
        f"--threads {_threads()}` reruns this section alone.",
        "\n".join(lines)])


def recipe_markdown(study: pd.DataFrame) -> str:
    types = sorted(set(study.machine_type))
    lines = ["| recipe | " + " | ".join(types) + " | mean over types (default scorer) | mean over types (`knn`) "
             "| seconds per type |", "|---|" + "---|" * (len(types) + 3)]
    for recipe, g in study.groupby("recipe", sort=False):
        per_seed = g.groupby("seed")
        lines.append(f"| {recipe} | " + " | ".join(_pm(g[g.machine_type == t].auc_default) for t in types)
                     + f" | {_pm(per_seed.auc_default.mean())} | {_pm(per_seed.auc_knn.mean())} "
                     f"| {g.seconds.mean():.0f} |")
    return "\n".join(lines)


def _pm(values: pd.Series) -> str:
    v = 100 * values.dropna()
    if v.empty:
        return "—"
    return f"{v.mean():.1f} ± {v.std(ddof=0):.1f}" if len(v) > 1 else f"{v.mean():.1f}"


CHOSEN = "complex / back-end chosen on validation (the default)"


def with_chosen(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows with one more scorer, ``chosen``: in each run, the back-end its validation chose (the model's
    default, which differs between runs); the fixed back-ends' labels lose their "(default)"."""
    if "default" not in rows:
        return rows
    fixed = rows.assign(scorer=rows.scorer.str.replace(" (default)", "", regex=False))
    chosen = rows[rows["default"].astype(bool)].assign(key="chosen", scorer=CHOSEN)
    return pd.concat([chosen, fixed], ignore_index=True)


def summary_tables(rows: pd.DataFrame) -> dict[str, str]:
    """Per set: scorer rows (the back-end chosen on validation first), machine-type columns (mean per-ID
    AUC, mean ± std over seeds), then the mean."""
    out = {}
    rows = with_chosen(rows)
    for name, g in rows.groupby("set", sort=False):
        means = g[g.machine_id == "mean"]
        types = sorted(set(means.machine_type))
        lines = ["| scorer | " + " | ".join(types) + " | mean over types | pAUC, mean over types |",
                 "|---|" + "---|" * (len(types) + 2)]
        for key, s in means.groupby("key", sort=False):
            per_seed = s.groupby("seed")
            lines.append(f"| {s.scorer.iloc[0]} | " + " | ".join(_pm(s[s.machine_type == t].auc) for t in types)
                         + f" | {_pm(per_seed.auc.mean())} | {_pm(per_seed.pauc.mean())} |")
        out[name] = "\n".join(lines)
    return out


def per_id_table(rows: pd.DataFrame, name: str) -> str:
    """Scorer rows, (machine type, ID) columns: AUC mean ± std over seeds."""
    rows = with_chosen(rows)
    g = rows[(rows.set == name) & (rows.machine_id != "mean")]
    cols = sorted(set(zip(g.machine_type, g.machine_id)))
    lines = ["| scorer | " + " | ".join(f"{t} ID {i}" for t, i in cols) + " |", "|---|" + "---|" * len(cols)]
    for _, s in g.groupby("key", sort=False):
        lines.append(f"| {s.scorer.iloc[0]} | " + " | ".join(
            _pm(s[(s.machine_type == t) & (s.machine_id == i)].auc) for t, i in cols) + " |")
    return "\n".join(lines)


MAIN_TITLE = "## Synthetic sets and real-format clips: the default model beside stats-knn"


def head(settings: dict) -> str:
    """The report's title and what every section has in common."""
    return "\n\n".join([
        "# MIMIMI accuracy report",
        f"Written by `make accuracy` (`python -m bench.accuracy`), {settings['machine']}; each section says when, "
        "on what and by which command it was measured (`--only <part>` reruns one part into this file). "
        "**Synthetic data and a handful of real clips: these are not real-data accuracy figures.** On real MIMII "
        "recordings the ranking of scorers is what issues 11 and 24 measured (README, Status)."])


def main_section(rows: pd.DataFrame, real: pd.DataFrame | None, settings: dict) -> str:
    """The main tables: the default model per set and seed, every back-end beside ``stats-knn``."""
    tables = summary_tables(rows)
    parts = [
        MAIN_TITLE,
        f"Model: `complex`, the default config and recipe (every segment per epoch, back-end chosen on validation, "
        f"best epoch by `train.monitor`), {settings['epochs']} epochs, seeds {settings['seeds']} (the seed generates "
        f"the set and seeds training); {settings['seconds']:g} s clips"
        + (f"; features {settings['features']}" if settings['features'] else "") + ". Every row comes from "
        "`mimimi.evaluation` (AUC in %, mean over machine IDs, then mean ± std over seeds). "
        f"Measured {settings['date']} in {settings['minutes']:.0f} minutes: `python -m bench.accuracy --only main`.",
    ]
    if "synthetic" in tables:
        parts += ["### Synthetic (the embedded default's generator: 4 types × 4 IDs)", tables["synthetic"]]
    if "fails-like-real" in tables:
        parts += ["### Fails like real (`--preset fails-like-real`: imbalanced IDs, off-manifold anomalies, 0 dB)",
                  tables["fails-like-real"], "Per machine ID (ID 00 has the most training clips):",
                  per_id_table(rows, "fails-like-real")]
    if real is not None and len(real):
        parts += ["### Real-format sample clips (`stats-knn`, leave-one-out)",
                  f"The {int(real.n_normal.sum() + real.n_anomaly.sum())} real DCASE 2020 test clips with two or more "
                  "normals per ID; each normal is scored against its ID's other normal(s), so one or two references: "
                  f"a check that the real formats score sensibly, not an accuracy. Mean AUC {100 * real.auc.mean():.1f}.",
                  md_table.table(["machine type", "ID", "normal", "anomalous", "AUC"],
                                 [[r.machine_type, r.machine_id, r.n_normal, r.n_anomaly, f"{100 * r.auc:.1f}"]
                                  for r in real.itertuples()])]
    return "\n\n".join(parts)


OBJECTIVE_TITLE = "## Does the leak-free objective rank trials like test AUC?"
NETWORK_TITLE = "## Does the network earn its place?"


def rho_table(ranks: pd.DataFrame) -> str:
    """Candidates as rows (best mean ρ first), sets as columns: ρ [95 % interval], ✓ where it lies above 0."""
    sets = list(dict.fromkeys(ranks["set"]))
    cell = {(r.set, r.candidate): f"{r.rho:+.2f} [{r.lo:+.2f}, {r.hi:+.2f}]" + (" ✓" if r.lo > 0 else "")
            for r in ranks.itertuples()}
    mean = ranks.groupby("candidate").rho.mean().sort_values(ascending=False)
    return md_table.table(["validation number (no test clip)", *sets],
                          [[f"`{c}`" + (" (negated)" if c.endswith("loss") else ""), *(cell.get((n, c)) for n in sets)]
                           for c in mean.index])


def objective_section(trials: pd.DataFrame, ranks: pd.DataFrame, network_ranks: pd.DataFrame, backends: pd.DataFrame,
                      seconds: float) -> str:
    """The objective study (``bench.objective_study``): per set, Spearman ρ of every candidate validation
    number with the delivered model's test figure and with its network's, and the back-end choice against
    fixed ones."""
    if ranks.empty:
        return "\n\n".join([OBJECTIVE_TITLE, "Too few trials to rank (5 at least per set)."])
    gain = f"{FUSED} − chosen"
    bcols = [c for c in backends.columns if c not in ("set", "trials", "chosen: share of trials", gain)]
    back_md = md_table.table(["set", "trials", *bcols, f"{gain} (points, 95 % interval; trials better / worse)",
                              "chosen (how often)"],
                             [[r["set"], r["trials"], *(f"{100 * r[c]:.1f}" if r[c] == r[c] else None for c in bcols),
                               r.get(gain), r["chosen: share of trials"]] for r in backends.to_dict("records")])
    n = trials.groupby("set").size()
    sizes = ", ".join(f"{k} ({v} trials)" for k, v in n.items())
    return "\n\n".join([
        OBJECTIVE_TITLE,
        f"Trials spanning bad to good settings (`bench/objective_study.py`: learning rates 1e-5 to 1e-2, 1 to 8 "
        f"epochs, each head, mixup on and off, each sampler, and the training-free `stats-knn` model) on {sizes}; "
        f"{seconds:g} s clips, features {objective_study.FEATURES}. Each trial is trained as a search trains it "
        "and its delivered checkpoint evaluated once on the test split (mean per-ID AUC; the official score on the "
        "2023 layout). Each validation number is the trial's best over its epochs, as the search sees a trial. "
        "Spearman ρ and its 95 % bootstrap interval over trials; ✓: the interval lies above 0. "
        f"`python -m bench.accuracy --only objective --objective-trials {int(n.max())} --seconds {seconds:g} "
        + ("" if set(n.index) == set(objective_study.SETS) else f"--objective-sets '{','.join(n.index)}' ")
        + f"--threads {_threads()}` reruns this section alone.",
        "### The default search metric",
        default_metric_verdict(trials, ranks, network_ranks),
        "### Against the delivered model's test figure (under the back-end validation chose)",
        rho_table(ranks),
        "### Against the network's test figure (the best back-end that reads the network alone)",
        "When `stats-knn` wins validation, the delivered figure is the same for every trial; this is what the "
        "trials' networks are worth.",
        rho_table(network_ranks),
        "### The back-end",
        "The mean test figure (%) of the network trials under the back-end validation chose, under each fixed "
        "back-end, and under the best back-end of each trial picked with hindsight on test; then what the fixed "
        f"default scorer (`{FUSED}`) delivers over the choice, paired by trial (the same "
        "checkpoint scored both ways):",
        back_md,
        f"<details><summary>the trials</summary>\n\n```\n{trials.round(4).to_string(index=False)}\n```\n</details>"])


def trials_at_best(trials: pd.DataFrame, name: str) -> int:
    """How many of set ``name``'s trials delivered its best test figure (most of them: the ranking of that
    figure says little there)."""
    g = trials[trials.set == name].test
    return int((g >= g.max() - 1e-9).sum())


def default_metric_verdict(trials: pd.DataFrame, ranks: pd.DataFrame, network_ranks: pd.DataFrame) -> str:
    """In words, from the tables below: how the default ``search.metric`` ranked trials on each set, which
    numbers rank the trials' networks on every set (interval above 0), and the sets whose delivered figure
    hardly moved between trials (most trials at the set's best), where that column says little."""
    metric, sets = SearchSettings().metric, list(dict.fromkeys(ranks["set"]))
    cell = lambda r: f"{r.rho:+.2f} [{r.lo:+.2f}, {r.hi:+.2f}]"  # noqa: E731
    mine = {(r.set, r.target): cell(r) for t in (ranks, network_ranks) for r in t[t.candidate == metric].itertuples()}
    every = network_ranks.groupby("candidate").agg(sets=("set", "nunique"), lo=("lo", "min"), rho=("rho", "mean"))
    network, delivered = every.rho, ranks.groupby("candidate").rho.mean()  # mean ρ over the sets
    mean = lambda c: (f"mean ρ {network.get(c, math.nan):+.2f} against the networks' figure, "  # noqa: E731
                      f"{delivered.get(c, math.nan):+.2f} against the delivered one")
    every = every[(every.sets == len(sets)) & (every.lo > 0)].sort_values("rho", ascending=False)
    lines = [f"`search.metric` is `{metric}`. Against what the trials' networks are worth: "
             + "; ".join(f"{n} {mine.get((n, 'test_network'), '—')}" for n in sets) + ". Against the delivered "
             "figure: " + "; ".join(f"{n} {mine.get((n, 'test'), '—')}" for n in sets) + f"; {mean(metric)}."]
    if len(every):
        lines.append("Numbers whose interval lies above 0 on every set against the networks' figure: "
                     + ", ".join(f"`{c}` ({mean(c)})" for c in every.index) + ".")
    else:
        lines.append("No number's interval lies above 0 on every set against the networks' figure.")
    for name in sets:
        g = trials[trials.set == name].test
        at_best = trials_at_best(trials, name)
        if 2 * at_best > len(g):
            lines.append(f"On {name}, {at_best} of {len(g)} trials delivered the same, best figure "
                         f"({100 * g.max():.1f} %): its delivered column ranks the other {len(g) - at_best} against "
                         "them, and which trial a search picks there hardly matters.")
    return " ".join(lines)


def evidence(trials: pd.DataFrame, metric: str) -> dict:
    """Per set of the study, how ``metric`` ranked its trials: what ``tuning/objective_evidence.yaml`` holds for
    the search to say when it runs on data like it. ρ with the delivered model's test figure and its interval;
    ``at_best``: the trials that delivered the set's best figure (most of them: the ranking hardly matters
    there); ``network``: ρ with what the trials' networks are worth (the best network-only back-end's figure)."""
    ranks, network = objective_study.rank_table(trials), objective_study.rank_table(trials, "test_network")
    out = {}
    for r in ranks[ranks.candidate == metric].itertuples():
        out[r.set] = {"metric": metric, "rho": round(r.rho, 3), "interval": [round(r.lo, 3), round(r.hi, 3)],
                      "trials": int(r.n), "at_best": trials_at_best(trials, r.set)}
        for n in network[(network.candidate == metric) & (network.set == r.set)].itertuples():
            out[r.set]["network"] = {"rho": round(n.rho, 3), "interval": [round(n.lo, 3), round(n.hi, 3)]}
    return out


def write_evidence(trials: pd.DataFrame) -> None:
    """tuning/objective_evidence.yaml from the study's trials (``evidence`` of the default search metric)."""
    EVIDENCE.write_text("# Written by `python -m bench.accuracy --only objective` (ACCURACY.md): how the default search "
                        "metric ranked\n# trials on each set of the objective study.\n"
                        + yaml.safe_dump(evidence(trials, SearchSettings().metric), sort_keys=False))


def network_section(rows: pd.DataFrame, epochs: int) -> str:
    m = network_study.margins(rows)
    table = md_table.table(
        ["set", "machine type", "default model (chosen back-end)", "best network back-end (hindsight)", "stats-knn",
         "margin (chosen − stats-knn)", "back-ends chosen", f"{FUSED} (fixed)",
         f"{FUSED} − chosen"],
        [[r.set, r.machine_type, f"{100 * r.chosen_mean:.1f} ± {100 * r.chosen_std:.1f}", f"{100 * r.best_network_mean:.1f}",
          f"{100 * r.stats_knn_mean:.1f} ± {100 * r.stats_knn_std:.1f}", f"{100 * r.margin_mean:+.1f} ± {100 * r.margin_std:.1f}",
          r.backends, f"{100 * r.fixed_mean:.1f}", f"{100 * r.fixed_gain_mean:+.1f} ± {100 * r.fixed_gain_std:.1f}"]
         for r in m.itertuples()])
    by_set = m.groupby("set").margin_mean.mean()
    fixed_gain = m.groupby("set").fixed_gain_mean.mean()
    seeds = sorted(set(rows.seed))
    spec = network_study.SIZE
    return "\n\n".join([
        NETWORK_TITLE,
        f"The default model (`complex`, default recipe, back-end chosen on validation) against `stats-knn`, on "
        f"{len(spec['ids'])} IDs × {spec['n_train']} training clips ({spec['n_test_normal']} + {spec['n_test_anomaly']} "
        f"test) of {spec['seconds']:g} s per machine type, seeds {seeds}, {epochs} epochs, features "
        f"{network_study.FEATURES}: the `temporal` preset (anomalies that change timing or phase, every clip's "
        "log-mel mean and std unchanged) and the default generator at the same size. Mean per-ID test AUC in % "
        "(± std over seeds). Mean margin over types: "
        + ", ".join(f"{k} {100 * v:+.1f} points" for k, v in by_set.items()) + f". The same checkpoints under the "
        f"fixed `{FUSED}` instead of the back-end validation chose: "
        + ", ".join(f"{k} {100 * v:+.1f} points" for k, v in fixed_gain.items()) + ". "
        f"`python -m bench.accuracy --only network --network-seeds {','.join(map(str, seeds))} --network-epochs "
        f"{epochs} --network-types {','.join(dict.fromkeys(rows.machine_type))} --threads {_threads()}` reruns this "
        "section alone.",
        table])


DOMAIN_TITLE = "## Domains: DCASE 2022–2025 back-ends and heads"


def domain_section(rows: pd.DataFrame, epochs: int, seconds: float) -> str:
    """The domain study (``bench.domain_study``): per shift, every (head, back-end) by its official score."""
    agg = domain_study.summary(rows)
    parts = [DOMAIN_TITLE,
             f"The synthetic DCASE 2023 layout ({', '.join(f'{k} {v}' for k, v in domain_study.SET.items())}; "
             f"{seconds:g} s clips), trained as `--first-shot` trains (`train.classes: all`) with each head, "
             f"{epochs} epochs, features {domain_study.FEATURES}, seeds {sorted(set(rows.seed))}: the official "
             "score (harmonic mean of AUC (source), AUC (target) and pAUC) and each domain's AUC on the test split, "
             "mean over the machine types, then mean ± std over seeds, in %. `stats-knn` needs no network; `gap` + "
             "`knn-stats` is the default before this study; 'chosen on validation' is the back-end each run chose "
             "(no test clip). `python -m bench.accuracy --only domains --domain-seeds "
             f"{','.join(map(str, sorted(set(rows.seed))))} --threads {_threads()}` reruns this section."]
    for shift, g in agg.groupby("shift", sort=True):
        g = g.sort_values("official_mean", ascending=False)
        parts += [f"### Target-domain shift {shift:g}",
                  md_table.table(["head", "back-end", "official score", "AUC (source)", "AUC (target)"],
                                 [[r.head, r.backend, f"{100 * r.official_mean:.1f}" + (
                                     f" ± {100 * r.official_std:.1f}" if r.official_std == r.official_std else ""),
                                   f"{100 * r.source_mean:.1f}", f"{100 * r.target_mean:.1f}"]
                                  for r in g.itertuples()])]
    return "\n\n".join(parts)


RECIPE_TITLE = "## The training recipe, one option at a time"


def recipe_section(recipes: pd.DataFrame, epochs: int) -> str:
    return "\n\n".join([
        RECIPE_TITLE,
        f"Each option changed alone from the default recipe (`gap` head, `uniform` sampler, `classes: type`), "
        f"trained per machine type of the synthetic set with seeds {sorted(set(recipes.seed))}, {epochs} epochs; "
        "mean per-ID test AUC in % (± std over seeds where there are several). `classes all` trains one classifier "
        "over every (type, ID) under the root (16 classes here, 41 on DCASE 2020) for each type's checkpoint. "
        "The defaults follow this table where it separates the options by more than their spread; where it "
        "does not, the default stays the paper's. "
        f"`python -m bench.accuracy --only recipes --recipe-seeds {','.join(map(str, sorted(set(recipes.seed))))} "
        f"--threads {_threads()}` reruns this section alone.",
        recipe_markdown(recipes)])


PARTS = ("main", "objective", "network", "domains", "recipes", "precision", "attributes")  # the report's order


def run_part(part: str, work: Path, args, features, before: dict | None = None) -> dict:
    """Run one part: what the JSON keeps of it (``settings``: how it was run; ``rows``: what it measured),
    from which ``render_part`` writes its section. ``before``: what the JSON held of it (the objective
    study keeps the trials of the sets that ``--objective-sets`` did not rerun)."""
    seeds = lambda text: [int(x) for x in text.split(",") if x]  # noqa: E731
    quick = args.quick
    settings = {"seconds": args.seconds, "epochs": args.epochs, "threads": torch.get_num_threads(),
                "date": datetime.date.today().isoformat()}
    if part == "main":
        start = time.perf_counter()
        rows, real = _main_rows(work, args, seeds(args.seeds), [x for x in args.sets.split(",") if x], features)
        return {"settings": _settings(args, seeds(args.seeds), features, start), "rows": _records(rows),
                "real_samples": None if real is None else _records(real)}
    if part == "objective":
        n = 6 if quick else args.objective_trials  # the study's anchors; ρ needs 5 trials at least
        sets = list(objective_study.SETS)[:1] if quick else args.objective_sets
        trials = pd.concat([objective_study.run_set(name, work, n, args.seconds) for name in sets], ignore_index=True)
        if before and before.get("trials") and not quick:  # the other sets' trials, as they were measured
            kept = pd.DataFrame(before["trials"])
            trials = pd.concat([kept[~kept.set.isin(sets)], trials], ignore_index=True)
        if not quick:  # what the search says about data like these sets (tuning/objective_evidence.yaml)
            write_evidence(trials)
        return {"settings": settings, "trials": _records(trials)}
    if part == "network":
        epochs = 1 if quick else args.network_epochs
        rows = network_study.run(work, seeds(args.network_seeds)[: 1 if quick else None], epochs,
                                 ("valve",) if quick else tuple(args.network_types), quick=quick)
        return {"settings": {**settings, "epochs": epochs}, "rows": _records(rows)}
    if part == "domains":
        epochs = 1 if quick else args.epochs
        rows = domain_study.run(work, seeds(args.domain_seeds)[: 1 if quick else None], epochs, args.seconds,
                                heads=("gap",) if quick else domain_study.HEADS,
                                shifts=domain_study.SHIFTS[:1] if quick else domain_study.SHIFTS)
        return {"settings": {**settings, "epochs": epochs}, "rows": _records(rows)}
    cut = 1 if quick else None
    if part == "recipes":
        study = recipe_study(work, seeds(args.recipe_seeds)[:cut], args.seconds, args.epochs, features)
    elif part == "precision":
        study = precision_study(work, seeds(args.precision_seeds)[:cut], args.seconds, args.epochs, features)
    else:
        study = attribute_study(work, seeds(args.attribute_seeds)[:cut], args.seconds, args.epochs, features)
    return {"settings": {**settings, "features": features}, "rows": _records(study)}


_RENDERED_THREADS: list[int] = []  # the torch threads of the part being rendered (its settings'), for its command line


def _threads() -> int:
    return _RENDERED_THREADS[-1] if _RENDERED_THREADS else torch.get_num_threads()


def render_part(part: str, data) -> tuple[str, str]:
    """A part's section from what the JSON keeps of it (``run_part``; a part written before settings were
    kept is a bare list of rows, measured at the defaults)."""
    data = data if isinstance(data, dict) else {"rows": data}
    st = {"seconds": 3.0, "epochs": 4, "features": None, **data.get("settings", {})}
    _RENDERED_THREADS[:] = [int(st.get("threads") or torch.get_num_threads())]
    try:
        return _render_part(part, data, st)
    finally:
        _RENDERED_THREADS.clear()


def _render_part(part: str, data: dict, st: dict) -> tuple[str, str]:
    rows = pd.DataFrame(data.get("rows") or [])
    if part == "main":
        real = pd.DataFrame(data["real_samples"]) if data.get("real_samples") else None
        return MAIN_TITLE, main_section(rows, real, data["settings"])
    if part == "objective":
        trials = pd.DataFrame(data["trials"])
        return OBJECTIVE_TITLE, objective_section(trials, objective_study.rank_table(trials),
                                                  objective_study.rank_table(trials, "test_network"),
                                                  objective_study.backend_table(trials), st["seconds"])
    if part == "network":
        return NETWORK_TITLE, network_section(rows, st["epochs"])
    if part == "domains":
        return DOMAIN_TITLE, domain_section(rows, st["epochs"], st["seconds"])
    if part == "recipes":
        return RECIPE_TITLE, recipe_section(rows, st["epochs"])
    if part == "precision":
        return PRECISION_TITLE, precision_section(rows, st["epochs"])
    return ATTRIBUTE_TITLE, attribute_section(rows, st["epochs"], st["seconds"], st["features"])


def _records(frame: pd.DataFrame) -> list[dict]:
    return json.loads(frame.to_json(orient="records"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.accuracy", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(REPO / "ACCURACY.md"))
    ap.add_argument("--seeds", default="0,1,2", help="seeds of the main tables, comma-separated (default: 0,1,2)")
    ap.add_argument("--seconds", type=float, default=3.0, help="synthetic clip length (default: 3)")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--sets", default=",".join(SETS), help=f"comma-separated, of {', '.join(SETS)}")
    ap.add_argument("--quick", action="store_true", help="toy sizes: a smoke test, not a measurement")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--objective-trials", type=int, default=30, help="trials per set of the objective study")
    ap.add_argument("--objective-sets", default=",".join(objective_study.SETS),
                    help="comma-separated sets of the objective study to (re)run; with --only objective the other "
                         f"sets' trials stay as measured (default: all of {', '.join(objective_study.SETS)})")
    ap.add_argument("--network-seeds", default="0,1,2", help="seeds of the network study")
    ap.add_argument("--network-epochs", type=int, default=8, help="epochs of the network study")
    ap.add_argument("--network-types", default=",".join(synth.MACHINE_TYPES),
                    help="machine types of the network study, comma-separated (default: all four)")
    ap.add_argument("--domain-seeds", default="0,1,2", help="seeds of the domain study")
    ap.add_argument("--recipe-seeds", default="0,1", help="seeds of the recipe study, comma-separated")
    ap.add_argument("--precision-seeds", default="0,1,2", help="seeds of the bf16-vs-fp32 study")
    ap.add_argument("--attribute-seeds", default=",".join(map(str, range(10))),
                    help="seeds of the section x attribute study (default: 0..9)")
    ap.add_argument("--render", action="store_true", help="rewrite --out from its JSON without measuring")
    ap.add_argument("--only", choices=PARTS, default=None,
                    help="run one part alone: its section of --out is replaced, its rows go to the JSON, the other "
                         "sections stay as they are")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        for text in (args.seeds, args.network_seeds, args.domain_seeds, args.recipe_seeds, args.precision_seeds,
                     args.attribute_seeds):
            [int(x) for x in text.split(",") if x]
    except ValueError:
        ap.error("seeds must be comma-separated integers")
    if bad := [x for x in args.sets.split(",") if x and x not in SETS]:
        ap.error(f"unknown set(s) {bad}; choose from {list(SETS)}")
    args.network_types = [x for x in args.network_types.split(",") if x]
    if bad := [x for x in args.network_types if x not in synth.MACHINE_TYPES]:
        ap.error(f"unknown network type(s) {bad}; choose from {list(synth.MACHINE_TYPES)}")
    args.objective_sets = [x for x in args.objective_sets.split(",") if x]
    if bad := [x for x in args.objective_sets if x not in objective_study.SETS]:
        ap.error(f"unknown objective set(s) {bad}; choose from {list(objective_study.SETS)}")
    features = None
    if args.quick:
        args.seeds, args.sets, features = ",".join(map(str, QUICK["seeds"])), ",".join(QUICK["sets"]), QUICK["features"]
        args.seconds, args.epochs = QUICK["seconds"], QUICK["epochs"]
    out = Path(args.out)
    json_path = out.with_suffix(".json")
    keep = args.only or args.render  # the other parts' sections and rows stay as they are
    data = json.loads(json_path.read_text()) if json_path.is_file() and keep else {}
    text = out.read_text() if out.is_file() and keep else head({"machine": _machine()}) + "\n"
    parts = [p for p in PARTS if p in data] if args.render else [args.only] if args.only else list(PARTS)
    for part in parts:
        if not args.render:
            with tempfile.TemporaryDirectory(prefix="mimimi-accuracy-") as d:
                data[part] = run_part(part, Path(d), args, features, data.get(part))
        title, section = render_part(part, data[part])
        text = replace_section(text, title, section)
        out.write_text(text)  # each part as it is done: a long run that stops keeps what it measured
        json_path.write_text(json.dumps(data, indent=1))
        print(f"{out}: section {title!r} written", file=sys.stderr)
    return 0


def _machine() -> str:
    return f"{platform.machine()}, {torch.get_num_threads()} torch threads"


def _main_rows(work: Path, args, seeds: list[int], sets: list[str], features) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """The main tables' rows (every set x seed, the default model) and the real-sample check."""
    rows = pd.concat([run_set(name, seed, work, args.seconds, args.epochs, features, "complex")
                      for name in sets for seed in seeds], ignore_index=True)
    return rows, real_samples(REAL_SAMPLES, work / "cache")


def _settings(args, seeds: list[int], features, start: float, **extra) -> dict:
    return dict(date=datetime.date.today().isoformat(), machine=_machine(), minutes=(time.perf_counter() - start) / 60,
                epochs=args.epochs, seeds=seeds, seconds=args.seconds, features=features, **extra)


if __name__ == "__main__":
    sys.exit(main())
