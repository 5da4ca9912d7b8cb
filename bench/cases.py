"""What the benchmark measures, one function per case; each returns plain data (``bench.report`` renders it).

- ``networks``: training step and inference of the independent 4-convolution reference
  (``bench.reference``) and of MIMIMI's default network in fp32 and bf16, interleaved, same input;
- ``compiled``: ``torch.compile`` of the default network in fp32 and bf16 (compile time with a cold and a
  warm cache, training step and inference, the steps after which it has paid for itself:
  ``train.compile: auto`` rests on it);
- ``training_step_rss``: peak resident memory of a training step, in a fresh process per variant;
- ``layers``: each complex convolution alone in every kernel and layout (``--layers``);
- ``feature_path``: decode + STFT, and cached segments through the training DataLoader;
- ``scoring``: clips/s scoring 10 s files end to end with ``mimimi.scoring.clips.score_paths`` and the default
  scorer, fp32 and bf16, on a model trained for the purpose;
- the Ray per-trial fixed cost is ``bench.ray_overhead``.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from bench.harness import interleaved, log, max_rss_mib, stats, sync
from bench.reference import ReferenceNet, load_from_complexnet
from mimimi import precision
from mimimi.config import FeatureConfig, TrainConfig, load_config
from mimimi.data.dataset import TrainSegments, id_map
from mimimi.data.index import index_dataset, select
from mimimi.data.synth import generate
from mimimi.features import FeatureCache, complex_stft, decode
from mimimi.nn import ComplexNet, ComplexNetConfig, conv_padding, forward_flops
from mimimi.nn.complex import auto_conv_impl, complex_conv2d

# (network, precision) rows, in the order the report shows them; the first is what the others are compared to
ROWS = (("reference", "fp32"), ("default", "fp32"), ("default", "bf16"))
LAYER_VARIANTS = (("textbook", False), ("block", False), ("block", True), ("gauss", True))  # (impl, channels_last)
IDS = ("00", "02", "04", "06")


@dataclasses.dataclass(frozen=True)
class Sizes:
    """Everything that sets how big and how long the benchmark is."""

    batch: int  # segments per training step / inference batch
    features: FeatureConfig  # STFT -> network input (1, n_freq, segment_frames)
    clip_seconds: float  # synthetic clips of the feature path and of scoring
    train_clips_per_id: int  # the scoring model's training clips per machine ID (4 IDs)
    test_clips_per_id: int  # clips scored per ID per round (half normal, half anomalous)
    rounds: int  # timed rounds per figure, after one warm-up
    layer_rounds: int  # timed rounds per layer variant (--layers)
    matmul_n: int  # square fp32 matmul for the peak
    delivery_batches: int  # DataLoader batches per delivery round
    rss_steps: int  # training steps of the peak-memory probe
    profile_rows: int  # top ops in each profiler table


FULL = Sizes(batch=32, features=FeatureConfig(), clip_seconds=10.0, train_clips_per_id=4, test_clips_per_id=4,
             rounds=5, layer_rounds=2, matmul_n=2048, delivery_batches=25, rss_steps=3, profile_rows=12)
QUICK = Sizes(batch=2, features=FeatureConfig(n_fft=128, hop_length=64, segment_frames=32, eval_hop_frames=32),
              clip_seconds=1.0, train_clips_per_id=4, test_clips_per_id=2, rounds=1, layer_rounds=1, matmul_n=128,
              delivery_batches=2, rss_steps=1, profile_rows=5)


def input_shape(sizes: Sizes) -> tuple[int, int, int, int]:
    return (sizes.batch, 1, sizes.features.n_freq, sizes.features.segment_frames)


def build(network: str, n_freq: int) -> torch.nn.Module:
    """``reference`` (bench.reference) or ``default`` (ComplexNet's default config: conv_impl auto)."""
    if network == "reference":
        return ReferenceNet()
    if network == "default":
        return ComplexNet(ComplexNetConfig(n_freq=n_freq))
    raise ValueError(f"network must be reference or default, got {network!r}")


def matmul_peak(device: torch.device, n: int, rounds: int) -> dict[str, Any]:
    """fp32 ``torch.mm`` of two n x n matrices: 2 n^3 FLOP per call; median and best GFLOP/s."""
    a, b = (torch.randn(n, n, device=device) for _ in range(2))
    out = torch.empty(n, n, device=device)
    ts = interleaved({"mm": lambda: torch.mm(a, b, out=out)}, max(3, 2 * rounds), device)["mm"]
    flop = 2 * n**3
    return {"n": n, "gflops": flop / statistics.median(ts) / 1e9, "gflops_best": flop / min(ts) / 1e9, **stats(ts)}


def _step_fns(net: torch.nn.Module, prec: str, x: torch.Tensor, y: torch.Tensor, device: torch.device,
              step_net: torch.nn.Module | None = None) -> tuple[Callable[[], Any], Callable[[], Any]]:
    """(inference, training step) of ``net`` at ``prec``: the training step is forward, the three heads'
    cross-entropies in fp32 (as mimimi.kinds computes them), backward, Adam."""
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    runner = step_net if step_net is not None else net

    def infer() -> Any:
        net.eval()
        with torch.no_grad(), precision.autocast(prec, device):
            return net(x)

    def step() -> None:
        net.train()
        with precision.autocast(prec, device):
            logits = runner(x)
        loss = sum(F.cross_entropy(lg.float(), y) for lg in logits)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return infer, step


def networks(device: torch.device, sizes: Sizes, peak_gflops: float) -> dict[str, Any]:
    """Every ROWS variant on the same input, same weights, interleaved rounds."""
    shape = input_shape(sizes)
    torch.manual_seed(0)
    default = build("default", shape[2]).to(device)
    nets = {"reference/fp32": load_from_complexnet(ReferenceNet(), default.state_dict()).to(device),
            "default/fp32": default, "default/bf16": copy.deepcopy(default)}
    x = torch.randn(shape, dtype=torch.complex64, device=device)
    y = torch.randint(0, 4, (sizes.batch,), device=device)
    fns = {k: _step_fns(n, k.split("/")[1], x, y, device) for k, n in nets.items()}
    with torch.no_grad():  # the same function: the reference against the default, and bf16 against fp32
        out = {k: [t.float() for t in fns[k][0]()] for k in nets}
    diff = {k: max(float((a - b).abs().max()) for a, b in zip(out[k], out["reference/fp32"])) for k in nets}
    t_inf = interleaved({k: f[0] for k, f in fns.items()}, sizes.rounds, device)
    t_train = interleaved({k: f[1] for k, f in fns.items()}, sizes.rounds, device)
    rows: dict[str, Any] = {}
    for k, net in nets.items():
        ti, tt = statistics.median(t_inf[k]), statistics.median(t_train[k])
        flop = forward_flops(net, shape)  # as it runs: the Gauss layers count 3/4
        rows[k] = {"network": k.split("/")[0], "precision": k.split("/")[1],
                   "train_segments_per_s": sizes.batch / tt, "train_step": stats(t_train[k]),
                   "infer_segments_per_s": sizes.batch / ti, "infer_batch": stats(t_inf[k]),
                   "max_abs_logit_diff_vs_reference": diff[k], "forward_flop_per_batch": flop,
                   "forward_gflops": flop / ti / 1e9, "forward_peak_fraction": flop / ti / 1e9 / peak_gflops}
    ref = rows["reference/fp32"]
    for r in rows.values():
        r["train_speedup"] = ref["train_step"]["median_s"] / r["train_step"]["median_s"]
        r["infer_speedup"] = ref["infer_batch"]["median_s"] / r["infer_batch"]["median_s"]
    layers = [auto_conv_impl(b.conv.in_channels, b.conv.out_channels, b.conv.kernel, b.conv.stride, device)._asdict()
              for b in default.blocks]
    return {"input_shape": list(shape), "rows": rows, "default_layers": layers, "_fns": fns}


def compiled(device: torch.device, sizes: Sizes, precisions: tuple[str, ...] = ("fp32", "bf16")) -> dict[str, Any]:
    """``torch.compile`` of the default network, fp32 and bf16: the compile time of its training step with an
    empty TorchInductor cache (the first trial on a node) and with the cache that compile left (later
    trials: the FX graph cache is on disk), then training step and inference, compiled, interleaved with the
    reference (eager fp32) on the same input. Rows as ``networks``'s; the break-even is against eager."""
    shape = input_shape(sizes)
    x = torch.randn(shape, dtype=torch.complex64, device=device)
    y = torch.randint(0, 4, (sizes.batch,), device=device)
    out: dict[str, Any] = {"rows": {}}
    with tempfile.TemporaryDirectory(prefix="mimimi-inductor-") as cache:
        old = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache  # cold: nothing compiled yet in this directory
        try:
            torch.manual_seed(0)
            ref_net = build("reference", shape[2]).to(device)
            fns = {"reference/fp32": _step_fns(ref_net, "fp32", x, y, device)}
            eager = {}
            for prec in precisions:
                compile_s = []
                for _ in range(2):  # the second: a fresh module, the same graphs, the cache warm
                    torch._dynamo.reset()  # forget in-memory compiled code: only the disk cache helps
                    torch.manual_seed(0)
                    net = build("default", shape[2]).to(device)
                    infer, step = _step_fns(net, prec, x, y, device, step_net=torch.compile(net))
                    t0 = time.perf_counter()
                    step()
                    sync(device)
                    compile_s.append(time.perf_counter() - t0)
                eager[prec] = _step_fns(copy.deepcopy(net), prec, x, y, device)[1]
                cnet = torch.compile(net)

                def c_infer(net=net, cnet=cnet, prec=prec) -> Any:
                    net.eval()
                    with torch.no_grad(), precision.autocast(prec, device):
                        return cnet(x)

                c_infer()  # compiles the eval-mode graph
                fns[f"default/{prec} compiled"] = (c_infer, step)
                out[f"compile_{prec}"] = {"cold_s": compile_s[0], "warm_s": compile_s[1]}
        finally:
            if old is None:
                os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None)
            else:
                os.environ["TORCHINDUCTOR_CACHE_DIR"] = old
    t_inf = interleaved({k: f[0] for k, f in fns.items()}, sizes.rounds, device)
    t_train = interleaved({**{k: f[1] for k, f in fns.items()}, **{f"eager/{p}": fn for p, fn in eager.items()}},
                          sizes.rounds, device)
    ref_t, ref_i = statistics.median(t_train["reference/fp32"]), statistics.median(t_inf["reference/fp32"])
    for k in fns:
        if k == "reference/fp32":
            continue
        prec = k.split("/")[1].split()[0]
        tt, ti = statistics.median(t_train[k]), statistics.median(t_inf[k])
        e = statistics.median(t_train[f"eager/{prec}"])
        c = out[f"compile_{prec}"]
        out["rows"][k] = {"network": "default", "precision": f"{prec}, compiled",
                          "train_segments_per_s": sizes.batch / tt, "train_step": stats(t_train[k]),
                          "infer_segments_per_s": sizes.batch / ti, "infer_batch": stats(t_inf[k]),
                          "train_speedup": ref_t / tt, "infer_speedup": ref_i / ti, "eager_step_s": e,
                          "speedup_over_eager": e / tt, "compile_cold_s": c["cold_s"] - tt,
                          "compile_warm_s": c["warm_s"] - tt,
                          "break_even_steps_cold": (c["cold_s"] - tt) / (e - tt) if e > tt else math.inf,
                          "break_even_steps_warm": (c["warm_s"] - tt) / (e - tt) if e > tt else math.inf}
    return out


def training_step_rss(network: str, prec: str, batch: int, n_freq: int, frames: int, steps: int) -> dict[str, Any]:
    """Run in a fresh process (``harness.in_fresh_process``): peak resident memory before the first training
    step (interpreter, torch, the network, one batch) and after ``steps`` steps."""
    torch.manual_seed(0)
    device = torch.device("cpu")
    net = build(network, n_freq)
    x = torch.randn(batch, 1, n_freq, frames, dtype=torch.complex64)
    y = torch.randint(0, 4, (batch,))
    _, step = _step_fns(net, prec, x, y, device)
    before = max_rss_mib()
    for _ in range(steps):
        step()
    return {"before_mib": before, "peak_mib": max_rss_mib()}


def layers(device: torch.device, sizes: Sizes) -> list[dict[str, Any]]:
    """Each complex convolution of the network alone, in every candidate kernel and layout."""
    cfg = ComplexNetConfig()
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
        rows.append({
            "layer": li + 1, "in_channels": i, "out_channels": o, "input_hw": [h, w], "kernel": list(k),
            "stride": list(s), "auto": f"{choice.impl}/{'channels_last' if choice.channels_last else 'contiguous'}",
            "forward_ms": {n: statistics.median(v) * 1e3 for n, v in t_f.items()},
            "train_ms": {n: statistics.median(v) * 1e3 for n, v in t_t.items()},
        })
        h, w = (h + 2 * p[0] - k[0]) // s[0] + 1, (w + 2 * p[1] - k[1]) // s[1] + 1
    return rows


def make_clips(root: Path, sizes: Sizes) -> tuple[Any, Any]:
    """A synthetic DCASE-layout tree (fan, 4 IDs); returns (training clips, test clips) index tables."""
    half = max(1, sizes.test_clips_per_id // 2)
    generate(root, ["fan"], list(IDS), n_train=sizes.train_clips_per_id, n_test_normal=half, n_test_anomaly=half,
             seconds=sizes.clip_seconds, seed=0)
    clips = index_dataset(root).clips
    return (select(clips, split="train").reset_index(drop=True), select(clips, split="test").reset_index(drop=True))


def feature_path(train, sizes: Sizes, cache_dir: Path) -> dict[str, Any]:
    """Decode + STFT per clip, and cached segments through the training DataLoader (``num_workers`` as
    training's default), page cache warm."""
    cfg = sizes.features
    paths = list(train.path)
    dec, stft = [], []
    for _ in range(max(1, sizes.rounds // 2 + 1)):
        for p in paths:
            t0 = time.perf_counter()
            wave = decode(p, cfg)
            t1 = time.perf_counter()
            complex_stft(wave, cfg)
            dec.append(t1 - t0)
            stft.append(time.perf_counter() - t1)
    per_clip = [a + b for a, b in zip(dec, stft)]
    out: dict[str, Any] = {"clip_seconds": sizes.clip_seconds, "timed_clips": len(per_clip),
                           "decode_ms": statistics.median(dec) * 1e3, "stft_ms": statistics.median(stft) * 1e3,
                           "decode_stft_clips_per_s": 1 / statistics.median(per_clip)}
    cache = FeatureCache(cache_dir, cfg)
    cache.warm(paths, progress=False)
    if hasattr(os, "sync"):
        os.sync()  # written long ago, as in training after the first warm(): no writeback under the reads
    per_epoch = sizes.batch * sizes.delivery_batches
    ds = TrainSegments(train, cache, id_map(train), segments_per_clip=math.ceil(per_epoch / len(train)), seed=0)
    workers = TrainConfig().num_workers
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
    ts = []
    for r in range(max(3, sizes.rounds)):
        ds.set_epoch(r + 1)
        t0 = time.perf_counter()
        epoch()
        ts.append(time.perf_counter() - t0)
    out.update({"delivery_segments_per_s": n_seg / statistics.median(ts), "delivery_batch": sizes.batch,
                "delivery_num_workers": workers, "delivery_timing": stats(ts)})
    return out


SCORED_BACKEND = "knn-stats"  # a network back-end plus the log-mel statistics: what a typical default costs


def scoring(device: torch.device, sizes: Sizes, root: Path, test, work: Path) -> dict[str, Any]:
    """Files scored per second by ``mimimi.scoring.clips.score_paths`` (decode, STFT, every segment through the
    network, the ``SCORED_BACKEND`` back-end, the decision) with the default config, fp32 and bf16 scoring passes. The
    model is trained for one epoch on ``root`` first (its accuracy is not the point; its speed does not
    depend on the weights)."""
    from mimimi.checkpoint import load_checkpoint
    from mimimi.scoring.clips import Model, score_paths
    from mimimi.training import fit

    cfg = load_config(overrides={
        "data": {"root": str(root), "cache_dir": str(work / "cache")},
        "features": dataclasses.asdict(sizes.features),
        "train": {"machine_type": "fan", "epochs": 1, "val_fraction": 0.25, "progress": False, "device": device.type,
                  "compile": False},
        "scoring": {"scorer": SCORED_BACKEND},  # fixed, not chosen on validation: runs stay comparable
    })
    t0 = time.perf_counter()
    result = fit(cfg, work / "model")
    train_s = time.perf_counter() - t0
    loaded = load_checkpoint(result.best_checkpoint, map_location=device)
    paths = list(test.path)
    variants = {}
    for prec in ("fp32", "bf16"):
        scfg = dataclasses.replace(loaded.cfg, scoring=dataclasses.replace(loaded.cfg.scoring, precision=prec))
        model = Model(loaded._replace(cfg=scfg), None, "bench", None)
        variants[prec] = (lambda model=model: score_paths(model, paths, device=device.type))
    scored = {k: fn() for k, fn in variants.items()}
    ts = interleaved(variants, max(2, sizes.rounds // 2), device)
    one = interleaved({"one": lambda: score_paths(Model(loaded, None, "bench", None), paths[:1],
                                                  device=device.type)}, max(3, sizes.rounds), device)["one"]
    return {"clips": len(paths), "clip_seconds": sizes.clip_seconds, "scorer": loaded.scoring.default
            if loaded.scoring is not None else None, "model_train_s": train_s,
            "clips_per_s": {k: len(paths) / statistics.median(v) for k, v in ts.items()},
            "timing": {k: stats(v) for k, v in ts.items()}, "one_clip_ms": statistics.median(one) * 1e3,
            "all_scored": all(len(s.scores) == len(paths) and not s.errors for s in scored.values())}
