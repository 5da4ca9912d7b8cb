"""The benchmark's targets and its markdown report, from the plain data ``bench.run`` collected."""
from __future__ import annotations

import math
from typing import Any

from mimimi import markdown
from mimimi.training import COMPILE_MIN_BATCHES

# (name, what, row, figure, threshold, needs native bf16): the targets against the reference network
NETWORK_TARGETS = (
    ("train_bf16", "training step, default network in bf16 / reference (CPU with native bf16)", "default/bf16",
     "train_speedup", 4.0, True),
    ("infer_bf16", "inference, default network in bf16 / reference (CPU with native bf16)", "default/bf16",
     "infer_speedup", 4.5, True),
    ("train_fp32", "training step, default network in fp32 / reference", "default/fp32", "train_speedup", 2.0, False),
    ("infer_fp32", "inference, default network in fp32 / reference", "default/fp32", "infer_speedup", 2.0, False),
)
DELIVERY_TARGET = 20.0  # cached-feature delivery at least 20x what the training step consumes


def evaluate_targets(res: dict[str, Any]) -> list[dict[str, Any]]:
    """The CPU targets: bf16 ones where the CPU has native bf16, the fp32 ones everywhere (on a CPU without
    bf16 they are the issue's; with it, they measure the default precision), and feature delivery."""
    rows = res["devices"]["cpu"]["networks"]["rows"]
    native = res["machine"]["native_bf16"]
    out = []
    for name, what, row, key, threshold, needs_bf16 in NETWORK_TARGETS:
        if needs_bf16 and not native:
            continue
        out.append({"name": name, "what": what, "row": row, "mode": "train" if key.startswith("train") else "infer",
                    "value": rows[row][key], "threshold": threshold})
    f = res["features"]
    f["delivery_over_training"] = f["delivery_segments_per_s"] / rows["default/fp32"]["train_segments_per_s"]
    out.append({"name": "delivery", "what": "cached-feature delivery / training-step consumption (default, fp32)",
                "row": None, "mode": None, "value": f["delivery_over_training"], "threshold": DELIVERY_TARGET})
    for t in out:
        t["met"], t["why"] = bool(t["value"] >= t["threshold"]), None
    return out


def explain_network_target(t: dict[str, Any], rows: dict[str, Any], prof: dict[str, Any], peak: float) -> str:
    """Why a speed-up stops short, in the run's own medians (the profile gives shares only: profiling slows
    ops unevenly)."""
    key = "train_step" if t["mode"] == "train" else "infer_batch"
    mine, ref = rows[t["row"]][key]["median_s"] * 1e3, rows["reference/fp32"][key]["median_s"] * 1e3
    need = ref / t["threshold"]
    what = "training step" if t["mode"] == "train" else "inference batch"
    p = prof["default"]
    conv = mine * p["conv_share"]
    rest = mine - conv
    text = (f"The default network's {what} ({t['row'].split('/')[1]}) takes {mine:.0f} ms, the reference's "
            f"{ref:.0f} ms; {t['threshold']:g}x needs {need:.0f} ms. In the profile below, convolutions (forward "
            f"and backward kernels) are {p['conv_share']:.0%} of the default network's time and batch norm and "
            f"PReLU {p['batchnorm_prelu_share']:.0%} (reference: convolutions {prof['reference']['conv_share']:.0%}).")
    if rest >= need:
        text += (f" Everything but the convolutions already takes about {rest:.0f} ms, more than the {need:.0f} ms "
                 "budget: no convolution kernel alone can reach the target; the element-wise passes (batch norm, "
                 "PReLU, the stacking of real and imaginary parts) would have to be fused (train.compile does).")
    else:
        text += (f" The convolutions would have to fall from about {conv:.0f} ms to {need - rest:.0f} ms with the "
                 f"rest unchanged, i.e. {conv / (need - rest):.1f}x faster; the fp32 matmul peak measured here is "
                 f"{peak:.0f} GFLOP/s.")
    return text


# ----------------------------------------------------------------------------- markdown


def replace_section(md: str, title: str, section: str) -> str:
    r"""``md`` with the section whose heading line is ``title`` or starts with ``title`` and a space (up to
    the next ``## ``) replaced by ``section``, or with ``section`` appended when there is none.

    >>> replace_section("# R\n\n## GPU (old)\n\nold\n\n## Run log\n\nrows\n", "## GPU", "## GPU (new)\n\nnew")
    '# R\n\n## GPU (new)\n\nnew\n\n## Run log\n\nrows\n'
    """
    lines = md.rstrip("\n").split("\n")
    start = next((i for i, ln in enumerate(lines) if ln == title or ln.startswith(title + " ")), None)
    if start is None:
        return md.rstrip("\n") + "\n\n" + section + "\n"
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    rest = lines[end:]
    return "\n".join(lines[:start] + section.split("\n") + ([""] + rest if rest else [])) + "\n"


def fmt(v: Any, digits: int = 1) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:,.{digits}f}"
    return str(v)


def md_table(headers: list[str], rows: list[list[Any]]) -> str:
    """``mimimi.markdown.table`` with numbers formatted by ``fmt``."""
    return markdown.table(headers, [[c if isinstance(c, str) else fmt(c) for c in row] for row in rows])


def _ms(s: dict[str, Any]) -> str:
    return f"{s['median_s'] * 1e3:,.0f} ({s['min_s'] * 1e3:,.0f})"


def summary_rows(res: dict[str, Any]) -> list[list[str]]:
    devs = list(res["devices"])

    def each(fn) -> list[str]:
        out = []
        for d in devs:
            try:
                out.append(fn(res["devices"][d]))
            except (KeyError, TypeError):
                out.append("—")
        return out

    def row(k: str, key: str, x: bool = False) -> Any:
        return lambda d: (f"{d['networks']['rows'][k][key]:.2f}x" if x else f"{d['networks']['rows'][k][key]:,.1f}")

    rows = []
    for k in ("reference/fp32", "default/fp32", "default/bf16"):
        rows.append([f"training step, {k} (segments/s)", *each(row(k, "train_segments_per_s"))])
    for k in ("reference/fp32", "default/fp32", "default/bf16"):
        rows.append([f"inference, {k} (segments/s)", *each(row(k, "infer_segments_per_s"))])
    for k in ("default/fp32", "default/bf16"):
        rows.append([f"{k} / reference: training step", *each(row(k, "train_speedup", True))])
        rows.append([f"{k} / reference: inference", *each(row(k, "infer_speedup", True))])
    for k in ("default/fp32 compiled", "default/bf16 compiled"):
        rows.append([f"{k} / reference: training step / inference",
                     *each(lambda d, k=k: f"{d['compile']['rows'][k]['train_speedup']:.2f}x / "
                                          f"{d['compile']['rows'][k]['infer_speedup']:.2f}x")])
    rows.append(["scoring 10 s files end to end, fp32 / bf16 (clips/s)" if res["settings"]["clip_seconds"] == 10
                 else "scoring files end to end, fp32 / bf16 (clips/s)",
                 *each(lambda d: f"{d['scoring']['clips_per_s']['fp32']:,.1f} / {d['scoring']['clips_per_s']['bf16']:,.1f}")])
    rss = res.get("rss")
    rows.append(["peak RSS of a training step, default fp32 (MiB)",
                 f"{rss['default/fp32']['peak_mib']:,.0f}" if rss else "—", *["—"] * (len(devs) - 1)])
    ray = res.get("ray_overhead")
    rows.append(["Ray per-trial fixed cost (s)", fmt(ray["fixed_s_per_trial"]) if ray else "not measured",
                 *["—"] * (len(devs) - 1)])
    return rows


def _head(res: dict[str, Any]) -> list[str]:
    md = ["# MIMIMI benchmarks", "",
          f"Written by `python -m bench.run` (`make bench`) on {res['date']}, in {res['wall_s']:.0f} s. Figures are "
          "medians of interleaved rounds after a warm-up (min in brackets where shown); the raw timings are in "
          "`benchmarks.json`. The reference is `bench/reference.py`: Table I's network written independently of "
          "`mimimi.nn`, real and imaginary parts as separate tensors and four real convolutions per complex one, "
          "as most public code does; the default network is `ComplexNet()` (`conv_impl: auto`) with the same "
          "weights."]
    if res["quick"]:
        md += ["", "**Quick mode: tiny sizes, a smoke test of the benchmark program. These are not measurements.**"]
    return md


def _machine(res: dict[str, Any]) -> list[str]:
    m, v, s = res["machine"], res["versions"], res["settings"]
    cuda = m.get("cuda")
    return ["", "## Machine", "", md_table(["", ""], [
        ["CPU", f"{m['cpu']} ({m['cpus_usable']} cores); {m['threads']} torch threads"],
        ["native bf16 on the CPU", f"{'yes' if m['native_bf16'] else 'no'} ({', '.join(m['bf16_flags']) or 'no bf16 flags'})"],
        ["memory", f"{m['memory_gib']} GiB"],
        ["GPU", "none" if not cuda else f"{cuda['name']} ({cuda['memory_gib']} GiB, compute capability "
                                        f"{cuda['capability']}, native bf16 {'yes' if cuda['native_bf16'] else 'no'})"],
        ["load average (1 min) at start / end", f"{s['load_start'][0]:.2f} / {s['load_end'][0]:.2f} "
                                                f"(on {m['cpus_usable']} usable CPUs)"],
        ["platform", m["platform"]],
        ["versions", ", ".join(f"{k} {x}" for k, x in v.items() if x)],
        ["shapes", f"batch {s['batch']} x 1 x {s['n_freq']} x {s['segment_frames']} complex64; "
                   f"{s['clip_seconds']:g} s clips at {s['sample_rate']} Hz"],
    ])]


def _summary_and_targets(res: dict[str, Any]) -> list[str]:
    md = ["", "## Summary", "", md_table(["figure", *res["devices"]], summary_rows(res))]
    md += ["", "## Targets", "", md_table(["target", "figure", "needed", "met"], [
        [t["what"], f"{t['value']:.2f}x", f">= {t['threshold']:g}x", "yes" if t["met"] else "**no**"]
        for t in res["targets"]])]
    if not res["machine"]["native_bf16"]:
        md += ["", "This CPU has no native bf16 (no avx512_bf16 / amx_bf16): the bf16 targets (training >= 4x, "
                   "inference >= 4.5x) do not apply; the bf16 row is emulated and slow."]
    return md


def _networks(dname: str, dev: dict[str, Any]) -> list[str]:
    rows = dev["networks"]["rows"]
    return ["", f"## Networks ({dname})", "",
            f"Input {' x '.join(map(str, dev['networks']['input_shape']))} complex64. Training step = forward, "
            "the three heads' cross-entropies (fp32), backward, Adam; inference = eval mode under `no_grad`; "
            "bf16 = `torch.autocast` (weights and optimiser in fp32). ms per batch: median (min).", "",
            md_table(["network", "precision", "training (segments/s)", "step ms", "x reference",
                      "inference (segments/s)", "batch ms", "x reference", "forward GFLOP/s",
                      "max abs logit diff vs reference"],
                     [[r["network"], r["precision"], r["train_segments_per_s"], _ms(r["train_step"]),
                       f"{r['train_speedup']:.2f}x", r["infer_segments_per_s"], _ms(r["infer_batch"]),
                       f"{r['infer_speedup']:.2f}x", r["forward_gflops"],
                       f"{r['max_abs_logit_diff_vs_reference']:.1e}"] for r in rows.values()]),
            "", "The default network's complex convolutions on this device (`auto_conv_impl`): "
            + ", ".join(f"{ly['impl']}{'/channels_last' if ly['channels_last'] else ''}"
                        for ly in dev["networks"]["default_layers"])
            + f". fp32 matmul peak: {dev['matmul']['gflops']:,.0f} GFLOP/s."]


def _compile(dname: str, dev: dict[str, Any]) -> list[str]:
    if not dev.get("compile"):
        return []
    crows = dev["compile"]["rows"]
    md = ["", f"### torch.compile ({dname})", "",
          "The default network under `torch.compile`, interleaved with the reference in its own rounds. "
          "Compile = the first training step minus a compiled one, with an empty TorchInductor cache "
          "(the first trial on a node) and with the cache that left (later trials; the eval-mode graph "
          "compiles separately).", "",
          md_table(["compiled", "training (segments/s)", "step ms", "x reference", "inference (segments/s)",
                    "batch ms", "x reference", "x eager step", "compile s, cold / warm",
                    "steps to repay, cold / warm"],
                   [[k, r["train_segments_per_s"], _ms(r["train_step"]), f"{r['train_speedup']:.2f}x",
                     r["infer_segments_per_s"], _ms(r["infer_batch"]), f"{r['infer_speedup']:.2f}x",
                     f"{r['speedup_over_eager']:.2f}x", f"{r['compile_cold_s']:.0f} / {r['compile_warm_s']:.0f}",
                     f"{r['break_even_steps_cold']:.0f} / {r['break_even_steps_warm']:.0f}"]
                    for k, r in crows.items()]), ""]
    fp = crows.get("default/fp32 compiled")
    if dname == "cpu" and fp:
        md += [f"`train.compile: auto` compiles on CPU from {COMPILE_MIN_BATCHES} default-sized batches of "
               "planned training (`mimimi.training.compile_decision`)"
               + (f": {COMPILE_MIN_BATCHES / fp['break_even_steps_cold']:.1f} times this run's cold break-even "
                  "(fp32)." if 0 < fp["break_even_steps_cold"] < math.inf else
                  ": this run found no saving, so the rule should be revisited here.")]
    else:
        md += ["`train.compile: auto` stays off on CUDA: these rows are the measurement that would change that."]
    return md


def _layers(dname: str, dev: dict[str, Any]) -> list[str]:
    if not dev.get("layers"):
        return []
    names = [f"{i}/{'channels_last' if cl else 'contiguous'}" for i, cl in
             (("textbook", False), ("block", False), ("block", True), ("gauss", True))]
    return ["", f"### Per-layer complex convolution ({dname}, `--layers`)", "",
            "One complex convolution alone at the network's shapes; ms forward / forward+backward.", "",
            md_table(["layer", "auto picks", *names],
                     [[f"{ly['layer']}: {ly['in_channels']}->{ly['out_channels']}, {ly['input_hw'][0]}x"
                       f"{ly['input_hw'][1]}", ly["auto"],
                       *[f"{ly['forward_ms'][n]:.0f} / {ly['train_ms'][n]:.0f}" for n in names]]
                      for ly in dev["layers"]])]


def _memory(res: dict[str, Any]) -> list[str]:
    if not res.get("rss"):
        return []
    return ["", "## Peak memory of a training step (CPU)", "",
            "Peak resident set (VmHWM) of a fresh process per variant: before its first step (interpreter, torch, "
            "network, one batch) and after the training steps.", "",
            md_table(["network / precision", "before the first step (MiB)", "peak (MiB)", "the step adds (MiB)"],
                     [[k, r["before_mib"], r["peak_mib"], r["peak_mib"] - r["before_mib"]]
                      for k, r in res["rss"].items()])]


def _features_and_scoring(res: dict[str, Any]) -> list[str]:
    f = res["features"]
    md = ["", "## Feature path (CPU)", "", md_table(["figure", "value"], [
        [f"decode + complex STFT of a {f['clip_seconds']:g} s clip",
         f"{f['decode_stft_clips_per_s']:.1f} clips/s (decode {f['decode_ms']:.1f} ms + STFT {f['stft_ms']:.1f} ms)"],
        ["cached segments through the DataLoader", f"{f['delivery_segments_per_s']:,.0f} segments/s (batch "
         f"{f['delivery_batch']}, num_workers={f['delivery_num_workers']} as training, page cache warm)"],
        ["delivery / training-step consumption (default, fp32)", f"{f['delivery_over_training']:,.0f}x"],
    ])]
    md += ["", "## Scoring end to end", "",
           "`mimimi.scoring.clips.score_paths` on synthetic files (decode, STFT, every segment through the default "
           "network, the back-end in the scorer column, the decision), with a model trained for one epoch for the purpose.", "",
           md_table(["device", "scorer", "files", "fp32 clips/s", "bf16 clips/s", "one file (ms, fp32)"],
                    [[d, str(x["scoring"]["scorer"]), x["scoring"]["clips"], x["scoring"]["clips_per_s"]["fp32"],
                      x["scoring"]["clips_per_s"]["bf16"], x["scoring"]["one_clip_ms"]]
                     for d, x in res["devices"].items()])]
    return md


def _ray(res: dict[str, Any]) -> list[str]:
    ray = res.get("ray_overhead")
    md = ["", "## Ray per-trial fixed cost", ""]
    if ray is None:
        return md + ["Not measured in this run (`--quick` or `--no-ray`)."]
    p = ray["per_trial"]
    return md + [
        f"`tuning/search.py --smoke-test` ({ray['trials']} trials of {ray['epochs_per_trial']} epochs, local "
        f"Ray, `bench/ray_overhead.py`); seconds per trial, mean over the trials.", "",
        md_table(["part of a trial", "s"], [
            ["Train worker start (TorchTrainer, controller, worker process importing torch)", p["worker_start_s"]],
            ["`fit` set-up (index, feature cache, validation proxies, model)", p["setup_s"]],
            ["training + validation epochs", p["epochs_s"]],
            ["reports and checkpoints crossing Train -> Tune, the rest", p["other_s"]],
            ["**trial wall (Tune's time_total_s)**", ray["trial_wall_s"]],
            ["fixed cost (wall minus epochs)", ray["fixed_s_per_trial"]],
        ]), "",
        f"The whole search took {ray['search_wall_s']:.0f} s, of which {ray['outside_trials_s']:.0f} s outside "
        "the span in which trials ran (process start, Ray start, synthetic data, MLflow set-up; after the "
        f"trials: evaluation, registration). The fixed cost falls under 10 % of a trial once it trains for "
        f"about {ray['trial_train_time_for_10pct_s']:.0f} s: search budgets should favour fewer, longer trials."]


def _run_log_and_misses(res: dict[str, Any]) -> list[str]:
    md = ["", "## Run log", "",
          "Each step's wall time, the process's CPU time, and the 1-minute load average at its start and end. "
          f"CPU / (threads x wall) well below 1 means other processes took the CPUs (threads: "
          f"{res['machine']['threads']}).", "",
          md_table(["step", "wall s", "CPU s", "CPU / (threads x wall)", "load start -> end"],
                   [[r["section"], r["wall_s"], r["cpu_s"], f"{r['cpu_per_thread_wall']:.2f}",
                     f"{r['load_start']:.2f} -> {r['load_end']:.2f}"] for r in res["sections"]])]
    missed = [t for t in res["targets"] if not t["met"]]
    if missed:
        md += ["", "## Why targets are missed", ""]
        for t in missed:
            md += [f"### {t['what']}: {t['value']:.2f}x < {t['threshold']:g}x", "", t["why"] or "", ""]
            for name, p in res["profiles"].get(t["name"], {}).items():
                md += [f"torch.profiler, {name} network ({p['total_ms']:.0f} ms profiled):", "", "```",
                       p["table"].rstrip(), "```", ""]
    return md


def render_markdown(res: dict[str, Any]) -> str:
    """BENCHMARKS.md from a results dict (``benchmarks.json``): one section per part of the run."""
    md = _head(res) + _machine(res) + _summary_and_targets(res)
    for dname, dev in res["devices"].items():
        md += _networks(dname, dev) + _compile(dname, dev) + _layers(dname, dev)
    md += _memory(res) + _features_and_scoring(res) + _ray(res) + _run_log_and_misses(res)
    return "\n".join(md).rstrip() + "\n"
