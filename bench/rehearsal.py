"""A DCASE-sized rehearsal of the whole path, measured per stage: ``python -m bench.rehearsal`` (``make
rehearsal``) -> REHEARSAL.md and rehearsal.json.

It synthesises one machine type at DCASE 2020 size (4 IDs x 900 training clips of 10 s, 100 normal + 100
anomalous test clips per ID) and runs the real path on it as a user would, each stage a command in its own
process: the feature cache (``python -m mimimi.cache``), a search (``tuning/search.py``: 2 trials side by
side, 1 epoch each (``--epochs``), ASHA's grace period = the epochs, the space ``train.classes: type | all``
and ``train.lr``), the evaluation of its model (``python -m mimimi.evaluate --run-id``), ``mimimi score`` on a
folder of 1 000 files, the registered pyfunc model's load (``Tracker.load_pyfunc``), and the training
DataLoader's delivery against what one GPU trains at. Each stage's wall and CPU time, peak memory by process
kind and disk are measured (``bench.rehearsal_measure``), at full size and at a quarter of it, so each stage's
cost per clip sits beside the other size's, with the ratio and a flag where the full size costs more than 1.3x
per clip.

    python -m bench.rehearsal                        # both sizes (70 min on an idle 2-core machine)
    python -m bench.rehearsal --size quarter --work /data/rehearsal
    python -m bench.rehearsal --quick                # tiny sizes: a test of the command, not a measurement
    python -m bench.rehearsal --render rehearsal.json  # only write REHEARSAL.md again
    python -m bench.rehearsal --work /data/rehearsal --only delivery  # measure one stage again after a change

``rehearsal.json`` is the place to read the figures from: ``comparison.<stage>.<size>.per_clip`` (wall and
CPU seconds per clip of the stage's unit) for every stage, ``sizes.<size>.stages.<stage>`` with the raw
measurement, ``sizes.<size>.trials`` per trial. The work folder (``--work``, by default a temporary one,
removed at the end unless ``--keep``) holds the data, the cache, the search's storage and MLflow store, and a
log per stage.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from bench.harness import REPO, jsonable, log, machine_info, versions
from bench.rehearsal_measure import become_subreaper, du_bytes, run_measured
from bench.rehearsal_projection import project
from bench.rehearsal_report import FLAG_RATIO, render_markdown
from bench.rehearsal_stages import MIB, mlflow_disk, search_ids, trials
from mimimi.features import cache_dir_for, usable_cpus

SCHEMA = 1
STAGES = ("synthesise", "cache", "search", "evaluate", "score", "pyfunc_load", "delivery")


@dataclasses.dataclass(frozen=True)
class Size:
    """One size of the rehearsal's set: IDs, clips per ID, clip length, and the files ``mimimi score`` gets."""

    ids: int
    train: int
    test_normal: int
    test_anomaly: int
    seconds: float
    score_files: int

    def quarter(self) -> Size:
        """A quarter of the clips per ID (the same IDs and clip length).

        >>> Size(4, 900, 100, 100, 10.0, 1000).quarter()
        Size(ids=4, train=225, test_normal=25, test_anomaly=25, seconds=10.0, score_files=250)
        """
        return Size(self.ids, max(2, round(self.train / 4)), max(1, round(self.test_normal / 4)),
                    max(1, round(self.test_anomaly / 4)), self.seconds, max(1, round(self.score_files / 4)))

    def id_names(self) -> list[str]:
        return [f"{2 * i:02d}" for i in range(self.ids)]  # 00, 02, 04, 06: DCASE 2020's fan IDs

    def clips(self, types: int) -> int:
        return types * self.ids * (self.train + self.test_normal + self.test_anomaly)

    def disk_bytes(self, types: int) -> int:
        """About what the set, its cache (STFT complex64 + log-mel float32) and the score folder take."""
        frames = 1 + int(self.seconds * 16000) // 512
        per_clip = self.seconds * 32000 + 513 * frames * 8 + 128 * frames * 4
        return int((self.clips(types) + self.score_files) * per_clip)


FULL = Size(ids=4, train=900, test_normal=100, test_anomaly=100, seconds=10.0, score_files=1000)
QUICK = Size(ids=2, train=6, test_normal=2, test_anomaly=2, seconds=2.0, score_files=4)


def trial_resources(cores: int, trials: int, quick: bool) -> dict[str, float]:
    """Resources that let ``trials`` trials run side by side on ``cores`` cores: each trial's function takes
    0.25 CPU and its one Ray Train worker the rest of its share (Ray gives a worker with under one CPU one
    torch thread). --quick: the smoke test's 0.5 CPU per worker.

    >>> trial_resources(2, 2, False), trial_resources(16, 2, False)["cpus_per_worker"]
    ({'workers': 1, 'trial_cpus': 0.25, 'cpus_per_worker': 0.75}, 7.75)
    """
    share = cores / max(1, trials)
    return {"workers": 1, "trial_cpus": 0.25, "cpus_per_worker": 0.5 if quick else max(0.5, share - 0.25)}


def stage_command(func: str, kwargs: dict[str, Any]) -> list[str]:
    """``bench.rehearsal_stages.<func>(**kwargs)`` in a fresh Python, its dict printed as the last line."""
    code = ("import json, sys; from bench import rehearsal_stages as s; "
            f"print(json.dumps(s.{func}(**json.loads(sys.argv[1]))))")
    return [sys.executable, "-c", code, json.dumps(kwargs)]


def _last_json(log_file: str) -> dict[str, Any]:
    lines = Path(log_file).read_text(errors="replace").strip().splitlines()
    return json.loads(lines[-1]) if lines else {}


class Rehearsal:
    """The stages of one size, in order, each measured; the results land in ``res["sizes"][name]``, written out
    (json and markdown) after every stage."""

    def __init__(self, args: argparse.Namespace, res: dict[str, Any], name: str, size: Size, work: Path):
        self.args, self.res, self.name, self.size = args, res, name, size
        self.work = work / name
        self.root, self.score_dir = self.work / "data", self.work / "score-files"
        self.storage, self.uri = self.work / "runs", f"sqlite:///{self.work / 'mlruns' / 'mlflow.db'}"
        self.types = args.machine_type.split(",")
        self.out = res["sizes"].setdefault(name, {"spec": dataclasses.asdict(size), "stages": {}})
        path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
        self.env = {**os.environ, "PYTHONPATH": path}
        self.env.pop("MLFLOW_TRACKING_URI", None)
        self.configs = [str(Path(c).resolve()) for c in args.config]

    def stage(self, stage: str, cmd: list[str], clips: int, unit: str) -> dict[str, Any]:
        log(f"{self.name}: {stage} ({clips} {unit})")
        r = run_measured(cmd, log=self.work / "logs" / f"{stage}.log", cwd=self.work, env=self.env,
                         interval=self.args.interval, timeout=self.args.stage_timeout)
        r.update(clips=clips, unit=unit, per_clip={"wall_s": r["wall_s"] / clips, "cpu_s": r["cpu_s"] / clips})
        self.out["stages"][stage] = r
        save(self.args, self.res)
        if r["returncode"] != 0:
            tail = Path(r["log"]).read_text(errors="replace").strip().splitlines()[-5:]
            raise RuntimeError(f"{self.name}: stage {stage} exited {r['returncode']} (log {r['log']}):\n"
                               + "\n".join(tail))
        log(f"{self.name}: {stage}: {r['wall_s']:.1f} s wall, {r['cpu_s']:.1f} s CPU")
        return r

    def wanted(self, stage: str) -> bool:
        """Whether this run measures ``stage``: every stage, or those of ``--only`` (the others' figures are
        the earlier run's, from its rehearsal.json; their data from its work folder)."""
        return not self.args.only or stage in self.args.only

    def run(self) -> None:
        a, s, types = self.args, self.size, self.types
        self.work.mkdir(parents=True, exist_ok=True)
        if self.wanted("synthesise"):
            self._synthesise()
        py = sys.executable
        if self.wanted("cache"):
            self.stage("cache", [py, "-m", "mimimi.cache", "--data-root", str(self.root), "--kinds", ",".join(a.kinds),
                                 "--workers", str(a.workers), *self._configs()],
                       s.clips(len(types)), "clips featurised")
        train_clips = s.ids * s.train  # of the searched type
        found = self._search(train_clips) if self.wanted("search") else self.out["stages"]["search"]["result"]
        run_id = found["parent_run_id"]
        if self.wanted("evaluate"):
            self.stage("evaluate", [py, "-m", "mimimi.evaluate", "--run-id", run_id, "--tracking-uri", self.uri],
                       s.ids * (s.test_normal + s.test_anomaly), "test clips")
        if self.wanted("score"):
            self.stage("score", [py, "-m", "mimimi.score", "--run-id", run_id, "--tracking-uri", self.uri, "--format",
                                 "csv", "--output", str(self.work / "scores.csv"), str(self.score_dir)],
                       s.score_files, "files scored")
        if self.wanted("pyfunc_load"):
            r = self.stage("pyfunc_load", stage_command("load_pyfunc", dict(
                tracking_uri=self.uri, model_uri=f"models:/mimimi-{types[0]}/{found['model_version']}")),
                train_clips, "training clips in the model")
            r["result"] = _last_json(r["log"])
        if self.wanted("delivery"):
            r = self.stage("delivery", stage_command("delivery", dict(
                data_root=str(self.root), machine_type=types[0], num_workers=a.loader_workers, configs=self.configs,
                torch_threads=self._worker_threads())), train_clips, "training clips (two epochs per num_workers)")
            r["result"] = _last_json(r["log"])
        # what the run left on disk, read again after any stage measured again
        self.out["trials"] = trials(self.storage, "rehearsal", types[0])
        self.out["disk"] = self.disk(run_id)
        save(self.args, self.res)

    def _synthesise(self) -> None:
        a, s, types = self.args, self.size, self.types
        r = self.stage("synthesise", stage_command("synthesise", dict(
            root=str(self.root), score_root=str(self.score_dir), machine_types=types, ids=s.id_names(), train=s.train,
            test_normal=s.test_normal, test_anomaly=s.test_anomaly, seconds=s.seconds, score_files=s.score_files,
            workers=a.workers)), s.clips(len(types)) + s.score_files, "clips written")
        r["result"] = _last_json(r["log"])

    def _search(self, train_clips: int) -> dict[str, Any]:
        """The search stage; what it printed of its parent run and registered model."""
        types, py = self.types, sys.executable
        r = self.stage("search", [py, str(REPO / "tuning" / "search.py"), "--data-root", str(self.root),
                                  "--machine-types", types[0], "--storage-path", str(self.storage),
                                  "--tracking-uri", self.uri, "--experiment", "rehearsal", "--name", "rehearsal",
                                  "--search-config", str(self._search_config()), *self._configs()],
                       len(types) * train_clips, "training clips")
        found = search_ids(Path(r["log"]).read_text(errors="replace"))
        r["result"] = found
        self.out["trials"] = trials(self.storage, "rehearsal", types[0])
        if not found["parent_run_id"]:
            raise RuntimeError(f"{self.name}: the search printed no parent run (log {r['log']})")
        return found

    def _worker_threads(self) -> int:
        """The torch threads of a trial's Ray Train worker: Ray sets ``OMP_NUM_THREADS`` to its CPUs."""
        from tuning.space import load_search_config

        scfg = load_search_config(self.types[0], [str(self.work / "search.yaml")])
        return max(1, int(scfg.resources.cpus_per_worker))

    def _configs(self) -> list[str]:
        return [x for c in self.configs for x in ("--config", c)]

    def _search_config(self) -> Path:
        """The rehearsal's search YAML: ``--trials`` trials of ``--epochs`` epochs, ASHA's grace period = the
        epochs (no trial stopped early), the space ``train.classes: type | all`` and ``train.lr`` (every other
        key of the base and per-type space dropped). With one machine type the search drops train.classes
        (``tuning.space.prune_space``); the learning rate, drawn from a continuous range, keeps the trials
        distinct at the same cost, so they are not collapsed into one. The trials run side by side, each with
        its share of the cores (``resources``): the machine is kept busy as a cluster's would be."""
        from tuning.space import load_search_config

        a = self.args
        space = {k: None for k in load_search_config(self.types[0]).space}
        space["train.classes"] = {"type": "choice", "values": ["type", "all"]}
        space["train.lr"] = {"type": "loguniform", "low": 3e-4, "high": 3e-3}
        doc = {"search": {"num_samples": a.trials, "max_concurrent": a.trials, "grace_period": a.epochs},
               "space": space, "config": {"train": {"epochs": a.epochs, "patience": a.epochs}},
               "resources": trial_resources(usable_cpus(), a.trials, a.quick)}
        path = self.work / "search.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        return path

    def disk(self, run_id: str) -> dict[str, Any]:
        from mimimi.config import load_config

        cache = cache_dir_for(self.root, load_config(*self.configs).data.cache_dir)  # as mimimi cache chose it
        return {
            "wav_mib": du_bytes(self.root) / MIB, "score_files_mib": du_bytes(self.score_dir) / MIB,
            "cache_mib": {d.name.split("-")[0]: du_bytes(d) / MIB for d in sorted(cache.glob("*-*")) if d.is_dir()},
            "ray_logs_mib": du_bytes(self.storage / "rehearsal" / "ray-logs") / MIB,
            "storage_total_mib": du_bytes(self.storage) / MIB,
            "optuna_db_mib": sum(du_bytes(p) for p in self.work.rglob("optuna.db")) / MIB,
            "mlflow": mlflow_disk(self.uri, run_id),
        }


def compare(res: dict[str, Any]) -> dict[str, Any]:
    """Per stage: the cost per clip at each size, the ratio full / quarter of wall and CPU per clip, and a
    flag where either exceeds ``FLAG_RATIO`` (the full size costs more per clip: not linear)."""
    out = {}
    sizes = res["sizes"]
    for stage in STAGES:
        row: dict[str, Any] = {}
        for name in ("full", "quarter"):
            st = sizes.get(name, {}).get("stages", {}).get(stage)
            if st and st["returncode"] == 0:
                row[name] = {"clips": st["clips"], "unit": st["unit"], "per_clip": st["per_clip"],
                             "wall_s": st["wall_s"], "cpu_s": st["cpu_s"]}
        if "full" in row and "quarter" in row:
            f, q = row["full"]["per_clip"], row["quarter"]["per_clip"]
            row["ratio"] = {k: f[k] / q[k] if q[k] > 0 else math.nan for k in ("wall_s", "cpu_s")}
            row["flag"] = any(v > FLAG_RATIO for v in row["ratio"].values())
        out[stage] = row
    return out


def save(args: argparse.Namespace, res: dict[str, Any]) -> None:
    """rehearsal.json and REHEARSAL.md as the run stands (after every stage: a stopped run keeps its figures);
    the markdown from the json's data, as ``--render`` writes it."""
    res["comparison"] = compare(res)
    res["projection"] = project(res)
    res["wall_s"] = time.perf_counter() - args.t_start
    plain = jsonable(res)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_name("rehearsal.json").write_text(json.dumps(plain, indent=1) + "\n")
    args.out.write_text(render_markdown(json.loads(json.dumps(plain))))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.rehearsal", description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", choices=["full", "quarter", "both"], default="both",
                    help="full: the sizes below; quarter: a quarter of the clips per ID; both (default): quarter, "
                         "then full")
    ap.add_argument("--quick", action="store_true",
                    help=f"tiny sizes ({QUICK.ids} IDs x {QUICK.train} clips of {QUICK.seconds:g} s, "
                         f"{QUICK.score_files} score files, 1 epoch): a test of the command, not a measurement")
    ap.add_argument("--machine-type", default="fan",
                    help="the type searched; a comma-separated list adds the others to the set (a train.classes=all "
                         "trial trains on them too; with one type 'all' is the same as 'type' and the search drops it)")
    ap.add_argument("--ids", type=int, default=None, help=f"machine IDs per type (default {FULL.ids})")
    ap.add_argument("--train", type=int, default=None, help=f"normal training clips per ID (default {FULL.train})")
    ap.add_argument("--test-normal", type=int, default=None,
                    help=f"normal test clips per ID (default {FULL.test_normal})")
    ap.add_argument("--test-anomaly", type=int, default=None,
                    help=f"anomalous test clips per ID (default {FULL.test_anomaly})")
    ap.add_argument("--seconds", type=float, default=None, help=f"clip length (default {FULL.seconds:g})")
    ap.add_argument("--score-files", type=int, default=None,
                    help=f"files given to mimimi score (default {FULL.score_files})")
    ap.add_argument("--trials", type=int, default=2, help="trials of the search (default 2)")
    ap.add_argument("--epochs", type=int, default=1,
                    help="epochs per trial, no early stop (default 1: each epoch's cost is measured, and the rehearsal "
                         "then takes about 70 minutes on an idle 2-core machine, both sizes)")
    ap.add_argument("--workers", type=int, default=usable_cpus(),
                    help="processes that synthesise and fill the cache (default: every usable core)")
    ap.add_argument("--loader-workers", default=None,
                    help="DataLoader num_workers values to measure, comma-separated (default 0, 2 and every usable "
                         "core)")
    ap.add_argument("--config", action="append", default=[], help="MIMIMI config YAML for the cache, trials, delivery")
    ap.add_argument("--work", type=Path, default=None,
                    help="work folder (data, cache, runs, MLflow, logs); default: a temporary one, removed at the end")
    ap.add_argument("--keep", action="store_true", help="keep the temporary work folder")
    ap.add_argument("--out", type=Path, default=REPO / "REHEARSAL.md", help="markdown report; rehearsal.json beside it")
    ap.add_argument("--interval", type=float, default=0.5, help="seconds between samples of the process tree")
    ap.add_argument("--stage-timeout", type=float, default=None, help="seconds a stage may run (default: no limit)")
    ap.add_argument("--only", default=None, metavar="STAGES",
                    help=f"measure only these stages (comma-separated, of {', '.join(STAGES)}) again, on the data "
                         "an earlier run left in --work; the other stages' figures are kept from the rehearsal.json "
                         "beside --out, and the report says which were measured again, when, and at which commit")
    ap.add_argument("--render", type=Path, default=None, metavar="JSON",
                    help="measure nothing: write --out from an earlier run's rehearsal.json")
    args = ap.parse_args(argv)
    base = QUICK if args.quick else FULL
    given = {k: getattr(args, k) for k in ("ids", "train", "test_normal", "test_anomaly", "seconds", "score_files")}
    args.full = dataclasses.replace(base, **{k: v for k, v in given.items() if v is not None})
    cores = usable_cpus()
    args.loader_workers = ([int(w) for w in args.loader_workers.split(",")] if args.loader_workers
                           else sorted({0, 2} if args.quick else {0, 2, cores}))
    if args.full.ids < 2 and "," not in args.machine_type:
        ap.error("the classifier needs two classes: --ids 2 or more (or a second --machine-type)")
    for name in ("train", "test_normal", "test_anomaly", "score_files", "ids"):
        if getattr(args.full, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.full.seconds <= 0 or args.trials < 1 or args.epochs < 1 or args.workers < 1:
        ap.error("--seconds, --trials, --epochs and --workers must be positive")
    if any(w < 0 for w in args.loader_workers):
        ap.error("--loader-workers must be >= 0")
    if args.only is not None:
        args.only = args.only.split(",")
        if unknown := [x for x in args.only if x not in STAGES]:
            ap.error(f"--only: unknown stage(s) {', '.join(unknown)}; the stages are {', '.join(STAGES)}")
        if args.work is None:
            ap.error("--only measures stages again on an earlier run's data: give that run's --work")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.t_start = time.perf_counter()
    if args.render:
        args.out.write_text(render_markdown(json.loads(args.render.read_text())))
        log(f"wrote {args.out} from {args.render}")
        return 0
    from mimimi import kinds
    from mimimi.config import load_config

    base = load_config(*args.config)
    args.kinds = list(kinds.of(base).features)  # what the search's trials read
    sizes = {"full": args.full, "quarter": args.full.quarter()}
    order = ["quarter", "full"] if args.size == "both" else [args.size]
    temporary = args.work is None
    work = Path(tempfile.mkdtemp(prefix="mimimi-rehearsal-")) if temporary else args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    if args.only:
        res = again(args, work, order)
        sizes = {name: Size(**res["sizes"][name]["spec"]) for name in order}  # the earlier run's sizes
        log(f"work folder {work}; measuring {', '.join(args.only)} again at {', '.join(order)} size")
    else:
        types = args.machine_type.split(",")
        need = sum(sizes[n].disk_bytes(len(types)) for n in order)
        free = shutil.disk_usage(work).free
        if need * 1.2 > free:
            sys.exit(f"error: {work}: the rehearsal needs about {need / 2**30:.1f} GiB (wav, feature cache, score "
                     f"files), {free / 2**30:.1f} GiB are free: give --work on a larger disk, or --size quarter")
        if held := [str(work / n) for n in order if (work / n).exists() and any((work / n).iterdir())]:
            # an earlier run's data, cache entries, trials and MLflow runs would be counted as this run's
            sys.exit(f"error: {', '.join(held)}: holds an earlier rehearsal; remove it, give another --work, or "
                     "measure stages again on it with --only")
        res = fresh(args, work, types, need, base)
        log(f"work folder {work}; sizes {', '.join(order)}; about {need / 2**30:.1f} GiB of disk")
    status = 0
    try:
        for name in order:
            Rehearsal(args, res, name, sizes[name], work).run()
    except RuntimeError as e:
        res["error"] = str(e)
        log(f"error: {e}")
        status = 1
    finally:
        res["settings"]["load_end"] = list(os.getloadavg())
        save(args, res)
        if temporary and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    for stage, row in res["comparison"].items():
        if "ratio" in row:
            log(f"{stage}: per clip full / quarter = {row['ratio']['wall_s']:.2f} wall, {row['ratio']['cpu_s']:.2f} CPU"
                + ("  FLAG" if row["flag"] else ""))
    log(f"wrote {args.out} and {args.out.with_name('rehearsal.json')} in {res['wall_s']:.0f} s")
    return status


def again(args: argparse.Namespace, work: Path, order: list[str]) -> dict[str, Any]:
    """The earlier run's results (the rehearsal.json beside --out), to measure ``--only``'s stages again on the
    data it left in ``work``; the run's record of what was measured again, when and at which commit."""
    earlier = args.out.with_name("rehearsal.json")
    if not earlier.exists():
        sys.exit(f"error: {earlier}: no earlier run's results to measure --only {','.join(args.only)} again into")
    res = json.loads(earlier.read_text())
    for name in order:
        if name not in res["sizes"] or not (work / name / "data").is_dir():
            sys.exit(f"error: {work / name}: the earlier run's {name} size is not there (its results or its data): "
                     f"run the whole rehearsal at --size {name} first")
    for name in order:  # the later stages and the disk read the search's runs
        if "search" not in args.only and not res["sizes"][name]["stages"].get("search", {}).get("result", {}).get(
                "parent_run_id"):
            sys.exit(f"error: {earlier}: the {name} size has no finished search: run the whole rehearsal again")
    s = res["settings"]  # the earlier run's types, trials and epochs; this run's loader settings
    args.machine_type, args.trials, args.epochs = ",".join(s["machine_types"]), s["trials"], s["epochs"]
    s["load_start"] = list(os.getloadavg())
    if "delivery" in args.only:
        s["loader_workers"] = args.loader_workers
    become_subreaper()  # as in the first run: a stage's orphaned processes are still measured
    res.pop("error", None)
    res.setdefault("again", []).append({
        "stages": args.only, "sizes": order, "git": versions()["git"],
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")})
    args.t_start -= res.get("wall_s", 0)  # the report's run time: the earlier run's plus this one's
    return res


def fresh(args: argparse.Namespace, work: Path, types: list[str], need: int, base: Any) -> dict[str, Any]:
    """A new run's results, before any stage: when, where, with what."""
    return {
        "schema": SCHEMA, "quick": args.quick,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(usable_cpus()), "versions": versions(),
        "settings": {"machine_types": types, "trials": args.trials, "epochs": args.epochs, "kinds": args.kinds,
                     "resources": trial_resources(usable_cpus(), args.trials, args.quick),
                     "loader_workers": args.loader_workers, "workers": args.workers, "configs": args.config,
                     "interval_s": args.interval, "subreaper": become_subreaper(), "work": str(work),
                     "max_references_per_id": base.validation.max_references_per_id,
                     "load_start": list(os.getloadavg()), "disk_estimate_gib": need / 2**30},
        "sizes": {},
    }


if __name__ == "__main__":
    sys.exit(main())
