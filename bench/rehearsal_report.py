"""REHEARSAL.md from the plain data ``bench.rehearsal`` collected (``rehearsal.json``): one function per section,
each tolerant of a run that stopped part-way (a section shows what there is)."""
from __future__ import annotations

import math
from typing import Any

from bench import rehearsal_projection as projection
from bench.rehearsal_stages import GPU, gpu_training_rates
from bench.report import fmt, md_table

FLAG_RATIO = 1.3  # full-size cost per clip above this multiple of the quarter size's: not linear
SIZES = ("quarter", "full")
STAGE_WORDS = {
    "synthesise": "synthesise the set and the score folder (`mimimi.data.synth.generate`; not a user's stage)",
    "cache": "fill the feature cache (`python -m mimimi.cache`)",
    "search": "search (`tuning/search.py`: trials, final evaluation, registration)",
    "evaluate": "evaluate the registered run (`python -m mimimi.evaluate --run-id`)",
    "score": "score a folder (`python -m mimimi.score --run-id`)",
    "pyfunc_load": "load the registered pyfunc model (`Tracker.load_pyfunc`)",
    "delivery": "training DataLoader over the cache, two epochs per num_workers",
}


def _sizes(res: dict[str, Any]) -> list[str]:
    return [s for s in SIZES if s in res.get("sizes", {})]


def _stage(res: dict[str, Any], size: str, stage: str) -> dict[str, Any] | None:
    return res.get("sizes", {}).get(size, {}).get("stages", {}).get(stage)


def _result(res: dict[str, Any], size: str, stage: str) -> dict[str, Any]:
    return (_stage(res, size, stage) or {}).get("result") or {}


def _n(count: int, word: str) -> str:
    """A count and its word.

    >>> _n(1, "file"), _n(4, "file")
    ('1 file', '4 files')
    """
    return f"{count} {word}{'' if count == 1 else 's'}"


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def _ms(seconds: float | None) -> str:
    return "—" if seconds is None or not math.isfinite(seconds) else f"{seconds * 1e3:,.1f}"


def head(res: dict[str, Any]) -> list[str]:
    s = res["settings"]
    md = ["# MIMIMI rehearsal at the size users have", "",
          f"Written by `python -m bench.rehearsal` (`make rehearsal`) on {res['date']}, in "
          f"{res.get('wall_s', 0):.0f} s. "
          f"One synthetic machine type ({', '.join(s['machine_types'])}) in the DCASE 2020 layout goes through the "
          "path a user runs, each stage a command in its own process, measured with every process it starts "
          "(\"How it is measured\" below). Each size's figures are per clip of the stage's unit; the ratio "
          f"full / quarter of those costs is flagged where it exceeds {FLAG_RATIO:g}: that stage costs more per "
          "clip at full size (it does not scale linearly). The raw figures are in `rehearsal.json` "
          "(`comparison.<stage>.<size>.per_clip` for every stage)."]
    for a in res.get("again", []):
        md += ["", f"**Measured again** on {a['date']} at commit {a.get('git') or 'unknown'} "
                   f"(`python -m bench.rehearsal --only {','.join(a['stages'])}`, {' and '.join(a['sizes'])} size, on "
                   f"the data of the run above): {', '.join(a['stages'])}. The other stages' figures are the first "
                   "run's."]
    if res.get("quick"):
        md += ["", "**Quick mode: tiny sizes, a test of the command. These are not measurements.**"]
    if res.get("error"):
        md += ["", f"**The run stopped early:** {res['error'].splitlines()[0]}"]
    if len(res["sizes"]) == 1 and not res.get("error"):
        size = next(iter(res["sizes"]))
        md += ["", f"**One size only** (`python -m bench.rehearsal --size {size}`): the {size} size's costs, with "
                   "no ratio between the sizes; `make rehearsal` measures both."]
    rows = [[name, f"{x['spec']['ids']} IDs x {x['spec']['train']} training clips, {x['spec']['test_normal']} + "
                   f"{x['spec']['test_anomaly']} test clips per ID, {x['spec']['seconds']:g} s; "
                   f"{_n(x['spec']['score_files'], 'file')} scored"] for name, x in res["sizes"].items()]
    md += ["", md_table(["size", "set"], rows), "",
           f"Search: {_n(s['trials'], 'trial')} of {_n(s['epochs'], 'epoch')} (ASHA's grace period = the epochs: "
           f"none stopped early), the space `train.classes: type | all` and `train.lr`{_side_by_side(s)}; "
           f"features cached: {', '.join(s['kinds'])}; "
           f"{s['workers']} processes synthesise and fill the cache."
           + (f" Extra configs: {', '.join(s['configs'])}." if s["configs"] else "")]
    return md


def _side_by_side(settings: dict[str, Any]) -> str:
    """How the trials shared the machine (runs before the resources were recorded say nothing)."""
    r = settings.get("resources")
    return (f", the trials side by side (each: {r['trial_cpus']:g} CPU for the trial, {r['workers']} Ray Train "
            f"worker x {r['cpus_per_worker']:g} CPU)") if r else ""


def machine(res: dict[str, Any]) -> list[str]:
    m, v, s = res["machine"], res["versions"], res["settings"]
    load = f"{s['load_start'][0]:.2f} / " + (f"{s['load_end'][0]:.2f}" if s.get("load_end") else "—")
    return ["", "## Machine", "", md_table(["", ""], [
        ["CPU", f"{m['cpu']} ({m['cpus_usable']} usable cores)"],
        ["memory", f"{m['memory_gib']} GiB"],
        ["GPU", "none" if not m.get("cuda") else m["cuda"]["name"]],
        ["load average (1 min) at start / end", f"{load} (other processes share these cores when it exceeds 0)"],
        ["platform", m["platform"]],
        ["versions", ", ".join(f"{k} {x}" for k, x in v.items() if x)],
    ])]


def per_clip(res: dict[str, Any]) -> list[str]:
    comp = res.get("comparison", {})
    rows = []
    for stage, row in comp.items():
        cells = [STAGE_WORDS.get(stage, stage), next((row[s]["unit"] for s in SIZES if s in row), "—")]
        for s in SIZES:
            x = row.get(s)
            cells += ([x["clips"], _ms(x["per_clip"]["wall_s"]), _ms(x["per_clip"]["cpu_s"])] if x else ["—"] * 3)
        r = row.get("ratio")
        cells += [f"{r['wall_s']:.2f}" if r else "—", f"{r['cpu_s']:.2f}" if r else "—",
                  ("**yes**" if row.get("flag") else "no") if r else "—"]
        rows.append(cells)
    return ["", "## Cost per clip, quarter beside full", "",
            "Wall and CPU milliseconds per clip of the stage's unit (CPU: the stage's processes and every process "
            "they started). A stage with a fixed cost (process and Ray start, imports) costs more per clip at the "
            "quarter size: a ratio below 1 is that, not a saving.", "",
            md_table(["stage", "unit", "quarter: clips", "wall ms/clip", "CPU ms/clip", "full: clips", "wall ms/clip",
                      "CPU ms/clip", "ratio wall", "ratio CPU", f"> {FLAG_RATIO:g}"], rows)]


def stages(res: dict[str, Any]) -> list[str]:
    rows = []
    for size in _sizes(res):
        for stage, x in res["sizes"][size]["stages"].items():
            busy = x["cpu_s"] / x["wall_s"] if x["wall_s"] > 0 else math.nan
            rows.append([size, stage, x["wall_s"], x["cpu_s"], f"{busy:.2f}", x["cpu_autoreaped_s"], x["cpu_sampled_s"],
                         x["tree_peak_pss_mib"], x["tree_peak_rss_mib"], x["descendants_outlived_s"],
                         x["leftover_processes"], "ok" if x["returncode"] == 0 else f"**exit {x['returncode']}**"])
    return ["", "## Each stage", "",
            "Wall and CPU seconds of each stage and the cores it kept busy on average (CPU / wall); the part of "
            "the CPU that only sampling sees (processes the kernel reaped for a parent that ignores SIGCHLD: "
            "Ray's workers under the raylet), and the CPU summed from the samples alone (a cross-check); the "
            "largest memory of all its processes together at one sampling, proportional (a shared page counted "
            "once: what the machine needs) and resident (shared pages counted in every process); how long its "
            "processes outlived the command, and how many were still there a minute later (ended by the "
            "rehearsal).", "",
            md_table(["size", "stage", "wall s", "CPU s", "cores busy", "of which autoreaped", "CPU s (sampled)",
                      "peak PSS MiB, all processes", "peak RSS MiB, summed", "outlived s", "left over", "status"],
                     rows)]


def memory(res: dict[str, Any]) -> list[str]:
    rows = []
    for size in _sizes(res):
        for stage, x in res["sizes"][size]["stages"].items():
            for kind, k in x["processes"].items():
                rows.append([size, stage, kind, k["count"], k["peak_rss_mib"], k["cpu_sampled_s"]])
    return ["", "## Peak memory by process kind", "",
            "Per stage and kind of process: how many there were, the peak resident set (VmHWM) of the largest, "
            "and their CPU seconds. A trial is Tune's trial function (`ray::ImplicitFunc`), a Ray Train worker "
            "trains (`ray::RayTrainWorker`), the driver is the stage's command itself.", "",
            md_table(["size", "stage", "process kind", "processes", "peak RSS MiB (largest)", "CPU s"], rows)]


def search(res: dict[str, Any]) -> list[str]:
    md = ["", "## The search, per trial", "",
          "From Tune's `result.json` of each trial: its wall time split as `bench/ray_overhead.py` splits it, and "
          "the seconds of one epoch (training + validation) per training segment of the trial's type (the "
          "delivery stage counts the segments)."]
    rows, per_seg = [], {}
    for size in _sizes(res):
        items = _result(res, size, "delivery").get("items")
        for t in res["sizes"][size].get("trials", []):
            epochs = [e for e in t["epoch_seconds"] if e is not None]
            seg = (sum(epochs) / len(epochs) / items) if epochs and items else None
            per_seg.setdefault(size, []).append(seg)
            pairs = [(v, e) for v, e in zip(t.get("validation_seconds") or [], t["epoch_seconds"]) if v and e]
            share = f"{100 * sum(v for v, _ in pairs) / sum(e for _, e in pairs):.0f} %" if pairs else None
            parts = [(n, b) for n, b in zip(t.get("validation_network_seconds") or [],
                                            t.get("validation_backend_seconds") or [])
                     if n is not None and b is not None]
            split = (f"{_mean(n for n, _ in parts):.1f} / {_mean(b for _, b in parts):.1f}" if parts else None)
            params = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                               for k, v in sorted(t["params"].items())) or "—"
            rows.append([size, t.get("trial_id", t["trial"]), params, t["epochs"], t["wall_s"], t["worker_start_s"],
                         t["setup_s"], t["epochs_s"], t["other_s"], _ms(seg), share, split])
        notes = _result(res, size, "search").get("notes", [])
        md += [""] + [f"- {size}: {n}" for n in notes]
    md += ["", md_table(["size", "trial", "sampled", "epochs", "wall s", "worker start s", "fit set-up s",
                         "epochs s", "other s", "epoch ms / training segment", "validation share of the epochs",
                         "validation s per epoch: network / back-ends"], rows)]
    m = res["settings"].get("max_references_per_id")
    spec = {s: res["sizes"][s]["spec"] for s in _sizes(res)}
    if m and "full" in spec and "quarter" in spec and spec["quarter"]["train"] <= m < spec["full"]["train"]:
        md += ["", f"Not the same work per clip: validation fits its back-ends on at most {m} clips per ID "
                   f"(`validation.max_references_per_id`), every clip at the quarter size ({spec['quarter']['train']} "
                   f"per ID) but a sample at full size ({spec['full']['train']}), where each trial then ends with "
                   "`mimimi.training.finalize`: one more pass of the network over every training clip to refit "
                   "them (in its `other s`). Validation itself costs about the same per epoch at both sizes."]
    mean = {s: sum(v for v in xs if v) / max(1, sum(1 for v in xs if v)) for s, xs in per_seg.items()}
    if mean.get("full") and mean.get("quarter"):
        r = mean["full"] / mean["quarter"]
        md += ["", f"Epoch seconds per training segment, full / quarter: {r:.2f}"
               + (f" (**above {FLAG_RATIO:g}**)" if r > FLAG_RATIO else "") + "."]
    return md


def disk(res: dict[str, Any]) -> list[str]:
    sizes = [s for s in _sizes(res) if "disk" in res["sizes"][s]]
    if not sizes:
        return ["", "## Disk", "", "Not measured (the run stopped before)."]
    d = {s: res["sizes"][s]["disk"] for s in sizes}
    n_trials = {s: max(1, len(res["sizes"][s].get("trials", []))) for s in sizes}
    clips = {s: res["sizes"][s]["stages"]["cache"]["clips"] for s in sizes}

    def each(fn) -> list[str]:
        out = []
        for s in sizes:
            try:
                v = fn(s)
            except (KeyError, TypeError, ZeroDivisionError, IndexError):
                v = None
            out.append(fmt(v, 2) if not isinstance(v, str) else v)
        return out

    trial = lambda s, key: sum(t[key] for t in res["sizes"][s]["trials"]) / n_trials[s]  # noqa: E731
    ml = lambda s: d[s]["mlflow"]  # noqa: E731
    trial_runs = lambda s: ml(s)["trial_runs"]  # noqa: E731
    rows = [
        ["wav of the set (MiB)", *each(lambda s: d[s]["wav_mib"])],
        ["wav per clip (MiB)", *each(lambda s: d[s]["wav_mib"] / clips[s])],
        ["score folder (MiB)", *each(lambda s: d[s]["score_files_mib"])],
        *[[f"feature cache, {k} (MiB)", *each(lambda s, k=k: d[s]["cache_mib"][k])]
          for k in sorted({k for s in sizes for k in d[s]["cache_mib"]})],
        ["feature cache per clip (MiB)", *each(lambda s: sum(d[s]["cache_mib"].values()) / clips[s])],
        ["Tune trial folder per trial: results (MiB)", *each(lambda s: trial(s, "tune_trial_mib"))],
        ["Train run folder per trial (MiB)", *each(lambda s: trial(s, "train_run_mib"))],
        ["  of which its best checkpoint (MiB)", *each(lambda s: trial(s, "checkpoint_mib"))],
        ["Ray's logs kept (MiB)", *each(lambda s: d[s]["ray_logs_mib"])],
        ["storage path in all (MiB)", *each(lambda s: d[s]["storage_total_mib"])],
        ["Optuna study (MiB)", *each(lambda s: d[s]["optuna_db_mib"])],
        ["MLflow sqlite file (MiB)", *each(lambda s: ml(s)["db_mib"])],
        ["MLflow per trial run: artifacts (MiB)", *each(lambda s: _mean(r["artifacts_mib"] for r in trial_runs(s)))],
        ["MLflow per trial run: its logged model (MiB)", *each(lambda s: _mean(r["models_mib"] for r in trial_runs(s)))],
        ["MLflow, the type's run: evaluation, plots (MiB)", *each(lambda s: ml(s)["type_run"]["artifacts_mib"])],
        ["MLflow, the type's run: the registered model (MiB)", *each(lambda s: ml(s)["type_run"]["models_mib"])],
        ["MLflow, the search run (MiB)", *each(lambda s: sum(ml(s)["search_run"].values()))],
        ["MLflow, the rest (MiB)", *each(lambda s: ml(s)["other_mib"])],
        ["MLflow artifacts in all (MiB)", *each(lambda s: ml(s)["artifacts_total_mib"])],
    ]
    return ["", "## Disk", "",
            "Apparent sizes of the files, after every stage of the size ran. A trial's best checkpoint is in its "
            "Train run's folder (`train-<trial name>` under the storage path; Tune's trial folder keeps its "
            "results); the registered model's files are among MLflow's logged models.", "",
            md_table(["what", *sizes], rows)]


def gpu(res: dict[str, Any]) -> list[str]:
    md = ["", "## The data path for a GPU", ""]
    p32, p16 = GPU["precisions"]["fp32"], GPU["precisions"]["bf16"]
    md += ["The training DataLoader (`mimimi.kinds`' training dataset over the feature cache, built as "
           "`mimimi.training._loader` builds it, the config's batch size, shuffled) delivering segments on this "
           "CPU, whole epochs per `num_workers` value (the loader's workers start again every epoch: that "
           "start is included): first with the cache's pages dropped from the OS page cache (read from disk: a "
           "node's first epoch, or every epoch where the cache outgrows the node's memory), then again at once "
           "(the pages in memory: the later epochs where it fits; what a GPU is fed, and what the projection "
           "uses); and the augmentations the training loop applies to every batch in the training "
           "process (`mimimi.training._augment`: mask, noise, shift, mixup, the config's settings), timed alone. "
           "With workers, loading overlaps the training process. The augmentations run on the training device "
           "(`mimimi.training._train_epoch`), so on a GPU they cost GPU time (elementwise, small beside the "
           "network) and the GPU is fed at the loader's rate; their CPU rate below is what a CPU-only trial pays. "
           "The training process runs with "
           "the torch threads a trial's Ray Train worker gets (its `resources.cpus_per_worker`, which Ray gives "
           "it as `OMP_NUM_THREADS`); on a machine busy with other work, compare the load average above.", "",
           f"One GPU's consumption is an estimate, not a measurement (no GPU figure in BENCHMARKS.md yet): "
           f"{GPU['name']}; {GPU['source']}. A training step costs {GPU['training_flops_per_forward']:g}x the "
           f"forward FLOPs ({GPU['training_flops_source']}); assumed reached: {p32['fraction']:.0%} of the "
           f"{p32['peak_tflops']:g} TFLOPS fp32 peak, {p16['fraction']:.0%} of the {p16['peak_tflops']:g} TFLOPS "
           "bf16 peak. `make bench-gpu` on such a GPU replaces the assumption with a figure."]
    for size in _sizes(res):
        r = _result(res, size, "delivery")
        if not r:
            continue
        flops = r.get("forward_flops_per_segment")
        rates = gpu_training_rates(flops) if flops else {}
        aug = r["augment_segments_per_s"]
        rows = []
        for x in r["loader"]:
            load = x["segments_per_s"] or 0.0  # what a GPU is fed: the augmentations run on the GPU
            keeps = ", ".join(f"{p}: {'yes' if load >= v else '**no**'}" for p, v in rates.items())
            cold = x.get("cold_segments_per_s") if x.get("pages_dropped") else None  # runs before it: not measured
            rows.append([x["num_workers"], x["segments"], x["epoch_s"], x["first_batch_s"], load,
                         x.get("after_first_batch_segments_per_s"), cold, keeps or "—"])
        best = max((row for row in rows), key=lambda row: row[4], default=None)
        md += ["", f"### {size} ({r['train_clips']} training clips, {r['segments_per_clip']:.2f} segments per clip, "
                   f"batch {r['batch_size']}, {_n(r['torch_threads'], 'torch thread')})", "",
               md_table(["num_workers", "segments", "epoch s", "first batch s",
                         "loader segments/s (epoch): what a GPU is fed", "after the first batch",
                         "from disk (pages dropped) segments/s", "keeps up with one GPU"], rows), "",
               f"Augmentations on this CPU (what a CPU-only trial pays; a GPU trial runs them on the GPU): {aug:,.0f} "
               f"segments/s ({r.get('augment_segments_per_cpu_s') or 0:,.0f} per CPU second of the training process: "
               f"the rate on a free core). Forward FLOPs per segment "
               f"({' x '.join(map(str, r['segment_shape']))}): "
               + (f"{flops / 1e9:.2f} GFLOP; one GPU trains at about {rates['fp32']:,.0f} segments/s in fp32 and "
                  f"{rates['bf16']:,.0f} in bf16 (estimate)." if flops else "— (not a classifier).")]
        if best and rates:
            need = max(rates.values())
            enough = [row[0] for row in rows if row[4] >= need]
            if enough:
                verdict = (f"Delivery keeps up with the faster estimate ({need:,.0f} segments/s) with "
                           f"num_workers={min(enough)} here.")
            else:
                verdict = (f"No setting measured here keeps up with {need:,.0f} segments/s: the best, num_workers="
                           f"{best[0]}, feeds {best[4]:,.0f}.")
            md += ["", verdict]
    return md


def method(res: dict[str, Any]) -> list[str]:
    s = res["settings"]
    return ["", "## How it is measured", "",
            "- Each stage is one command in a fresh process (`bench/rehearsal_measure.py`); the rehearsal is a "
            "child subreaper" + (" (here: yes)" if s.get("subreaper") else " (here: **no**, so orphans escape)")
            + ", so processes whose parent exits first (Ray's, at shutdown) are re-parented to it and reaped there.",
            "- Wall: from the command's start to its exit (what a user waits); processes it leaves behind are "
            "still measured until they exit, for at most a minute, and any left then are ended and counted.",
            "- CPU: user + system seconds of the command and every descendant, `getrusage(RUSAGE_CHILDREN)` around "
            "the stage, plus the last `/proc/<pid>/stat` reading of each process whose parent ignored SIGCHLD "
            "(Ray's raylet does: the kernel reaps its workers and their time reaches no rusage); the sampled "
            "column sums every process's last reading instead.",
            f"- Memory: every {s['interval_s']:g} s the process tree is read from `/proc`: each process's `VmHWM` "
            "(the kernel's high-water mark of its resident set, so a peak between samples is not missed) and "
            "`VmRSS`, and its proportional set size (`Pss` of `smaps_rollup`; every fourth time in a tree of more "
            "than 4 processes, so a short peak there can be missed); the kind of a "
            "process comes from its command line, which Ray sets to `ray::<actor class>.<method>`. A process's "
            "peak counts the pages it shares (torch's libraries, Ray's object store) in full.",
            "- Disk: apparent sizes of the files under each folder after the size's last stage; MLflow's through "
            "the runs' artifact locations (`Tracker.get_run`, `child_runs`).",
            "- Per clip: the stage's figure divided by its unit's count (table above); the search's unit is the "
            "training clips of the set, so its fixed costs (Ray, worker start, evaluation) weigh more at the "
            "quarter size."]


def render_markdown(res: dict[str, Any]) -> str:
    """REHEARSAL.md from a results dict (``rehearsal.json``): one section per part of the run."""
    md = head(res) + machine(res) + per_clip(res) + stages(res) + memory(res) + search(res) + disk(res) + gpu(res)
    md += projection.render(projection.load_projection(res))
    md += method(res)
    return "\n".join(md).rstrip() + "\n"
