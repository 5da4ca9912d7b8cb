"""MIMIMI benchmarks: ``python -m bench.run [--quick] [--out BENCHMARKS.md]`` (``make bench``).

One process measures, with the network's real shapes (a batch of 32 complex (1, 513, 64) segments), on the
CPU and on CUDA when there is one (``bench.cases`` holds each case, ``bench.harness`` how it is timed,
``bench.report`` the targets and the markdown):

- the independent 4-convolution reference network (``bench.reference``) against the default network in
  fp32 and bf16: training step and inference, with the speed-ups the targets are set on;
- ``torch.compile`` of the default network, fp32 and bf16: compile time (cold and warm cache), speed-ups,
  steps to repay it;
- peak resident memory of a training step (a fresh process per variant);
- the feature path (decode + STFT, cached segments through the DataLoader);
- scoring files end to end with one fixed back-end (`knn-stats`), fp32 and bf16;
- the Ray per-trial fixed cost and what it is made of (``bench.ray_overhead``).

It writes ``BENCHMARKS.md`` (``--out``) and ``benchmarks.json`` beside it; a missed target says why, with
``torch.profiler`` tables. ``--quick`` runs the program at tiny sizes without compile and Ray (a smoke test
for CI, not a measurement).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from bench import cases
from bench.harness import REPO, Sections, in_fresh_process, jsonable, log, machine_info, profile_table, versions
from bench.report import evaluate_targets, explain_network_target, render_markdown

SCHEMA = 2


def run(sizes: cases.Sizes, quick: bool, threads: int, devices: list[torch.device], *, compile_step: bool,
        ray: bool, layers: bool) -> dict[str, Any]:
    t_start = time.perf_counter()
    torch.set_num_threads(threads)
    section = Sections(threads)
    f = sizes.features
    res: dict[str, Any] = {
        "schema": SCHEMA, "quick": quick,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(threads), "versions": versions(),
        "settings": {"batch": sizes.batch, "n_freq": f.n_freq, "segment_frames": f.segment_frames, "n_fft": f.n_fft,
                     "hop_length": f.hop_length, "sample_rate": f.sample_rate, "clip_seconds": sizes.clip_seconds,
                     "rounds": sizes.rounds, "load_start": list(os.getloadavg())},
        "devices": {}, "profiles": {}, "rss": None, "ray_overhead": None,
    }
    fns: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="mimimi-bench-") as d:
        tmp = Path(d)
        with section("cpu: feature path"):  # first, in a process not yet churned by the big networks
            train, test = cases.make_clips(tmp / "synth", sizes)
            res["features"] = cases.feature_path(train, sizes, tmp / "cache")
        for device in devices:
            dev: dict[str, Any] = {}
            name = device.type
            with section(f"{name}: fp32 matmul peak"):
                dev["matmul"] = cases.matmul_peak(device, sizes.matmul_n, sizes.rounds)
            with section(f"{name}: networks (reference, default fp32, default bf16), {sizes.rounds} rounds"):
                dev["networks"] = cases.networks(device, sizes, dev["matmul"]["gflops"])
            fns[name] = dev["networks"].pop("_fns")
            if compile_step:
                with section(f"{name}: torch.compile, fp32 and bf16 (cold and warm cache), {sizes.rounds} rounds"):
                    dev["compile"] = cases.compiled(device, sizes)
            with section(f"{name}: scoring files end to end"):
                dev["scoring"] = cases.scoring(device, sizes, tmp / "synth", test, tmp / f"scoring-{name}")
            if layers:
                with section(f"{name}: per-layer complex convolutions"):
                    dev["layers"] = cases.layers(device, sizes)
            res["devices"][name] = dev
        with section("cpu: peak memory of a training step, a fresh process per variant"):
            res["rss"] = {f"{n}/{p}": in_fresh_process("training_step_rss", dict(
                network=n, prec=p, batch=sizes.batch, n_freq=f.n_freq, frames=f.segment_frames,
                steps=sizes.rss_steps), threads) for n, p in cases.ROWS}
        if ray:
            from bench.ray_overhead import ray_overhead

            with section("Ray per-trial fixed cost (a smoke search)"):
                res["ray_overhead"] = ray_overhead()
    res["targets"] = evaluate_targets(res)
    cpu = res["devices"]["cpu"]
    for t in res["targets"]:
        if t["met"] or t["row"] is None:
            continue
        with section(f"profiling: {t['name']} missed"):
            i = 1 if t["mode"] == "train" else 0
            prof = {"default": profile_table(fns["cpu"][t["row"]][i], torch.device("cpu"), sizes.profile_rows),
                    "reference": profile_table(fns["cpu"]["reference/fp32"][i], torch.device("cpu"), sizes.profile_rows)}
            res["profiles"][t["name"]] = prof
            t["why"] = explain_network_target(t, cpu["networks"]["rows"], prof, cpu["matmul"]["gflops"])
    missed_delivery = [t for t in res["targets"] if t["name"] == "delivery" and not t["met"]]
    for t in missed_delivery:
        t["why"] = (f"Delivery runs in the training process (num_workers={res['features']['delivery_num_workers']}): "
                    "DataLoader workers (train.num_workers > 0) would run it beside the training step.")
    res["settings"]["load_end"] = list(os.getloadavg())
    res["sections"] = section.rows
    res["wall_s"] = time.perf_counter() - t_start
    return res


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes, no compile, no Ray: a smoke test")
    ap.add_argument("--out", type=Path, default=REPO / "BENCHMARKS.md",
                    help="markdown report; benchmarks.json is written beside it (default: the repository root)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: every usable CPU)")
    ap.add_argument("--device", choices=["auto", "cpu"], default="auto", help="auto: CPU, and CUDA when present")
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile of the training step")
    ap.add_argument("--no-ray", action="store_true", help="skip the Ray per-trial cost (a smoke search)")
    ap.add_argument("--layers", action="store_true", help="also time each complex convolution alone (slow)")
    ap.add_argument("--render", type=Path, default=None, metavar="JSON",
                    help="measure nothing: write --out from an earlier run's benchmarks.json")
    args = ap.parse_args(argv)
    if args.threads is not None and args.threads < 1:
        ap.error(f"--threads must be >= 1, got {args.threads}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.render:
        args.out.write_text(render_markdown(json.loads(args.render.read_text())))
        log(f"wrote {args.out} from {args.render}")
        return 0
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    devices = [torch.device("cpu")]
    if args.device == "auto" and torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    res = run(cases.QUICK if args.quick else cases.FULL, args.quick, args.threads or usable, devices,
              compile_step=not (args.quick or args.no_compile), ray=not (args.quick or args.no_ray), layers=args.layers)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    out_json = args.out.with_name("benchmarks.json")
    out_json.write_text(json.dumps(jsonable(res), indent=1) + "\n")
    args.out.write_text(render_markdown(res))
    for t in res["targets"]:
        log(f"{t['what']}: {t['value']:.2f}x (needed {t['threshold']:g}x) {'met' if t['met'] else 'NOT met'}")
    log(f"wrote {args.out} and {out_json} in {res['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
