"""What a search shows on the console: by default its own lines only (one per settled trial, the results).
Ray's workers' output and the raylet's warnings stay in Ray's logs, MLflow's registration lines go to the
search's log beside them (both copied to ``<storage>/<search>/ray-logs/``), Tune's tables and Optuna's and
MLflow's INFO lines are not printed; ``--verbose`` shows all of it on the console. Progress bars only on a
terminal.

Standard library only: ``quiet`` runs before Ray, MLflow and Optuna load, as they read their console
settings when they are imported.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
from pathlib import Path

LOG = logging.getLogger("tuning")  # the search's own log (a file beside Ray's logs: log_to)
LOG_FILE = "mimimi-search.log"

# The raylet's "WARNING: 8 PYTHON worker processes have been started on node … which is 4x the maximum expected
# startup concurrency (2) …": each trial starts a trial actor, a Train controller and its workers, so a small
# machine counts several per CPU. The raylet reports it as an error of the job, which the driver prints to
# stdout whatever log_to_driver says; Ray's driver-side filter (RAY_DEDUP_LOGS_SKIP_REGEX, read on import)
# keeps it off the console. It stays in raylet.out.
RAY_WORKER_POOL_WARNING = "worker processes have been started on node"


def quiet(verbose: bool) -> None:
    """Before Ray, MLflow and Optuna load (each reads these settings then): unless ``verbose``, Tune's
    experiment tables, the raylet's worker-pool warning and MLflow's INFO lines ("Creating initial MLflow
    database tables") stay off the console. Ray's workers' output is ``ray.init``'s (``start_ray``), Optuna's
    "A new study created" ``tune_type``'s."""
    if verbose:
        return
    skip = os.environ.get("RAY_DEDUP_LOGS_SKIP_REGEX")
    if not skip:
        os.environ["RAY_DEDUP_LOGS_SKIP_REGEX"] = RAY_WORKER_POOL_WARNING
    elif RAY_WORKER_POOL_WARNING not in skip:
        os.environ["RAY_DEDUP_LOGS_SKIP_REGEX"] = f"{skip}|{RAY_WORKER_POOL_WARNING}"
    # Tune's new output engine prints its experiment box even when silent; the legacy one honours verbose=0
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")


def log_to(folder: Path | None) -> None:
    """Write the search's log (``LOG``) to ``folder/mimimi-search.log``: the local Ray session's log folder,
    which the search copies to ``<storage>/<search>/ray-logs/`` when it stops. None: no file."""
    if folder is None:
        return
    handler = logging.FileHandler(folder / LOG_FILE)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    LOG.addHandler(handler)
    LOG.setLevel(logging.INFO)


@contextlib.contextmanager
def off_console(verbose: bool):
    """Inside, what goes to stderr goes to the search's log instead (unless ``verbose``): MLflow's "Successfully
    registered model 'mimimi-valve'." and "Created version '1' of model 'mimimi-valve'." are no logger's
    records but ``print``s to ``sys.stderr`` (``mlflow.utils.logging_utils.eprint``)."""
    if verbose:
        yield
        return
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            yield
    finally:
        for line in captured.getvalue().splitlines():
            if line.strip():
                LOG.info(line)


def progress_bars() -> bool:
    """Progress bars (the feature cache's) only on a terminal: in a log or a pipe they are noise."""
    return sys.stderr.isatty()
