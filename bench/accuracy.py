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

from bench.report import replace_section
from mimimi import kinds, metrics
from mimimi.config import load_config, merge
from mimimi.data import synth
from mimimi.data.index import index_dataset
from mimimi.evaluation import evaluate
from mimimi.features import FeatureCache
from mimimi.scoring.backends import make_scorer
from mimimi.scoring.outputs import clip_outputs
from mimimi.training import fit

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


def objective_study(work: Path, n_trials: int, seconds: float, features: dict | None, machine_type: str = "slider",
                    seed: int = 0) -> pd.DataFrame:
    """How well each leak-free validation number ranks trials by test AUC: ``n_trials`` configs drawn at
    random (learning rate, epochs, mixup, head, sampler) trained on one synthetic type; per trial the best
    ``val_proxy_auc`` (and per proxy family), the best ``val_loss``, and the test mean per-ID AUC of the
    delivered (best) checkpoint under the default scorer."""
    root = work / f"objective-{machine_type}"
    synth.generate(root, [machine_type], synth.DEFAULT_IDS, n_train=12, n_test_normal=8, n_test_anomaly=8,
                   seconds=seconds, seed=seed, workers=2)
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_trials):
        params = {"lr": float(10 ** rng.uniform(-4.0, -2.3)), "epochs": int(rng.integers(1, 5)),
                  "mixup_prob": float(rng.choice([0.0, 0.5])), "head": str(rng.choice(["gap", "arcface"])),
                  "sampler": str(rng.choice(["uniform", "balanced"]))}
        cfg = study_config(root, work, features, {"machine_type": machine_type, "epochs": params["epochs"],
                                                  "lr": params["lr"], "seed": i, "sampler": params["sampler"]},
                           model={"net": {"head": params["head"]}}, augment={"mixup_prob": params["mixup_prob"]})
        result = fit(cfg, work / "objective-runs" / str(i))
        rep = evaluate(result.best_checkpoint, root, work / "objective-eval" / str(i), progress=False, baseline=False)
        fam = {k: max(h.get(k, np.nan) for h in result.history) for k in result.history[0] if k.startswith("val_proxy_auc")}
        rows.append({"trial": i, **params, **fam, "val_loss": min(h["val_loss"] for h in result.history),
                     "test_auc": float(rep.per_type.mean_auc.iloc[0])})
        print(f"objective trial {i}: val_proxy_auc {fam['val_proxy_auc']:.3f}, test AUC {rows[-1]['test_auc']:.3f}",
              file=sys.stderr)
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
        f"{epochs} --threads {torch.get_num_threads()}` reruns this section alone.",
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
        f"{t.get('fp32', float('nan')):.0f} s, bf16 {t.get('bf16', float('nan')):.0f} s ({torch.get_num_threads()} "
        f"torch threads). `python -m bench.accuracy --only precision --precision-seeds {','.join(map(str, seeds))} "
        f"--threads {torch.get_num_threads()}` reruns this section alone.",
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


def objective_markdown(trials: pd.DataFrame) -> str:
    from scipy.stats import spearmanr

    lines = ["| validation number (no test clip) | Spearman ρ with test AUC |", "|---|---|"]
    cols = [c for c in trials.columns if c.startswith("val_proxy_auc")] + ["val_loss"]
    for c in cols:
        sign = -1.0 if c == "val_loss" else 1.0  # a lower loss should mean a better trial
        rho = spearmanr(sign * trials[c], trials.test_auc).statistic
        lines.append(f"| `{c}`" + (" (negated)" if c == "val_loss" else "") + f" | {rho:+.2f} |")
    table = "\n".join(lines)
    return f"{table}\n\n<details><summary>the trials</summary>\n\n```\n{trials.round(4).to_string(index=False)}\n```\n</details>"


def _pm(values: pd.Series) -> str:
    v = 100 * values.dropna()
    if v.empty:
        return "—"
    return f"{v.mean():.1f} ± {v.std(ddof=0):.1f}" if len(v) > 1 else f"{v.mean():.1f}"


def summary_tables(rows: pd.DataFrame) -> dict[str, str]:
    """Per set: scorer rows, machine-type columns (mean per-ID AUC, mean ± std over seeds), then the mean."""
    out = {}
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
    g = rows[(rows.set == name) & (rows.machine_id != "mean")]
    cols = sorted(set(zip(g.machine_type, g.machine_id)))
    lines = ["| scorer | " + " | ".join(f"{t} ID {i}" for t, i in cols) + " |", "|---|" + "---|" * len(cols)]
    for _, s in g.groupby("key", sort=False):
        lines.append(f"| {s.scorer.iloc[0]} | " + " | ".join(
            _pm(s[(s.machine_type == t) & (s.machine_id == i)].auc) for t, i in cols) + " |")
    return "\n".join(lines)


def markdown(rows: pd.DataFrame, real: pd.DataFrame | None, settings: dict,
             trials: pd.DataFrame | None = None, recipes: pd.DataFrame | None = None,
             precisions: pd.DataFrame | None = None, attributes: pd.DataFrame | None = None) -> str:
    tables = summary_tables(rows)
    parts = [
        "# MIMIMI accuracy report",
        f"Written by `make accuracy` (`python -m bench.accuracy`) on {settings['date']}, {settings['machine']}, "
        f"in {settings['minutes']:.0f} minutes{settings.get('scope', '')}. **Synthetic data and a handful of real clips: these are not "
        "real-data accuracy figures.** On real MIMII recordings the ranking of scorers is what issue 11 "
        "measured (kNN on embeddings 0.81, cross-entropy 0.44, `stats-knn` 0.895 mean per-ID AUC on fans).",
        f"Model: `complex`, the default config and recipe (every segment per epoch, `knn-stats` scorer, best epoch by "
        f"`val_proxy_auc`), {settings['epochs']} epochs, seeds {settings['seeds']} (the seed generates the set "
        f"and seeds training); {settings['seconds']:g} s clips"
        + (f"; features {settings['features']}" if settings['features'] else "") + ". Every row comes from "
        "`mimimi.evaluate` (AUC in %, mean over machine IDs, then mean ± std over seeds).",
    ]
    if "synthetic" in tables:
        parts += ["## Synthetic (the embedded default's generator: 4 types × 4 IDs)", tables["synthetic"]]
    if "fails-like-real" in tables:
        parts += ["## Fails like real (`--preset fails-like-real`: imbalanced IDs, off-manifold anomalies, 0 dB)",
                  tables["fails-like-real"], "Per machine ID (ID 00 has the most training clips):",
                  per_id_table(rows, "fails-like-real")]
    if real is not None and len(real):
        lines = ["| machine type | ID | normal | anomalous | AUC |", "|---|---|---|---|---|"]
        lines += [f"| {r.machine_type} | {r.machine_id} | {r.n_normal} | {r.n_anomaly} | {100 * r.auc:.1f} |"
                  for r in real.itertuples()]
        parts += ["## Real-format sample clips (`stats-knn`, leave-one-out)",
                  f"The {int(real.n_normal.sum() + real.n_anomaly.sum())} real DCASE 2020 test clips with two or more "
                  "normals per ID; each normal is scored against its ID's other normal(s), so one or two references: "
                  f"a check that the real formats score sensibly, not an accuracy. Mean AUC {100 * real.auc.mean():.1f}.",
                  "\n".join(lines)]
    if trials is not None and len(trials) >= 3:
        parts.append(objective_section(trials, settings["objective_type"]))
    if recipes is not None and len(recipes):
        parts.append(recipe_section(recipes, settings["epochs"]))
    if precisions is not None and len(precisions):
        parts.append(precision_section(precisions, settings["epochs"]))
    if attributes is not None and len(attributes):
        parts.append(attribute_section(attributes, settings["epochs"], settings["seconds"], settings["features"]))
    return "\n\n".join(parts) + "\n"


OBJECTIVE_TITLE = "## Does the leak-free objective rank trials like test AUC?"


def objective_section(trials: pd.DataFrame, machine_type: str = "slider") -> str:
    return "\n\n".join([
        OBJECTIVE_TITLE,
        f"{len(trials)} trials with random settings (learning rate, epochs, mixup, head, sampler) on the synthetic "
        f"{machine_type} set, seed 0; test AUC = mean per-ID AUC of the delivered checkpoint with the default scorer. "
        "`val_proxy_auc` is the search's default metric; a family that ranks badly (ρ near 0 or negative) is a "
        "candidate to drop from `validation.proxy_kinds`. "
        f"`python -m bench.accuracy --only objective --objective-trials {len(trials)} --threads "
        f"{torch.get_num_threads()}` reruns this section alone.",
        objective_markdown(trials)])


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
        f"--threads {torch.get_num_threads()}` reruns this section alone.",
        recipe_markdown(recipes)])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.accuracy", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(REPO / "ACCURACY.md"))
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated (default: 0,1,2)")
    ap.add_argument("--seconds", type=float, default=3.0, help="synthetic clip length (default: 3)")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--sets", default=",".join(SETS), help=f"comma-separated, of {', '.join(SETS)}")
    ap.add_argument("--quick", action="store_true", help="toy sizes: a smoke test, not a measurement")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--objective-trials", type=int, default=20, help="trials of the objective study (0: skip)")
    ap.add_argument("--recipe-seeds", default="0,1", help="seeds of the recipe study, comma-separated ('': skip)")
    ap.add_argument("--precision-seeds", default="0,1,2", help="seeds of the bf16-vs-fp32 study ('': skip)")
    ap.add_argument("--attribute-seeds", default=",".join(map(str, range(10))),
                    help="seeds of the section x attribute study (default: 0..9; '': skip)")
    ap.add_argument("--only", choices=["main", "recipes", "precision", "objective", "attributes"], default=None,
                    help="run one part alone: its section(s) of --out are replaced, its rows go to the JSON "
                         "(main: the synthetic, fails-like-real and real-sample tables; the studies are kept)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s]
        recipe_seeds = [int(s) for s in args.recipe_seeds.split(",") if s]
        precision_seeds = [int(s) for s in args.precision_seeds.split(",") if s]
        attribute_seeds = [int(s) for s in args.attribute_seeds.split(",") if s]
    except ValueError:
        ap.error(f"--seeds and --recipe-seeds must be comma-separated integers, got {args.seeds!r}, {args.recipe_seeds!r}")
    sets = [s for s in args.sets.split(",") if s]
    if bad := [s for s in sets if s not in SETS]:
        ap.error(f"unknown set(s) {bad}; choose from {list(SETS)}")
    features = None
    if args.quick:
        seeds, sets, features = QUICK["seeds"], list(QUICK["sets"]), QUICK["features"]
        args.seconds, args.epochs = QUICK["seconds"], QUICK["epochs"]
    if args.quick:
        recipe_seeds, precision_seeds, attribute_seeds = recipe_seeds[:1], precision_seeds[:1], attribute_seeds[:1]
    start = time.perf_counter()
    if args.only == "main":
        return _main_tables(args, seeds, sets, features, start)
    if args.only:
        with tempfile.TemporaryDirectory(prefix="mimimi-accuracy-") as d:
            if args.only == "recipes":
                study = recipe_study(Path(d), recipe_seeds, args.seconds, args.epochs, features)
                title, section = RECIPE_TITLE, recipe_section(study, args.epochs)
            elif args.only == "precision":
                study = precision_study(Path(d), precision_seeds, args.seconds, args.epochs, features)
                title, section = PRECISION_TITLE, precision_section(study, args.epochs)
            elif args.only == "attributes":
                study = attribute_study(Path(d), attribute_seeds, args.seconds, args.epochs, features)
                title, section = ATTRIBUTE_TITLE, attribute_section(study, args.epochs, args.seconds, features)
            else:
                study = objective_study(Path(d), 3 if args.quick else args.objective_trials, args.seconds, features)
                title, section = OBJECTIVE_TITLE, objective_section(study)
        out = Path(args.out)
        out.write_text(replace_section(out.read_text() if out.is_file() else "# MIMIMI accuracy report\n", title,
                                       section))
        data = json.loads(out.with_suffix(".json").read_text()) if out.with_suffix(".json").is_file() else {}
        key = {"objective": "objective_trials"}.get(args.only, args.only)
        data[key] = json.loads(study.to_json(orient="records"))
        out.with_suffix(".json").write_text(json.dumps(data, indent=1))
        print(section)
        print(f"updated {out} and {out.with_suffix('.json').name}", file=sys.stderr)
        return 0
    with tempfile.TemporaryDirectory(prefix="mimimi-accuracy-") as d:
        work = Path(d)
        recipes = recipe_study(work, recipe_seeds, args.seconds, args.epochs, features) if recipe_seeds else None
        precisions = (precision_study(work, precision_seeds, args.seconds, args.epochs, features)
                      if precision_seeds else None)
        attribute_rows = (attribute_study(work, attribute_seeds, args.seconds, args.epochs, features)
                          if attribute_seeds else None)
        rows, real = _main_rows(work, args, seeds, sets, features)
        n_obj = 3 if args.quick else args.objective_trials
        trials = objective_study(work, n_obj, args.seconds, features) if n_obj else None
    settings = _settings(args, seeds, features, start, objective_type="slider")
    out = Path(args.out)
    out.write_text(markdown(rows, real, settings, trials, recipes, precisions, attribute_rows))
    out.with_suffix(".json").write_text(json.dumps(
        {"settings": settings, "rows": json.loads(rows.to_json(orient="records")),
         "real_samples": None if real is None else json.loads(real.to_json(orient="records")),
         "objective_trials": None if trials is None else json.loads(trials.to_json(orient="records")),
         "recipes": None if recipes is None else json.loads(recipes.to_json(orient="records")),
         "precision": None if precisions is None else json.loads(precisions.to_json(orient="records")),
         "attributes": None if attribute_rows is None else json.loads(attribute_rows.to_json(orient="records"))},
        indent=1))
    print(f"wrote {out} and {out.with_suffix('.json').name}", file=sys.stderr)
    return 0


def _main_rows(work: Path, args, seeds: list[int], sets: list[str], features) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """The main tables' rows (every set x seed, the default model) and the real-sample check."""
    rows = pd.concat([run_set(name, seed, work, args.seconds, args.epochs, features, "complex")
                      for name in sets for seed in seeds], ignore_index=True)
    return rows, real_samples(REAL_SAMPLES, work / "cache")


def _settings(args, seeds: list[int], features, start: float, **extra) -> dict:
    return dict(date=datetime.date.today().isoformat(), machine=f"{platform.machine()}, "
                f"{torch.get_num_threads()} torch threads", minutes=(time.perf_counter() - start) / 60,
                epochs=args.epochs, seeds=seeds, seconds=args.seconds, features=features, **extra)


def _main_tables(args, seeds: list[int], sets: list[str], features, start: float) -> int:
    """``--only main``: retrain the main tables; the studies' sections and rows stay as they are."""
    out = Path(args.out)
    json_path = out.with_suffix(".json")
    data = json.loads(json_path.read_text()) if json_path.is_file() else {}
    with tempfile.TemporaryDirectory(prefix="mimimi-accuracy-") as d:
        rows, real = _main_rows(Path(d), args, seeds, sets, features)
    settings = _settings(args, seeds, features, start,
                         objective_type=data.get("settings", {}).get("objective_type", "slider"),
                         scope=" (`--only main`: the main tables; each study below names the command that wrote it)")
    text = markdown(rows, real, settings).rstrip("\n") + "\n"
    if out.is_file():  # the studies' sections as they were written, each by its own command
        old = out.read_text()
        starts = [i for i in (old.find(t) for t in (OBJECTIVE_TITLE, RECIPE_TITLE, PRECISION_TITLE, ATTRIBUTE_TITLE)) if i >= 0]
        if starts:
            text += "\n" + old[min(starts):]
    out.write_text(text)
    data.update(settings=settings, rows=json.loads(rows.to_json(orient="records")),
                real_samples=None if real is None else json.loads(real.to_json(orient="records")))
    json_path.write_text(json.dumps(data, indent=1))
    print(f"updated the main tables of {out} and {json_path.name}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
