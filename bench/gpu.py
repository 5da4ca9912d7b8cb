"""The GPU check, one prepared script (well under 5 minutes on one GPU): the benchmark's network rows on CUDA
(reference fp32, default fp32 and bf16), ``torch.compile`` of the training step, scoring files end to end, and a
smoke search with ``--use-gpu``.

    python -m bench.gpu [--out DIR] [--merge BENCHMARKS.md] [--quick] [--device cuda|cpu] [--no-search]
                        [--no-compile]

It writes ``DIR/gpu.json`` and ``DIR/GPU.md`` (a "## GPU" section naming the card); ``--merge`` puts that
section into a BENCHMARKS.md, replacing an older one. Without a CUDA device it stops with exit 2, unless
``--device cpu`` (the same steps on the CPU: how the test suite checks this script).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from bench import cases
from bench.harness import REPO, Sections, jsonable, log, machine_info, versions
from bench.report import md_table, replace_section

TITLE = "## GPU"


def smoke_search(use_gpu: bool, timeout: float) -> dict[str, Any]:
    """``tuning/search.py --smoke-test`` (with ``--use-gpu`` on CUDA) in a subprocess with its own stores."""
    with tempfile.TemporaryDirectory(prefix="mimimi-gpu-search-") as d:
        cmd = [sys.executable, str(REPO / "tuning" / "search.py"), "--smoke-test", "--name", "gpu",
               "--storage-path", str(Path(d) / "storage"), "--tracking-uri", f"sqlite:///{Path(d) / 'mlflow.db'}"]
        cmd += ["--use-gpu"] if use_gpu else []
        t0 = time.perf_counter()
        try:
            r = subprocess.run(cmd, cwd=d, capture_output=True, text=True, timeout=timeout, check=False)
            rc, tail = r.returncode, (r.stdout + r.stderr).strip().splitlines()[-8:]
        except subprocess.TimeoutExpired:
            rc, tail = None, [f"timed out after {timeout:.0f} s"]
    return {"command": " ".join(cmd[1:]), "use_gpu": use_gpu, "returncode": rc, "wall_s": time.perf_counter() - t0,
            "tail": tail}


def run(device: torch.device, sizes: cases.Sizes, search: bool, search_timeout: float,
        compile_: bool = True) -> dict[str, Any]:
    section = Sections(torch.get_num_threads())
    res: dict[str, Any] = {"device": device.type, "machine": machine_info(torch.get_num_threads()),
                           "versions": versions(), "quick": sizes == cases.QUICK}
    with tempfile.TemporaryDirectory(prefix="mimimi-gpu-") as d:
        tmp = Path(d)
        with section("synthetic clips"):
            _, test = cases.make_clips(tmp / "synth", sizes)
        with section(f"{device.type}: matmul peak"):
            res["matmul"] = cases.matmul_peak(device, sizes.matmul_n, sizes.rounds)
        with section(f"{device.type}: networks"):
            res["networks"] = cases.networks(device, sizes, res["matmul"]["gflops"])
            res["networks"].pop("_fns")
        if compile_:
            with section(f"{device.type}: torch.compile, fp32 and bf16"):
                try:
                    res["compile"] = cases.compiled(device, sizes)
                except Exception as e:  # noqa: BLE001 - a compiler failure is a result to report, not a crash
                    res["compile"] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
        with section(f"{device.type}: scoring files end to end"):
            res["scoring"] = cases.scoring(device, sizes, tmp / "synth", test, tmp / "scoring")
    if search:
        with section("smoke search"):
            res["search"] = smoke_search(device.type == "cuda", search_timeout)
    res["sections"] = section.rows
    return res


def render(res: dict[str, Any]) -> str:
    cuda = res["machine"].get("cuda")
    card = cuda["name"] if cuda and res["device"] == "cuda" else f"none: run on {res['device']}"
    rows = res["networks"]["rows"]
    md = [f"{TITLE} ({card})", "",
          f"`python -m bench.gpu` on {time.strftime('%Y-%m-%d')}: torch {res['versions']['torch']}, CUDA "
          f"{res['versions']['cuda']}" + (" — **quick mode, not a measurement**" if res["quick"] else "") + ".", "",
          md_table(["network", "precision", "training (segments/s)", "x reference", "inference (segments/s)",
                    "x reference"],
                   [[r["network"], r["precision"], r["train_segments_per_s"], f"{r['train_speedup']:.2f}x",
                     r["infer_segments_per_s"], f"{r['infer_speedup']:.2f}x"] for r in rows.values()])]
    c = res.get("compile", {"error": "not run (--no-compile)"})
    if "error" in c:
        md += ["", f"torch.compile failed: {c['error']}"]
    else:
        md += ["", md_table(["compiled", "training (segments/s)", "x reference", "inference (segments/s)",
                             "x reference", "compile s (cold / warm cache)", "x eager step"],
                            [[k, r["train_segments_per_s"], f"{r['train_speedup']:.2f}x", r["infer_segments_per_s"],
                              f"{r['infer_speedup']:.2f}x", f"{r['compile_cold_s']:.0f} / {r['compile_warm_s']:.0f}",
                              f"{r['speedup_over_eager']:.2f}x"] for k, r in c["rows"].items()])]
    s = res["scoring"]
    md += ["", f"Scoring {s['clips']} files end to end ({s['scorer']}): {s['clips_per_s']['fp32']:.1f} clips/s fp32, "
           f"{s['clips_per_s']['bf16']:.1f} bf16."]
    if "search" in res:
        r = res["search"]
        md += [f"Smoke search (`{'--use-gpu' if r['use_gpu'] else 'CPU'}`): exit {r['returncode']} in "
               f"{r['wall_s']:.0f} s."]
    return "\n".join(md) + "\n"


def merge(path: Path, section: str) -> None:
    """Put ``section`` into the markdown at ``path``, replacing an older "## GPU" section."""
    text = path.read_text() if path.is_file() else ""
    path.write_text(replace_section(text, TITLE, section.rstrip("\n")) if text.strip() else section)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")), help="folder for gpu.json, GPU.md")
    ap.add_argument("--merge", type=Path, default=None, help="a BENCHMARKS.md to put the GPU section into")
    ap.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a check of this script, not a measurement")
    ap.add_argument("--no-search", action="store_true", help="skip the smoke search")
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    ap.add_argument("--search-timeout", type=float, default=240.0, help="seconds (default: 240)")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench.gpu: no CUDA device here (torch.cuda.is_available() is False); --device cpu runs the same "
              "steps on the CPU", file=sys.stderr)
        return 2
    if args.search_timeout <= 0:
        ap.error(f"--search-timeout must be positive, got {args.search_timeout}")
    res = run(torch.device(args.device), cases.QUICK if args.quick else cases.FULL, not args.no_search,
              args.search_timeout, compile_=not args.no_compile)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu.json").write_text(json.dumps(jsonable(res), indent=1) + "\n")
    section = render(res)
    (args.out / "GPU.md").write_text(section)
    if args.merge:
        merge(args.merge, section)
    print(section)
    log(f"wrote {args.out / 'gpu.json'} and {args.out / 'GPU.md'}" + (f"; merged into {args.merge}" if args.merge else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
