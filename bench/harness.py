"""How the benchmark measures: interleaved timing rounds, profiler tables, the machine and versions it ran
on, a run log of every step's wall and CPU time, and peak resident memory measured in a fresh process."""
from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mimimi.precision import native_bf16

REPO = Path(__file__).resolve().parents[1]


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(fns: dict[str, Callable[[], Any]], rounds: int, device: torch.device) -> dict[str, list[float]]:
    """Wall seconds of each fn: one warm-up call each, then ``rounds`` rounds calling each in turn (a load
    change on a shared machine then hits every variant alike)."""
    for fn in fns.values():
        fn()
    sync(device)
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
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
    sync(device)
    with profile(activities=activities) as prof:
        fn()
        sync(device)
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
        "avx512": "avx512f" in flags.split(), "bf16_flags": sorted({"avx512_bf16", "amx_bf16"} & set(flags.split())),
        "native_bf16": native_bf16("cpu"), "memory_gib": mem, "platform": platform.platform(), "cuda": None,
    }
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info["cuda"] = {"name": p.name, "memory_gib": round(p.total_memory / 2**30, 1),
                        "capability": f"{p.major}.{p.minor}", "native_bf16": native_bf16("cuda"),
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


def max_rss_mib() -> float:
    """This process's peak resident set so far: ``VmHWM`` of /proc/self/status (ru_maxrss would carry the
    forking parent's peak across exec); ru_maxrss where /proc is not there."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def in_fresh_process(func: str, kwargs: dict[str, Any], threads: int, timeout: float = 600) -> dict[str, Any]:
    """``bench.cases.<func>(**kwargs)`` in a new Python process (peak memory of its own, not this one's);
    returns the dict it prints as its last stdout line."""
    code = (f"import json, sys, torch; torch.set_num_threads({threads}); from bench import cases; "
            f"print(json.dumps(cases.{func}(**json.loads(sys.argv[1]))))")
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(kwargs)], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, check=False,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])})
    if proc.returncode != 0:
        raise RuntimeError(f"bench.cases.{func}{kwargs} failed: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def jsonable(o: Any) -> Any:
    if isinstance(o, dict):
        return {k: jsonable(v) for k, v in o.items() if not str(k).startswith("_")}
    if isinstance(o, (list, tuple)):
        return [jsonable(v) for v in o]
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    return o
