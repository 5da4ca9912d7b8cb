"""MIMIMI benchmarks: ``python -m bench.run [--quick] [--out BENCHMARKS.md]`` (``make bench``).

One process measures, with the same shapes throughout (a batch of 32 complex (1, 513, 64)
segments), on the CPU and on CUDA when there is one:

a. the network's training-step and inference throughput (segments/s), ``conv_impl="auto"``;
b. the same network with the textbook four-convolution complex convolution, and the speed ratio
   (the previous default, ``"block"``, is timed beside them for reference);
c. achieved forward GFLOP/s (``torch.utils.flop_counter``) against a measured fp32 matmul peak;
d. the feature path: wav decode + complex STFT of 10 s synthetic clips (clips/s), and cached
   features delivered through the DataLoader (segments/s);
e. the latency of scoring one 10 s clip end to end (decode, STFT, fresh cache, model);
f. a tiny Ray Tune search's overhead (:mod:`bench.ray_overhead`; skipped with ``--quick``).

It writes ``BENCHMARKS.md`` (``--out``) and ``benchmarks.json`` beside it. Timings are wall-clock
medians of rounds that alternate between the variants compared (so a load change on a shared
machine hits all of them alike), after one warm-up call each; the load average is recorded.
Where a target is missed, the markdown says why, with ``torch.profiler`` tables of the top ops.
``--quick`` runs every step at tiny sizes (a smoke test for CI, not a measurement).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from mimimi.config import Config, FeatureConfig, TrainConfig
from mimimi.data.dataset import TrainSegments, id_map
from mimimi.data.index import index_dataset, select
from mimimi.data.synth import generate
from mimimi.evaluate import score_clips
from mimimi.features import FeatureCache, complex_stft, decode, eval_segments
from mimimi.nn import ComplexConv2d, ComplexNet, ComplexNetConfig, conv_padding, forward_flops
from mimimi.nn.complex import auto_conv_impl, complex_conv2d

REPO = Path(__file__).resolve().parents[1]
SCHEMA = 1
TARGETS = {"train_speedup": 2.0, "infer_speedup": 2.0, "delivery_over_training": 20.0, "train_loop_share": 0.9}
NETWORKS = ("auto", "textbook", "block")  # (a), (b), and the previous default for reference
LAYER_VARIANTS = (("textbook", False), ("block", False), ("block", True), ("gauss", True))  # (impl, channels_last)


@dataclasses.dataclass(frozen=True)
class Sizes:
    """Everything that sets how big and how long the benchmark is."""

    batch: int  # segments per training step / inference batch
    features: FeatureConfig  # STFT -> network input (1, n_freq, segment_frames)
    clip_seconds: float  # synthetic clips of the feature path and the latency figure
    clips_per_id: int  # training clips per machine ID (4 IDs), plus 1 normal + 1 anomalous test clip each
    rounds: int  # timed rounds per network figure, after one warm-up
    layer_rounds: int  # timed rounds per layer variant
    matmul_n: int  # square fp32 matmul for the peak
    delivery_batches: int  # DataLoader batches per delivery round
    profile_rows: int  # top ops in each profiler table


FULL = Sizes(batch=32, features=FeatureConfig(), clip_seconds=10.0, clips_per_id=2, rounds=5, layer_rounds=2,
             matmul_n=2048, delivery_batches=25, profile_rows=12)
QUICK = Sizes(batch=2, features=FeatureConfig(n_fft=128, hop_length=64, segment_frames=32, eval_hop_frames=32),
              clip_seconds=1.0, clips_per_id=1, rounds=1, layer_rounds=1, matmul_n=128, delivery_batches=2,
              profile_rows=5)


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- timing helpers


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(fns: dict[str, Callable[[], Any]], rounds: int, device: torch.device) -> dict[str, list[float]]:
    """Wall seconds of each fn: one warm-up call each, then ``rounds`` rounds calling each in turn."""
    for fn in fns.values():
        fn()
    _sync(device)
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times[k].append(time.perf_counter() - t0)
    return times


def stats(ts: list[float]) -> dict[str, Any]:
    return {"median_s": statistics.median(ts), "min_s": min(ts), "max_s": max(ts), "samples": len(ts),
            "all_s": [round(t, 6) for t in ts]}


def profile_table(fn: Callable[[], Any], device: torch.device, rows: int) -> dict[str, Any]:
    """torch.profiler of one call of ``fn``: the top ops by self time, and the shares of op groups."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    fn()
    _sync(device)
    with profile(activities=activities) as prof:
        fn()
        _sync(device)
    events = prof.key_averages()
    key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    total = sum(getattr(e, key) for e in events) or 1.0

    def share(*words: str) -> float:
        return sum(getattr(e, key) for e in events if any(w in e.key for w in words)) / total

    return {
        "table": events.table(sort_by=key, row_limit=rows, max_name_column_width=44),
        "total_ms": total / 1e3,
        "conv_share": share("convolution"),  # forward and backward kernels (their self time only)
        "batchnorm_prelu_share": share("batch_norm", "prelu"),
    }


# ----------------------------------------------------------------------------- machine


def machine_info(threads: int) -> dict[str, Any]:
    cpu, flags = platform.processor() or platform.machine(), ""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        field = {ln.split(":", 1)[0].strip(): ln.split(":", 1)[1].strip() for ln in lines if ":" in ln}
        if "model name" in field:  # a hypervisor may show a bare "AMD EPYC": family/model tell the generation
            cpu = f"{field['model name']} (family {field.get('cpu family', '?')}, model {field.get('model', '?')})"
        flags = field.get("flags", "")
    except OSError:
        pass
    mem = None
    try:
        kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal"))
        mem = round(kb / 2**20, 1)
    except (OSError, StopIteration, ValueError):
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info = {
        "cpu": cpu, "cpu_count": os.cpu_count(), "cpus_usable": usable, "threads": threads,
        "avx512": "avx512f" in flags.split(), "memory_gib": mem, "platform": platform.platform(),
        "cuda": None,
    }
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info["cuda"] = {"name": p.name, "memory_gib": round(p.total_memory / 2**30, 1),
                        "capability": f"{p.major}.{p.minor}",
                        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
                        "tf32_cudnn": torch.backends.cudnn.allow_tf32}
    return info


def versions() -> dict[str, str | None]:
    import pandas
    import soundfile
    import torchaudio

    import mimimi

    out: dict[str, str | None] = {
        "python": platform.python_version(), "torch": torch.__version__, "torchaudio": torchaudio.__version__,
        "numpy": np.__version__, "pandas": pandas.__version__, "soundfile": soundfile.__version__,
        "mimimi": mimimi.__version__, "cuda": torch.version.cuda,
        "cudnn": str(torch.backends.cudnn.version()) if torch.cuda.is_available() else None,
        "git": None,
    }
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                             timeout=10, check=False).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True,
                               timeout=10, check=False).stdout.strip()
        out["git"] = f"{sha}{' (working tree modified)' if dirty else ''}" if sha else None
    except (OSError, subprocess.SubprocessError):
        pass
    return out


def matmul_peak(device: torch.device, n: int, rounds: int) -> dict[str, Any]:
    """fp32 ``torch.mm`` of two n x n matrices: 2 n^3 FLOP per call; median and best GFLOP/s."""
    a, b = (torch.randn(n, n, device=device) for _ in range(2))
    out = torch.empty(n, n, device=device)
    ts = interleaved({"mm": lambda: torch.mm(a, b, out=out)}, max(3, 2 * rounds), device)["mm"]
    flop = 2 * n**3
    return {"n": n, "gflops": flop / statistics.median(ts) / 1e9, "gflops_best": flop / min(ts) / 1e9, **stats(ts)}


# ----------------------------------------------------------------------------- (a), (b), (c): the network


def _net_config(impl: str) -> ComplexNetConfig:
    return ComplexNetConfig(conv_impl=impl)  # Table I, n_ids = 4


def _kernel(conv: ComplexConv2d, device: torch.device) -> dict[str, Any]:
    """The kernel and layout a complex convolution runs with on ``device`` (resolving "auto")."""
    if conv.impl == "auto":
        return auto_conv_impl(conv.in_channels, conv.out_channels, conv.kernel, conv.stride, device)._asdict()
    return {"impl": conv.impl, "channels_last": False}


def bench_networks(device: torch.device, sizes: Sizes, peak_gflops: float) -> dict[str, Any]:
    """Training step and inference of the network with each complex-convolution kernel, interleaved."""
    f = sizes.features
    shape = (sizes.batch, 1, f.n_freq, f.segment_frames)
    torch.manual_seed(0)
    nets = {impl: ComplexNet(_net_config(impl)).to(device) for impl in NETWORKS}
    for impl in NETWORKS[1:]:
        nets[impl].load_state_dict(nets[NETWORKS[0]].state_dict())  # same weights: outputs comparable
    x = torch.randn(shape, dtype=torch.complex64, device=device)
    y = torch.randint(0, 4, (sizes.batch,), device=device)

    # inference: eval mode, no autograd, as score_clips runs it
    def infer(net: ComplexNet) -> Callable[[], Any]:
        def fn() -> Any:
            with torch.no_grad():
                return net(x)
        return fn

    for net in nets.values():
        net.eval()
    with torch.no_grad():
        ref = nets["textbook"](x)
        max_diff = max(float((a - b).abs().max()) for impl in NETWORKS for a, b in zip(nets[impl](x), ref))
    t_inf = interleaved({k: infer(n) for k, n in nets.items()}, sizes.rounds, device)

    # training step: forward, the three heads' cross-entropies (train.classifier_loss, equal
    # weights), backward, Adam
    opts = {k: torch.optim.Adam(n.parameters(), lr=1e-4) for k, n in nets.items()}

    def step(impl: str) -> Callable[[], Any]:
        net, opt = nets[impl], opts[impl]

        def fn() -> None:
            loss = sum(F.cross_entropy(lg, y) for lg in net(x))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return fn

    for net in nets.values():
        net.train()
    t_train = interleaved({k: step(k) for k in NETWORKS}, sizes.rounds, device)

    out: dict[str, Any] = {"input_shape": list(shape), "max_abs_logit_diff_vs_textbook": max_diff, "networks": {}}
    for impl, net in nets.items():
        fwd_flop = forward_flops(net, shape)
        ti, tt = statistics.median(t_inf[impl]), statistics.median(t_train[impl])
        out["networks"][impl] = {
            "conv_impl": impl,
            "layers": [_kernel(b.conv, device) for b in net.blocks],
            "train_segments_per_s": sizes.batch / tt, "train_step": stats(t_train[impl]),
            "infer_segments_per_s": sizes.batch / ti, "infer_batch": stats(t_inf[impl]),
            "forward_flop_per_batch": fwd_flop,
            "forward_gflops": fwd_flop / ti / 1e9,
            "forward_peak_fraction": fwd_flop / ti / 1e9 / peak_gflops,
        }
    fast, tb = out["networks"]["auto"], out["networks"]["textbook"]
    out["speedup"] = {"train": tb["train_step"]["median_s"] / fast["train_step"]["median_s"],
                      "infer": tb["infer_batch"]["median_s"] / fast["infer_batch"]["median_s"]}
    # nominal FLOPs (4 real multiplications per complex one, as block/textbook run them) at the fast
    # network's speed: the rate an unchanged kernel would need to match it
    fast["forward_gflops_nominal"] = tb["forward_flop_per_batch"] / fast["infer_batch"]["median_s"] / 1e9
    out["_nets"] = nets
    out["_fns"] = {"train": {k: step(k) for k in NETWORKS}, "infer": {k: infer(n) for k, n in nets.items()}}
    return out


def count_train_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of one training step (forward and backward convolutions, linears) by FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def bench_layers(device: torch.device, sizes: Sizes) -> list[dict[str, Any]]:
    """Each complex convolution of the network alone, in every candidate kernel and layout."""
    cfg = _net_config("auto")
    h, w = sizes.features.n_freq, sizes.features.segment_frames
    rows = []
    ins = (cfg.in_channels, *cfg.channels[:-1])
    for li, (i, o, k, s) in enumerate(zip(ins, cfg.channels, cfg.kernels, cfg.strides)):
        p = conv_padding(k, cfg.padding)
        choice = auto_conv_impl(i, o, k, s, device)
        torch.manual_seed(li)
        x = torch.randn(sizes.batch, 2 * i, h, w, device=device)
        scale = 1 / math.sqrt(2 * i * k[0] * k[1])
        params = [torch.randn(o, i, *k, device=device) * scale for _ in range(2)] + \
                 [torch.zeros(o, device=device) for _ in range(2)]
        fwd, train = {}, {}
        for impl, cl in LAYER_VARIANTS:
            name = f"{impl}/{'channels_last' if cl else 'contiguous'}"
            xv = x.contiguous(memory_format=torch.channels_last) if cl else x
            wr, wi, br, bi = (t.clone() for t in params)

            def f_fwd(xv=xv, impl=impl, wr=wr, wi=wi, br=br, bi=bi, s=s, p=p) -> None:
                with torch.no_grad():
                    complex_conv2d(xv, wr, wi, br, bi, s, p, impl)

            xg = xv.detach().clone(memory_format=torch.preserve_format).requires_grad_(li > 0)  # block 1: no input grad
            pg = [t.clone().requires_grad_() for t in params]

            def f_train(xg=xg, impl=impl, pg=pg, s=s, p=p) -> None:
                for t in (xg, *pg):
                    t.grad = None
                out = complex_conv2d(xg, *pg, s, p, impl)
                out.backward(torch.ones_like(out))

            fwd[name], train[name] = f_fwd, f_train
        log(f"{device.type}: layer {li + 1} ({i}->{o}, {h}x{w}), {len(LAYER_VARIANTS)} variants")
        t_f = interleaved(fwd, sizes.layer_rounds, device)
        t_t = interleaved(train, sizes.layer_rounds, device)
        auto_name = f"{choice.impl}/{'channels_last' if choice.channels_last else 'contiguous'}"
        rows.append({
            "layer": li + 1, "in_channels": i, "out_channels": o, "input_hw": [h, w], "kernel": list(k),
            "stride": list(s), "auto": auto_name,
            "forward_ms": {n: statistics.median(v) * 1e3 for n, v in t_f.items()},
            "train_ms": {n: statistics.median(v) * 1e3 for n, v in t_t.items()},
        })
        h, w = (h + 2 * p[0] - k[0]) // s[0] + 1, (w + 2 * p[1] - k[1]) // s[1] + 1
        del x, fwd, train
    return rows


def bench_compile(device: torch.device, sizes: Sizes) -> dict[str, Any]:
    """torch.compile of the "auto" network (optional, ``--compile``): compile time and throughput."""
    f = sizes.features
    shape = (sizes.batch, 1, f.n_freq, f.segment_frames)
    torch.manual_seed(0)
    net = ComplexNet(_net_config("auto")).to(device)
    cnet = torch.compile(net)
    x = torch.randn(shape, dtype=torch.complex64, device=device)
    y = torch.randint(0, 4, (sizes.batch,), device=device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)

    def infer() -> None:
        with torch.no_grad():
            cnet(x)

    def step() -> None:
        loss = sum(F.cross_entropy(lg, y) for lg in cnet(x))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    out: dict[str, Any] = {}
    for name, fn, mode in (("infer", infer, False), ("train", step, True)):
        net.train(mode)
        log(f"{device.type}: torch.compile, {name}: compiling")
        t0 = time.perf_counter()
        fn()
        _sync(device)
        out[f"{name}_compile_s"] = time.perf_counter() - t0
        ts = interleaved({name: fn}, sizes.rounds, device)[name]
        out[f"{name}_segments_per_s"] = sizes.batch / statistics.median(ts)
        out[f"{name}_timing"] = stats(ts)
    return out


# ----------------------------------------------------------------------------- (d), (e): features and scoring


def make_clips(root: Path, sizes: Sizes) -> tuple[Any, Any]:
    """A synthetic DCASE-layout tree (fan, 4 IDs); returns (training clips, test clips) index tables."""
    generate(root, ["fan"], ["00", "02", "04", "06"], n_train=sizes.clips_per_id, n_test_normal=1,
             n_test_anomaly=1, seconds=sizes.clip_seconds, seed=0)
    clips = index_dataset(root).clips
    return (select(clips, split="train").reset_index(drop=True), select(clips, split="test").reset_index(drop=True))


def bench_features(train, sizes: Sizes, cache_dir: Path) -> dict[str, Any]:
    """(d) at the run's torch threads (as training runs it with ``num_workers=0``), and on one thread
    (as a DataLoader worker runs it). The work per call is small: with two or more threads on a
    CPU that other processes also use, OpenMP's barrier waits can make it many times slower."""
    out = _feature_figures(train, sizes, cache_dir / "run-threads")
    threads = torch.get_num_threads()
    if threads > 1:
        torch.set_num_threads(1)
        try:
            one = _feature_figures(train, sizes, cache_dir / "one-thread")
        finally:
            torch.set_num_threads(threads)
        out["one_thread"] = {k: one[k] for k in ("decode_ms", "stft_ms", "decode_stft_clips_per_s",
                                                 "getitem_ms", "delivery_segments_per_s", "delivery_timing")}
    return out


def _feature_figures(train, sizes: Sizes, cache_dir: Path) -> dict[str, Any]:
    """Decode + STFT per clip, and cached segments through the training DataLoader."""
    cfg = sizes.features
    paths = list(train.path)
    dec, stft = [], []
    for _ in range(max(1, sizes.rounds // 2 + 1)):
        for p in paths:
            t0 = time.perf_counter()
            wave = decode(p, cfg)
            t1 = time.perf_counter()
            complex_stft(wave, cfg)
            t2 = time.perf_counter()
            dec.append(t1 - t0)
            stft.append(t2 - t1)
    per_clip = [a + b for a, b in zip(dec, stft)]
    out: dict[str, Any] = {
        "clip_seconds": sizes.clip_seconds, "clips": len(paths), "timed_clips": len(per_clip),
        "decode_ms": statistics.median(dec) * 1e3, "stft_ms": statistics.median(stft) * 1e3,
        "decode_stft_clips_per_s": 1 / statistics.median(per_clip),
    }

    cache = FeatureCache(cache_dir, cfg)
    t0 = time.perf_counter()
    cache.warm(paths, progress=False)
    out["cache_fill_s"] = time.perf_counter() - t0
    if hasattr(os, "sync"):
        os.sync()  # written long ago, as in training after the first warm(): no writeback under the reads
    ids = id_map(train)
    per_epoch = sizes.batch * sizes.delivery_batches
    ds = TrainSegments(train, cache, ids, segments_per_clip=math.ceil(per_epoch / len(train)), seed=0)
    workers = TrainConfig().num_workers  # what training uses by default
    loader = DataLoader(ds, batch_size=sizes.batch, shuffle=True, num_workers=workers,
                        generator=torch.Generator().manual_seed(0), drop_last=True)

    def epoch() -> int:
        n = 0
        for i, (xb, _) in enumerate(loader):
            n += len(xb)
            if i + 1 >= sizes.delivery_batches:
                break
        return n

    n_seg = epoch()  # warm-up: the cache's files are now in the OS page cache, as after a first epoch
    t0 = time.perf_counter()
    n_items = min(len(ds), 4 * sizes.batch)
    for i in range(n_items):
        ds[i]
    out["getitem_ms"] = (time.perf_counter() - t0) / n_items * 1e3  # one segment, TrainSegments.__getitem__
    ts = []
    for r in range(max(3, sizes.rounds)):
        ds.set_epoch(r + 1)
        t0 = time.perf_counter()
        epoch()
        ts.append(time.perf_counter() - t0)
    out.update({"delivery_segments_per_s": n_seg / statistics.median(ts), "delivery_batch": sizes.batch,
                "delivery_segments_per_round": n_seg, "delivery_num_workers": workers,
                "delivery_timing": stats(ts), "_loader_epoch": epoch})
    return out


def bench_latency(device: torch.device, test, train, sizes: Sizes, tmp: Path) -> dict[str, Any]:
    """(e) Score one clip end to end with ``evaluate.score_clips`` and a fresh (empty) feature cache,
    with the auto network (random weights: the speed does not depend on them)."""
    torch.manual_seed(0)
    net = ComplexNet(_net_config("auto")).to(device).eval()
    cfg = dataclasses.replace(Config(), features=sizes.features)
    clip = test.iloc[:1].reset_index(drop=True)
    ids = id_map(train)
    ts = []
    for r in range(max(3, sizes.rounds) + 1):  # the first is a warm-up
        cache = FeatureCache(tmp / f"latency-cache-{device.type}-{r}", sizes.features)
        _sync(device)
        t0 = time.perf_counter()
        scored = score_clips(net, cfg, clip, ids, cache, device=device)
        _sync(device)
        ts.append(time.perf_counter() - t0)
    ts = ts[1:]
    # the model's share: the clip's segments through the network alone
    segs = torch.from_numpy(eval_segments(complex_stft(decode(clip.path[0], sizes.features), sizes.features),
                                          sizes.features)[:, None]).to(device)

    def model_only() -> None:
        with torch.no_grad():
            net(segs)

    tm = interleaved({"model": model_only}, max(3, sizes.rounds), device)["model"]
    return {"clip_seconds": sizes.clip_seconds, "segments": len(segs), "score_ms": statistics.median(ts) * 1e3,
            "score_timing": stats(ts), "model_ms": statistics.median(tm) * 1e3,
            "score_finite": bool(np.isfinite(scored.score).all())}


# ----------------------------------------------------------------------------- (f): the Ray Tune hook


def ray_overhead(sizes: Sizes) -> dict[str, Any] | None:
    """(f) The share of a tiny Ray Tune search's trial wall time spent in the training loop versus Ray's
    own overhead (``bench.ray_overhead``: a 2-trial smoke search on a local Ray). Skipped with ``--quick``
    (``None``: a search takes a minute, the quick mode is a smoke test of this program)."""
    if sizes == QUICK:
        return None
    from bench.ray_overhead import ray_overhead as measure

    return measure()


# ----------------------------------------------------------------------------- targets and report


def evaluate_targets(res: dict[str, Any]) -> list[dict[str, Any]]:
    cpu = res["devices"]["cpu"]
    feats = res["features"]
    train_sps = cpu["networks"]["auto"]["train_segments_per_s"]
    feats["delivery_over_training"] = feats["delivery_segments_per_s"] / train_sps
    rows = [
        ("train_speedup", "training step, auto vs textbook network (CPU)", cpu["speedup"]["train"]),
        ("infer_speedup", "inference, auto vs textbook network (CPU)", cpu["speedup"]["infer"]),
        ("delivery_over_training", "cached-feature delivery / training-step consumption (CPU)",
         feats["delivery_over_training"]),
    ]
    if res.get("ray_overhead"):  # Ray overhead <= 10 % of trial wall time, i.e. training loop >= 90 %
        rows.append(("train_loop_share", "Ray Tune trial: training-loop share of wall time",
                     res["ray_overhead"]["train_loop_share"]))
    return [{"name": n, "what": w, "value": v, "threshold": TARGETS[n], "met": bool(v >= TARGETS[n]), "why": None}
            for n, w, v in rows]


def explain_network_target(t: dict[str, Any], dev: dict[str, Any], prof_fast: dict, prof_tb: dict,
                           peak: float, mode: str) -> str:
    """Why the speed-up stops short of the target, in the run's own medians (profiles give shares only:
    profiling slows the ops down unevenly)."""
    fast, tb = dev["networks"]["auto"], dev["networks"]["textbook"]
    key, col = ("train_step", "train_ms") if mode == "train" else ("infer_batch", "forward_ms")
    t_fast, t_tb = fast[key]["median_s"] * 1e3, tb[key]["median_s"] * 1e3
    need = t_tb / t["threshold"]
    what = "training step" if mode == "train" else "inference batch"
    lines = [f"The auto network's {what} takes {t_fast:.0f} ms, the textbook network's {t_tb:.0f} ms; "
             f"{t['threshold']:g}x needs {need:.0f} ms."]
    layers = dev.get("layers") or []
    if layers:
        conv_a = sum(ly[col][ly["auto"]] for ly in layers)
        conv_t = sum(ly[col]["textbook/contiguous"] for ly in layers)
        rest, rest_t = max(t_fast - conv_a, 0.0), max(t_tb - conv_t, 0.0)
        lines.append(
            f"In the per-layer table the five complex convolutions take {conv_a:.0f} ms with auto's choices and "
            f"{conv_t:.0f} ms in the textbook form ({conv_t / conv_a:.2f}x); everything else (batch norm, PReLU, "
            f"heads{', loss, their backward, Adam' if mode == 'train' else ''}) takes about {rest:.0f} ms in the "
            f"auto network and {rest_t:.0f} ms in the textbook one.")
    else:
        conv_a = t_fast * prof_fast["conv_share"]
        rest = t_fast - conv_a
    flop = dev["train_flop_per_step"]["auto"] if mode == "train" else fast["forward_flop_per_batch"]
    now = flop / conv_a / 1e6 if conv_a > 0 else float("nan")  # GFLOP/s: flop / ms / 1e6
    req = flop / (need - rest) / 1e6 if need > rest else float("inf")
    lines.append(
        f"Those convolutions are {flop / 1e9:.0f} GFLOP (flop_counter), run at {now:.0f} GFLOP/s = {now / peak:.0%} "
        f"of the measured fp32 matmul peak ({peak:.0f} GFLOP/s). With the rest as it is, {t['threshold']:g}x "
        + (f"would need them at {req:.0f} GFLOP/s = {req / peak:.0%} of that peak"
           if math.isfinite(req) else "cannot be reached at any convolution speed")
        + f" (profile below: convolutions {prof_fast['conv_share']:.0%}, batch norm and PReLU "
        f"{prof_fast['batchnorm_prelu_share']:.0%} of the auto network's profiled time; textbook network: "
        f"convolutions {prof_tb['conv_share']:.0%}).")
    if req > 0.9 * peak:
        lines.append(
            "Convolutions do not sustain that on this CPU, so no choice of fp32 convolution kernel meets the target "
            "here; what would move it is fewer or cheaper FLOPs (bf16 on AVX-512 BF16), or fusing the memory-bound "
            "batch norm and PReLU passes (a custom kernel or torch.compile; see the compile figures, if run).")
    else:
        lines.append("The convolutions are not the limit: the gap is in the rest of the work.")
    return " ".join(lines)


def _fmt(v: Any, digits: int = 1) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return f"{v:,.{digits}f}"
    return str(v)


def md_table(headers: list[str], rows: list[list[Any]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(_fmt(c) if not isinstance(c, str) else c for c in row) + " |" for row in rows]
    return "\n".join(out)


def summary_table(res: dict[str, Any]) -> str:
    """Every headline figure, one row each, one column per device."""
    devs = list(res["devices"])
    f, lat = res["features"], res["latency"]

    def per_dev(fn: Callable[[dict], str]) -> list[str]:
        return [fn(res["devices"][d]) for d in devs]

    def one(key: str, digits: int) -> str:  # the same figure on one torch thread, when measured
        return f" (1 thread: {f['one_thread'][key]:,.{digits}f})" if "one_thread" in f else ""

    def net(d: dict, k: str, key: str) -> str:
        return f"{d['networks'][k][key]:,.1f}"

    rows = [
        ["(a) training step, auto network (segments/s)", *per_dev(lambda d: net(d, "auto", "train_segments_per_s"))],
        ["(a) inference, auto network (segments/s)", *per_dev(lambda d: net(d, "auto", "infer_segments_per_s"))],
        ["(b) training step, textbook network (segments/s)",
         *per_dev(lambda d: net(d, "textbook", "train_segments_per_s"))],
        ["(b) inference, textbook network (segments/s)",
         *per_dev(lambda d: net(d, "textbook", "infer_segments_per_s"))],
        ["(a)/(b) training step", *per_dev(lambda d: f"{d['speedup']['train']:.2f}x")],
        ["(a)/(b) inference", *per_dev(lambda d: f"{d['speedup']['infer']:.2f}x")],
        ["(c) forward, auto network (GFLOP/s, flop_counter)", *per_dev(lambda d: net(d, "auto", "forward_gflops"))],
        ["(c) fp32 matmul peak (GFLOP/s)", *per_dev(lambda d: f"{d['matmul']['gflops']:,.1f}")],
        ["(c) forward / peak", *per_dev(lambda d: f"{d['networks']['auto']['forward_peak_fraction']:.0%}")],
        ["(d) decode + STFT, 10 s clips (clips/s)" if res["settings"]["clip_seconds"] == 10 else
         "(d) decode + STFT (clips/s)", f"{f['decode_stft_clips_per_s']:,.1f}" + one("decode_stft_clips_per_s", 1),
         *[""] * (len(devs) - 1)],
        ["(d) cached features through the DataLoader (segments/s)",
         f"{f['delivery_segments_per_s']:,.0f}" + one("delivery_segments_per_s", 0), *[""] * (len(devs) - 1)],
        ["(d) delivery / training-step consumption", f"{f['delivery_over_training']:,.0f}x", *[""] * (len(devs) - 1)],
        ["(e) score one clip end to end (ms)", *[f"{lat[d]['score_ms']:,.1f}" for d in devs]],
        ["(f) Ray Tune: training loop share of trial wall time",
         "not measured yet" if res["ray_overhead"] is None else
         _fmt(res["ray_overhead"].get("train_loop_share")), *[""] * (len(devs) - 1)],
    ]
    return md_table(["figure", *devs], rows)


def render_markdown(res: dict[str, Any]) -> str:
    m, v, s = res["machine"], res["versions"], res["settings"]
    md = [
        "# MIMIMI benchmarks",
        "",
        f"Written by `python -m bench.run{' --quick' if res['quick'] else ''}` (`make bench`) on {res['date']}, "
        f"in {res['wall_s']:.0f} s. Figures are medians of interleaved rounds after a warm-up; the raw "
        "timings are in `benchmarks.json`.",
    ]
    if res["quick"]:
        md += ["", "**Quick mode: tiny sizes, a smoke test of the program. These figures measure nothing.**"]
    md += [
        "",
        "## Machine",
        "",
        md_table(["", ""], [
            ["CPU", f"{m['cpu']} ({m['cpu_count']} cores{', AVX-512' if m['avx512'] else ''}); "
                    f"{m['threads']} torch thread{'s' if m['threads'] != 1 else ''}"],
            ["memory", f"{_fmt(m['memory_gib'])} GiB"],
            ["GPU", m["cuda"]["name"] if m["cuda"] else "none"],
            ["load average (1 min) at start / end", f"{s['load_start'][0]:.2f} / {s['load_end'][0]:.2f} "
                                                    f"(on {m['cpus_usable']} usable CPUs)"],
            ["platform", m["platform"]],
            ["versions", ", ".join(f"{k} {val}" for k, val in v.items() if val)],
            ["shapes", f"batch {s['batch']} x 1 x {s['n_freq']} x {s['segment_frames']} complex64; "
                       f"{s['clip_seconds']:g} s clips at {s['sample_rate']} Hz"],
        ]),
        "",
        "## Summary",
        "",
        summary_table(res),
        "",
        "## Targets",
        "",
        md_table(["target", "figure", "needed", "met"],
                 [[t["what"], *((f"{t['value']:.0%}", f">= {t['threshold']:.0%}") if t["name"] == "train_loop_share"
                                else (f"{t['value']:.2f}x", f">= {t['threshold']:g}x")), "yes" if t["met"] else "**no**"]
                  for t in res["targets"]]),
    ]
    for dname, dev in res["devices"].items():
        nets = dev["networks"]
        md += [
            "",
            f"## Network throughput ({dname})",
            "",
            f"Input {' x '.join(map(str, dev['input_shape']))} complex64. Training step = forward, the three "
            "heads' cross-entropies, backward, Adam. Inference = eval mode under `no_grad`. Largest logit "
            f"difference between the networks (same weights, eval): {dev['max_abs_logit_diff_vs_textbook']:.1e}.",
            "",
            md_table(["network (conv_impl)", "complex conv per layer", "training (segments/s)", "step ms (min)",
                      "inference (segments/s)", "batch ms (min)"],
                     [[f"`{k}`" + (" (a)" if k == "auto" else " (b)" if k == "textbook" else " (previous default)"),
                       ", ".join(f"{ly['impl']}{'/CL' if ly['channels_last'] else ''}" for ly in n["layers"]),
                       n["train_segments_per_s"],
                       f"{n['train_step']['median_s'] * 1e3:.0f} ({n['train_step']['min_s'] * 1e3:.0f})",
                       n["infer_segments_per_s"],
                       f"{n['infer_batch']['median_s'] * 1e3:.0f} ({n['infer_batch']['min_s'] * 1e3:.0f})"]
                      for k, n in nets.items()]),
            "",
            f"Speed ratio (a)/(b): training step **{dev['speedup']['train']:.2f}x**, inference "
            f"**{dev['speedup']['infer']:.2f}x**. (CL: channels_last.)",
            "",
            f"### Forward FLOP rate ({dname})",
            "",
            f"fp32 matmul peak ({dev['matmul']['n']}² `torch.mm`): **{dev['matmul']['gflops']:.0f} GFLOP/s** "
            f"(median; best {dev['matmul']['gflops_best']:.0f}). FLOPs counted with `torch.utils.flop_counter` "
            "on the batch (2 per multiply-add); Gauss layers count 3/4 of the block form's.",
            "",
            md_table(["network", "forward GFLOP / batch", "GFLOP/s achieved", "% of matmul peak"],
                     [[f"`{k}`", n["forward_flop_per_batch"] / 1e9, n["forward_gflops"],
                       f"{n['forward_peak_fraction']:.0%}"] for k, n in nets.items()]),
        ]
        if "forward_gflops_nominal" in nets["auto"]:
            md += ["", f"Counted with the block form's FLOPs (what the textbook network does), the auto network's "
                       f"forward runs at {nets['auto']['forward_gflops_nominal']:.0f} GFLOP/s "
                       f"({nets['auto']['forward_gflops_nominal'] / dev['matmul']['gflops']:.0%} of peak)."]
        if dev.get("train_flop_per_step"):
            md += ["", "Training step, counted FLOPs: " + ", ".join(
                f"`{k}` {fl / 1e9:.0f} GFLOP ({fl / nets[k]['train_step']['median_s'] / 1e9:.0f} GFLOP/s)"
                for k, fl in dev["train_flop_per_step"].items()) + "."]
        if dev.get("layers"):
            names = [f"{i}/{'channels_last' if cl else 'contiguous'}" for i, cl in LAYER_VARIANTS]
            short = [f"{i}{'/CL' if cl else ''}" for i, cl in LAYER_VARIANTS]
            rows = []
            for ly in dev["layers"]:
                base_f, base_t = ly["forward_ms"][names[0]], ly["train_ms"][names[0]]
                rows.append([f"{ly['layer']}: {ly['in_channels']}->{ly['out_channels']}, "
                             f"{ly['input_hw'][0]}x{ly['input_hw'][1]}, k{tuple(ly['kernel'])} s{tuple(ly['stride'])}",
                             short[names.index(ly["auto"])]]
                            + [f"{ly['forward_ms'][n]:.0f} ({base_f / ly['forward_ms'][n]:.2f}x)" for n in names]
                            + [f"{ly['train_ms'][n]:.0f} ({base_t / ly['train_ms'][n]:.2f}x)" for n in names])
            md += ["", f"### Per-layer complex convolution ({dname})", "",
                   "One complex convolution alone at the network's shapes (batch as above); ms, and speed-up over "
                   "the textbook form in the default layout. Forward under `no_grad`; fwd+bwd with the input "
                   "gradient (not for layer 1, whose input needs none) and the weight gradients. `auto` is the "
                   "static rule of `mimimi.nn.complex.auto_conv_impl`.", "",
                   md_table(["layer (complex channels, input F x T)", "auto picks"] + [f"fwd {n}" for n in short]
                            + [f"fwd+bwd {n}" for n in short], rows)]
        if dev.get("compile"):
            c = dev["compile"]
            md += ["", f"### torch.compile of the auto network ({dname}, optional: `--compile`)", "",
                   md_table(["", "compile (first call) s", "segments/s after"],
                            [["inference", c["infer_compile_s"], c["infer_segments_per_s"]],
                             ["training step", c["train_compile_s"], c["train_segments_per_s"]]])]
    f, lat = res["features"], res["latency"]
    md += [
        "",
        "## Feature path (CPU)",
        "",
        md_table(["figure", "value"], [
            [f"decode + complex STFT of a {f['clip_seconds']:g} s clip", f"{f['decode_stft_clips_per_s']:.1f} clips/s "
             f"(decode {f['decode_ms']:.1f} ms + STFT {f['stft_ms']:.1f} ms; median of {f['timed_clips']})"],
            ["cached segments through the DataLoader", f"{f['delivery_segments_per_s']:,.0f} segments/s "
             f"(batch {f['delivery_batch']}, num_workers={f['delivery_num_workers']} as training, page cache warm)"],
            *([["the same on one torch thread (as in a DataLoader worker)",
                f"{f['one_thread']['decode_stft_clips_per_s']:.1f} clips/s (decode {f['one_thread']['decode_ms']:.1f} "
                f"ms + STFT {f['one_thread']['stft_ms']:.1f} ms); delivery "
                f"{f['one_thread']['delivery_segments_per_s']:,.0f} segments/s"]] if "one_thread" in f else []),
            ["training-step consumption (auto, CPU)",
             f"{res['devices']['cpu']['networks']['auto']['train_segments_per_s']:.1f} segments/s"],
            ["delivery / consumption", f"**{f['delivery_over_training']:,.0f}x**"],
        ]),
        "",
        "## Scoring latency",
        "",
        md_table(["device", "one clip end to end (ms)", "of which the model (ms)", "segments"],
                 [[d, x["score_ms"], x["model_ms"], x["segments"]] for d, x in lat.items()]),
        "",
        f"End to end = `evaluate.score_clips` on one {res['settings']['clip_seconds']:g} s clip with a fresh, empty "
        "feature cache: decode, STFT, cache write and read, all segments through the auto network, cross-entropy.",
        "",
        "## Ray Tune overhead",
        "",
    ]
    ray = res["ray_overhead"]
    md += ["not measured yet (hook `bench.run.ray_overhead`)."] if ray is None else \
          [md_table(["figure", "value"], [[k, val] for k, val in ray.items()])]
    md += ["", "## Run log", "",
           "Each step's wall time, the process's CPU time, and the 1-minute load average at its start and end. "
           f"CPU / (threads x wall) well below 1 means other processes took the CPUs (threads: {m['threads']}).", "",
           md_table(["step", "wall s", "CPU s", "CPU / (threads x wall)", "load start -> end"],
                    [[r["section"], r["wall_s"], r["cpu_s"], f"{r['cpu_per_thread_wall']:.2f}",
                      f"{r['load_start']:.2f} -> {r['load_end']:.2f}"] for r in res["sections"]])]
    missed = [t for t in res["targets"] if not t["met"]]
    if missed:
        md += ["", "## Why targets are missed", ""]
        for t in missed:
            shown = (f"{t['value']:.0%} < {t['threshold']:.0%}" if t["name"] == "train_loop_share"
                     else f"{t['value']:.2f}x < {t['threshold']:g}x")
            md += [f"### {t['what']}: {shown}", "", t["why"] or "", ""]
            for name, p in res["profiles"].get(t["name"], {}).items():
                md += [f"torch.profiler, {name} ({p['total_ms']:.0f} ms profiled):", "", "```", p["table"].rstrip(),
                       "```", ""]
    return "\n".join(md).rstrip() + "\n"


# ----------------------------------------------------------------------------- main


class Sections:
    """Wall time, process CPU time and load average of each step of the run: a step whose CPU time
    is far below ``threads x wall`` was starved by other processes, not slow by itself."""

    def __init__(self, threads: int) -> None:
        self.threads, self.rows = threads, []

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        log(name)
        load, wall, cpu = os.getloadavg()[0], time.perf_counter(), time.process_time()
        yield
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        self.rows.append({"section": name, "wall_s": wall, "cpu_s": cpu,
                          "cpu_per_thread_wall": cpu / wall / self.threads, "load_start": load,
                          "load_end": os.getloadavg()[0]})


def run(sizes: Sizes, quick: bool, threads: int, devices: list[torch.device], with_compile: bool) -> dict[str, Any]:
    t_start = time.perf_counter()
    torch.set_num_threads(threads)
    section = Sections(threads)
    res: dict[str, Any] = {
        "schema": SCHEMA, "quick": quick, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"),
        "machine": machine_info(threads), "versions": versions(),
        "settings": {"batch": sizes.batch, "n_freq": sizes.features.n_freq,
                     "segment_frames": sizes.features.segment_frames, "n_fft": sizes.features.n_fft,
                     "hop_length": sizes.features.hop_length, "sample_rate": sizes.features.sample_rate,
                     "clip_seconds": sizes.clip_seconds, "rounds": sizes.rounds, "layer_rounds": sizes.layer_rounds,
                     "load_start": list(os.getloadavg())},
        "devices": {}, "profiles": {}, "latency": {},
    }
    live: dict[str, tuple[dict, dict]] = {}  # device -> (networks, their step/inference closures)
    with tempfile.TemporaryDirectory(prefix="mimimi-bench-") as d:
        tmp = Path(d)
        # the feature path and the latency first, in a process not yet churned by the big networks
        with section("cpu: feature path"):
            train, test = make_clips(tmp / "synth", sizes)
            res["features"] = bench_features(train, sizes, tmp / "cache")
        loader_epoch = res["features"].pop("_loader_epoch")
        for device in devices:
            with section(f"{device.type}: scoring latency"):
                res["latency"][device.type] = bench_latency(device, test, train, sizes, tmp)
        for device in devices:
            dev: dict[str, Any] = {}
            with section(f"{device.type}: fp32 matmul peak"):
                dev["matmul"] = matmul_peak(device, sizes.matmul_n, sizes.rounds)
            with section(f"{device.type}: networks, inference and training step, {sizes.rounds} rounds"):
                dev.update(bench_networks(device, sizes, dev["matmul"]["gflops"]))
            live[device.type] = (dev.pop("_nets"), dev.pop("_fns"))
            with section(f"{device.type}: counting training FLOPs"):
                dev["train_flop_per_step"] = {k: count_train_flops(live[device.type][1]["train"][k])
                                              for k in ("auto", "textbook")}
            with section(f"{device.type}: per-layer complex convolutions, {sizes.layer_rounds} rounds"):
                dev["layers"] = bench_layers(device, sizes)
            if with_compile:
                with section(f"{device.type}: torch.compile"):
                    dev["compile"] = bench_compile(device, sizes)
            res["devices"][device.type] = dev
        with section("ray overhead hook"):
            res["ray_overhead"] = ray_overhead(sizes)
        res["targets"] = evaluate_targets(res)

        cpu, (nets, fns) = res["devices"]["cpu"], live["cpu"]
        for t in res["targets"]:
            if t["met"]:
                continue
            with section(f"profiling: {t['name']} missed"):
                if t["name"] == "train_loop_share":
                    r = res["ray_overhead"]
                    t["why"] = (
                        f"Each trial pays a fixed cost of about {r['ray_overhead_s_per_trial']:.0f} s outside the "
                        "training loop: Tune starts the trial actor, the trial builds a TorchTrainer whose "
                        "controller starts a worker group (new Python processes importing torch), the worker "
                        "indexes the data and checks the feature cache, and every report crosses "
                        "Train -> Tune. The smoke search's trials train for only "
                        f"{r['train_loop_s']:.1f} s, so that fixed cost dominates; it falls under 10 % once a "
                        f"trial trains for about {r['trial_train_time_for_10pct_s']:.0f} s or more (e.g. 30 "
                        "epochs of a real machine type): search budgets should favour fewer, longer trials.")
                elif t["name"] in ("train_speedup", "infer_speedup"):
                    mode = "train" if t["name"] == "train_speedup" else "infer"
                    for net in nets.values():
                        net.train(mode == "train")
                    pf = profile_table(fns[mode]["auto"], torch.device("cpu"), sizes.profile_rows)
                    pt = profile_table(fns[mode]["textbook"], torch.device("cpu"), sizes.profile_rows)
                    res["profiles"][t["name"]] = {"auto network": pf, "textbook network": pt}
                    t["why"] = explain_network_target(t, cpu, pf, pt, cpu["matmul"]["gflops"], mode)
                else:
                    p = profile_table(loader_epoch, torch.device("cpu"), sizes.profile_rows)
                    res["profiles"][t["name"]] = {"DataLoader delivery": p}
                    f = res["features"]
                    t["why"] = (
                        f"Delivery runs in the training process (num_workers={f['delivery_num_workers']}, the "
                        f"training default): {f['delivery_segments_per_s']:.0f} segments/s, i.e. "
                        f"{1e3 / f['delivery_segments_per_s']:.2f} ms per segment, of which "
                        f"`TrainSegments.__getitem__` alone takes {f['getitem_ms']:.2f} ms (cache entry path: "
                        "resolve + stat + SHA-1, `np.load` memory map, a 513 x 64 complex64 copy); the rest is "
                        "the DataLoader's collation (profile below). DataLoader workers (train.num_workers > 0) "
                        "would run it beside the training step."
                        + (f" On one torch thread the same delivery ran at "
                           f"{f['one_thread']['delivery_segments_per_s']:,.0f} segments/s: with "
                           f"{res['machine']['threads']} threads on a CPU shared with other processes (load average "
                           f"in the run log), small ops spend their time in OpenMP barrier waits."
                           if "one_thread" in f else ""))
    res["settings"]["load_end"] = list(os.getloadavg())
    res["sections"] = section.rows
    res["wall_s"] = time.perf_counter() - t_start
    return res


def _jsonable(o: Any) -> Any:
    if isinstance(o, dict):
        return {k: _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    return o


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test, not a measurement")
    ap.add_argument("--out", type=Path, default=REPO / "BENCHMARKS.md",
                    help="markdown report; benchmarks.json is written beside it (default: the repository root)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: every usable CPU)")
    ap.add_argument("--device", choices=["auto", "cpu"], default="auto", help="auto: CPU, and CUDA when present")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile of the auto network (slow)")
    args = ap.parse_args(argv)
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = args.threads or usable
    devices = [torch.device("cpu")]
    if args.device == "auto" and torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    res = run(QUICK if args.quick else FULL, args.quick, threads, devices, args.compile)
    out_md = args.out
    out_md.parent.mkdir(parents=True, exist_ok=True)
    out_json = out_md.with_name("benchmarks.json")
    out_json.write_text(json.dumps(_jsonable(res), indent=1) + "\n")
    out_md.write_text(render_markdown(res))
    for t in res["targets"]:
        shown = (f"{t['value']:.0%} (needed {t['threshold']:.0%})" if t["name"] == "train_loop_share"
                 else f"{t['value']:.2f}x (needed {t['threshold']:g}x)")
        log(f"{t['what']}: {shown} {'met' if t['met'] else 'NOT met'}")
    log(f"wrote {out_md} and {out_json} in {res['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
