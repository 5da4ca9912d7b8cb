"""How the rehearsal measures a stage: the stage's command in a subprocess, its whole process tree sampled
from /proc (peak resident memory of each process, by kind: driver, trial, Ray Train worker, ...), its CPU
time with every descendant's, and the disk a folder takes.

- **Wall**: from the start of the command to its exit; ``descendants_outlived_s``: how long its last
  descendant outlived it (Ray's processes shutting down).
- **CPU**: user + system time of the command and every descendant: ``getrusage(RUSAGE_CHILDREN)`` around
  the stage (``cpu_waited_s``), plus the last sampled utime + stime of each process whose parent ignored
  SIGCHLD (``cpu_autoreaped_s``: Ray's raylet does, so the kernel reaps its workers and their time reaches
  no rusage). This process is made a child subreaper (Linux ``PR_SET_CHILD_SUBREAPER``), so a descendant
  whose parent exits first is re-parented here and reaped here, and its time counts. ``cpu_sampled_s``,
  the sum over every sampled process of its last reading, is a cross-check (each process's last interval
  is missing from it).
- **Peak RSS**: ``VmHWM`` (the kernel's high-water mark of a process's resident set) of every process of the
  tree, read each interval; the last reading is the process's peak, whenever it happened. Per kind: the
  largest process's peak and the number of processes. ``tree_peak_pss_mib``: the largest sum over the tree
  at one sampling (every ``pss_every``-th of a larger tree) of the proportional set sizes (``Pss`` of ``smaps_rollup``: a
  shared page counts once in all), what the node needs; ``tree_peak_rss_mib``, the same of ``VmRSS``,
  counts shared pages (torch's libraries, Ray's object store) in every process that maps them.
- **Kinds**: the process's command line, which Ray sets to ``ray::<actor class>.<method>``: ``trial`` (Tune's
  function trainable, ``ImplicitFunc``), ``Ray Train worker`` (``RayTrainWorker``), ``Ray Train controller``,
  ``Ray worker, idle or other`` (``ray::IDLE``, Ray's own actors), ``Ray system`` (gcs_server, raylet,
  dashboard and its subprocesses, log monitor, agents), ``child process`` (anything else: the feature cache's
  pool, DataLoader workers); the command itself is the ``driver``.
"""
from __future__ import annotations

import ctypes
import os
import resource
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
PR_SET_CHILD_SUBREAPER = 36
KINDS = ("driver", "trial", "Ray Train worker", "Ray Train controller", "Ray worker, idle or other", "Ray system",
         "child process")
_SPECIFIC = {"trial": 3, "Ray Train worker": 3, "Ray Train controller": 3, "Ray worker, idle or other": 1}
_RAY_SYSTEM = ("gcs_server", "raylet", "dashboard", "log_monitor", "ray/_private", "runtime_env", "ray_client_server",
               "monitor.py", "plasma")


def process_kind(cmdline: str, is_root: bool) -> str:
    """The kind of a process of a stage's tree, from its command line (module docstring).

    >>> process_kind("ray::ImplicitFunc.train", False), process_kind("ray::RayTrainWorker.run_train_fn", False)
    ('trial', 'Ray Train worker')
    >>> process_kind("ray::IDLE", False), process_kind("/venv/lib/ray/core/src/ray/raylet/raylet --x", False)
    ('Ray worker, idle or other', 'Ray system')
    >>> process_kind("python tuning/search.py", True), process_kind("python -m mimimi.cache", False)
    ('driver', 'child process')
    """
    if is_root:
        return "driver"
    if "ImplicitFunc" in cmdline:
        return "trial"
    if "RayTrainWorker" in cmdline:
        return "Ray Train worker"
    if "TrainController" in cmdline:
        return "Ray Train controller"
    if cmdline.startswith("ray::") or "default_worker.py" in cmdline or "setup_worker.py" in cmdline:
        return "Ray worker, idle or other"
    if any(s in cmdline for s in _RAY_SYSTEM):
        return "Ray system"
    return "child process"


def become_subreaper() -> bool:
    """Make this process the reaper of its orphaned descendants (Linux); False where that is not possible."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _read(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return f.read().decode(errors="replace")
    except OSError:
        return None


def _stat(pid: int) -> tuple[int, float, int] | None:
    """(ppid, utime + stime in s, start time in ticks) of ``pid`` from /proc/<pid>/stat."""
    text = _read(f"/proc/{pid}/stat")
    if not text:
        return None
    rest = text[text.rfind(")") + 2:].split()  # after "pid (comm) ": state is rest[0]
    try:
        return int(rest[1]), (int(rest[11]) + int(rest[12])) / CLK_TCK, int(rest[19])
    except (IndexError, ValueError):
        return None


def _status(pid: int) -> tuple[int, int, bool]:
    """(VmHWM, VmRSS) of ``pid`` in KiB (zeros for a zombie or a vanished process), and whether it ignores
    SIGCHLD (the kernel then reaps its children, and their CPU time reaches no one's rusage)."""
    hwm = rss = 0
    ignores = False
    for line in (_read(f"/proc/{pid}/status") or "").splitlines():
        if line.startswith("VmHWM:"):
            hwm = int(line.split()[1])
        elif line.startswith("VmRSS:"):
            rss = int(line.split()[1])
        elif line.startswith("SigIgn:"):
            ignores = bool(int(line.split()[1], 16) & (1 << (signal.SIGCHLD - 1)))
    return hwm, rss, ignores


def _pss_kib(pid: int) -> int:
    """The proportional set size of ``pid`` in KiB (a page shared by n processes counts 1/n in each)."""
    for line in (_read(f"/proc/{pid}/smaps_rollup") or "").splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


@dataclass
class _Proc:
    kind: str
    titles: set[str] = field(default_factory=set)
    hwm_kib: int = 0
    cpu_s: float = 0.0
    autoreaped: bool = False  # its parent, when last seen, ignored SIGCHLD (Ray's raylet does)


class TreeSampler(threading.Thread):
    """Samples every ``interval`` s the processes descending from this one (the stage's command and, with a
    subreaper, its orphans), reaping the orphans that exit; the proportional set sizes every ``pss_every``-th
    time (reading them walks each process's page tables), or every time while the tree has 4 processes or
    fewer."""

    def __init__(self, root_pid: int, interval: float, pss_every: int = 4):
        super().__init__(daemon=True)
        self.root, self.interval, self.me, self.pss_every = root_pid, interval, os.getpid(), pss_every
        self.procs: dict[tuple[int, int], _Proc] = {}  # (pid, start ticks): pids are reused
        self.peak_rss_kib = self.peak_pss_kib = self.samples = 0
        self.alive = {root_pid}
        self._stop_event = threading.Event()

    def tree(self) -> dict[int, tuple[int, float, int]]:
        """{pid: (ppid, CPU s, start ticks)} of every process descending from this one."""
        stats = {}
        for name in os.listdir("/proc"):
            if name.isdigit() and (st := _stat(int(name))) is not None:
                stats[int(name)] = st
        children: dict[int, list[int]] = {}
        for pid, (ppid, _, _) in stats.items():
            children.setdefault(ppid, []).append(pid)
        out, todo = {}, list(children.get(self.me, []))
        while todo:
            pid = todo.pop()
            out[pid] = stats[pid]
            todo += children.get(pid, [])
        return out

    def sample(self) -> None:
        tree = self.tree()
        status = {pid: _status(pid) for pid in tree}
        pss = self.samples % self.pss_every == 0 or len(tree) <= 4  # a few processes: cheap every time
        rss_total = pss_total = 0
        self.samples += 1
        now: dict[int, str] = {}  # pid -> kind in this sample (a parent comes before its children)
        for pid, (ppid, cpu, start) in tree.items():
            cmd = (_read(f"/proc/{pid}/cmdline") or "").replace("\0", " ").strip()
            hwm, rss, _ = status[pid]
            kind = process_kind(cmd, pid == self.root)
            if kind == "child process" and now.get(ppid) == "Ray system":  # the dashboard's own subprocesses
                kind = "Ray system"
            p = self.procs.get((pid, start))
            if p is None:
                p = self.procs[(pid, start)] = _Proc(kind)
            elif _SPECIFIC.get(kind, 2) > _SPECIFIC.get(p.kind, 2):  # an idle Ray worker that became a trial
                p.kind = kind
            if cmd:
                p.titles.add(cmd[:120])
            p.hwm_kib, p.cpu_s = max(p.hwm_kib, hwm), max(p.cpu_s, cpu)
            p.autoreaped = ppid in status and status[ppid][2]
            now[pid] = p.kind
            rss_total += rss
            pss_total += _pss_kib(pid) if pss else 0
            if ppid == self.me and pid != self.root:  # an orphan re-parented here: reap it once it exits
                try:
                    os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    pass
        self.peak_rss_kib = max(self.peak_rss_kib, rss_total)
        self.peak_pss_kib = max(self.peak_pss_kib, pss_total)
        self.alive = set(tree)

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.sample()
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def run_measured(cmd: list[str], *, log: Path, cwd: Path, env: dict[str, str] | None = None,
                 interval: float = 0.5, grace_s: float = 60.0, timeout: float | None = None) -> dict[str, Any]:
    """Run ``cmd`` (stdout and stderr to ``log``) and measure it and every descendant (module docstring).
    After the command exits, its descendants get ``grace_s`` to exit by themselves (their CPU time and memory
    still count); those left are sent SIGTERM, then SIGKILL, by pid, and counted in ``leftover_processes``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        sampler = TreeSampler(proc.pid, interval)
        sampler.start()
        timed_out = False
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            proc.kill()
            rc = proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            sampler.stop()
            _end(sampler.tree())
            raise
    wall = time.perf_counter() - start
    sampler.stop()
    deadline = time.perf_counter() + grace_s
    while True:  # what the command left running: sampled (and reaped) here until it is gone, or the grace ends
        sampler.sample()
        if not sampler.alive or time.perf_counter() >= deadline:
            break
        time.sleep(interval)
    tail = time.perf_counter() - start - wall
    leftovers = _end(sampler.tree())
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    waited = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    autoreaped = sum(p.cpu_s for p in sampler.procs.values() if p.autoreaped)
    kinds: dict[str, dict[str, Any]] = {}
    for p in sampler.procs.values():
        k = kinds.setdefault(p.kind, {"count": 0, "peak_rss_mib": 0.0, "cpu_sampled_s": 0.0, "titles": set()})
        k["count"] += 1
        k["peak_rss_mib"] = max(k["peak_rss_mib"], p.hwm_kib / 1024)
        k["cpu_sampled_s"] += p.cpu_s
        k["titles"] |= p.titles
    for k in kinds.values():
        k["titles"] = sorted(k["titles"])[:8]
    return {"command": [str(c) for c in cmd], "returncode": rc, "timed_out": timed_out, "wall_s": wall,
            "descendants_outlived_s": tail, "cpu_s": waited + autoreaped, "cpu_waited_s": waited,
            "cpu_autoreaped_s": autoreaped, "cpu_sampled_s": sum(p.cpu_s for p in sampler.procs.values()),
            "processes": {k: kinds[k] for k in KINDS if k in kinds},
            "tree_peak_rss_mib": sampler.peak_rss_kib / 1024, "tree_peak_pss_mib": sampler.peak_pss_kib / 1024,
            "samples": sampler.samples, "leftover_processes": leftovers, "log": str(log)}


def _end(tree: dict[int, tuple[int, float, int]]) -> int:
    """SIGTERM, then SIGKILL, the processes of ``tree`` (descendants of this process), each by its pid, and
    reap those that were this process's children; the number that were still there."""
    if not tree:
        return 0
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in tree:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        time.sleep(2.0)
    for pid in tree:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
    return len(tree)


def du_bytes(path: Path) -> int:
    """The bytes of the files under ``path`` (apparent sizes; 0 when it is not there)."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    if not path.exists():
        return 0
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())
