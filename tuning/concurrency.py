"""How many trials run at once: the search's ``max_concurrent`` against what the Ray cluster holds.

A trial takes its trial function's CPUs (``resources.trial_cpus``, which Tune reserves) plus its Ray Train
workers' (``workers x cpus_per_worker``, and ``workers x gpus_per_worker`` GPUs when it uses GPUs), which Tune
does not reserve: a trial started without room for its workers waits for them, and Ray Train gives up after
60 s (``WorkerGroupStartupTimeoutError``). So a local Ray runs no more trials at once than fit whole; a
cluster (``--address``) may grow (an autoscaler adds nodes, GPUs appear later), so it is not capped to what it
holds at the start, and the search says so.
"""
from __future__ import annotations

import math
from typing import Mapping, NamedTuple

from tuning.interrupts import SearchError
from tuning.space import Resources


class AtOnce(NamedTuple):
    """How many trials Tune may run at once, and why that is not simply what was asked ("" when it is)."""

    trials: int
    why: str


def trials_at_once(asked: int, res: Resources, cluster: Mapping[str, float], use_gpu: bool,
                   may_grow: bool = False, trials: int | None = None) -> AtOnce:
    """``asked`` (never more than the search's ``trials``), or as many trials as ``cluster``
    (``ray.cluster_resources()``) holds whole when that is fewer; ``may_grow`` (a cluster): as asked whatever
    it holds now. A SearchError when not even one trial fits a Ray that cannot grow.

    >>> trials_at_once(2, Resources(), {"CPU": 2.0}, use_gpu=False).trials  # 1.25 CPUs a trial
    1
    >>> trials_at_once(2, Resources(), {"CPU": 4.0}, use_gpu=False)
    AtOnce(trials=2, why='')
    >>> trials_at_once(4, Resources(), {"CPU": 16.0}, use_gpu=True, may_grow=True).trials  # no GPU yet
    4
    >>> trials_at_once(4, Resources(), {"CPU": 16.0}, use_gpu=False, trials=1).trials  # --fixed: one trial
    1
    """
    if trials is not None and 0 < trials < asked:
        asked = trials
    cpus = res.trial_cpus + res.workers * res.cpus_per_worker
    gpus = res.workers * res.gpus_per_worker if use_gpu else 0.0
    have_cpus, have_gpus = float(cluster.get("CPU", 0.0)), float(cluster.get("GPU", 0.0))
    fit = min(_whole(have_cpus, cpus), _whole(have_gpus, gpus))
    if fit >= asked:
        return AtOnce(asked, "")
    takes = _count(cpus, "CPU") + (f" and {_count(gpus, 'GPU')}" if gpus else "")
    has = _count(have_cpus, "CPU") + (f" and {_count(have_gpus, 'GPU')}" if gpus else "")
    if may_grow:
        return AtOnce(asked, f"{asked} at a time as asked, though the cluster holds {fit} now (a trial takes {takes}, "
                             f"it has {has}): not capped, as an autoscaler may add nodes")
    parts = (f"{res.trial_cpus:g} for the trial + {res.workers} worker{'s' if res.workers != 1 else ''} "
             f"x {res.cpus_per_worker:g}")
    if fit == 0:
        raise SearchError(f"a trial takes {takes} ({parts}) and Ray has {has}: give Ray more (--num-cpus) or "
                          "the trials less (resources: in a --search-config)")
    return AtOnce(fit, f"{fit} at a time, not {asked}: a trial takes {takes} ({parts}) and Ray has {has}")


def _whole(have: float, need: float) -> float:
    """How many whole ``need`` fit in ``have`` (infinite when nothing is needed)."""
    return math.inf if need <= 0 else math.floor(have / need + 1e-9)


def _count(n: float, unit: str) -> str:
    return f"{n:g} {unit}" + ("" if n == 1 else "s")
