"""Screenshots of the MLflow UI pages a search writes, taken with headless Chromium (`make screenshots`).

    python docs/screenshots.py                                   # a smoke search into a temporary store first
    python docs/screenshots.py --tracking-uri sqlite:///$PWD/mlruns/mlflow.db   # the newest search of a store

Starts ``mlflow server`` on 127.0.0.1 for the store and writes, into ``docs/screenshots/``:

* ``type-run.png``: a machine type's parent run (its description in words, the search metric first, the
  chosen values as params, the registered model);
* ``trial-charts.png``: a trial's metric charts, the ``search`` section first;
* ``compare.png``: the trials compared (the parallel-coordinates plot opens on the first metric: the search's);
* ``version.png``: the registered version (description, tags, the ``champion`` alias).

Needs Chromium: on Debian ``apt-get install chromium``, elsewhere ``--chromium PATH``. The smoke search takes
about two minutes on two cores.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from mimimi.tracking import Tracker

REPO = Path(__file__).resolve().parents[1]

OUT = REPO / "docs" / "screenshots"
BROWSERS = ("chromium", "chromium-browser", "google-chrome")
UI = "workflowType=machine_learning"  # MLflow 3 opens an experiment on its GenAI pages otherwise


class ScreenshotError(RuntimeError):
    """Why no screenshots could be taken (one line)."""


def find_browser(given: str | None) -> str:
    for name in ([given] if given else BROWSERS):
        if path := shutil.which(name):
            return path
    raise ScreenshotError(f"no Chromium found ({given or ', '.join(BROWSERS)}): on Debian `apt-get install "
                          "chromium`, or give --chromium PATH")


def smoke_store(tmp: Path) -> str:
    """A smoke search (2 trials of 2 epochs on a tiny synthetic valve set) into a store under ``tmp``."""
    uri = f"sqlite:///{tmp / 'mlruns' / 'mlflow.db'}"
    cmd = [sys.executable, str(REPO / "tuning" / "search.py"), "--smoke-test", "--name", "screenshots",
           "--storage-path", str(tmp / "storage"), "--tracking-uri", uri, "--num-cpus", "2"]
    print("running a smoke search for the pages to show (about two minutes) …", flush=True)
    r = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True)
    if r.returncode != 0:
        raise ScreenshotError(f"the smoke search failed ({r.returncode}): {(r.stderr or r.stdout).strip()[-500:]}")
    return uri


def pages(tracker: Tracker, experiment: str) -> dict[str, str]:
    """file name -> URL fragment of each page, from the newest search in the store."""
    c = tracker.client
    exp = c.get_experiment_by_name(experiment)
    if exp is None:
        raise ScreenshotError(f"no experiment {experiment!r} in {tracker.uri}: run a search first")

    def by_role(role: str, parent: str | None = None):
        where = f"tags.`mimimi.role` = '{role}'" + (f" and tags.`mlflow.parentRunId` = '{parent}'" if parent else "")
        return c.search_runs([exp.experiment_id], where, order_by=["attributes.start_time DESC"])

    types = [r for r in by_role("type-search") if r.info.status == "FINISHED"]
    if not types:
        raise ScreenshotError(f"no finished search in experiment {experiment!r} of {tracker.uri}")
    parent = types[0]
    trials = by_role("trial", parent.info.run_id)
    mtype, version = parent.data.tags["mimimi.machine_type"], parent.data.tags.get("mimimi.registered_version")
    eid = exp.experiment_id
    out = {"type-run.png": f"#/experiments/{eid}/runs/{parent.info.run_id}?{UI}"}
    if trials:
        out["trial-charts.png"] = f"#/experiments/{eid}/runs/{trials[-1].info.run_id}/model-metrics?{UI}"
        runs = urllib.parse.quote(json.dumps([t.info.run_id for t in trials]))
        out["compare.png"] = f"#/compare-runs?runs={runs}&experiments={urllib.parse.quote(json.dumps([eid]))}&{UI}"
    if version:
        out["version.png"] = f"#/models/mimimi-{mtype}/versions/{version}?{UI}"
    return out


SIZES = {"type-run.png": (1500, 2400), "trial-charts.png": (1500, 1300), "compare.png": (1500, 1100),
         "version.png": (1500, 1000)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(uri: str, log: Path) -> tuple[subprocess.Popen, str]:
    """``mlflow server`` for ``uri`` on a free loopback port, once ``/health`` answers."""
    port = free_port()
    env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    with open(log, "w") as f:
        proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host",
                                 "127.0.0.1", "--port", str(port), "--workers", "1"], cwd=log.parent, env=env,
                                stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ScreenshotError(f"mlflow server exited with {proc.returncode}: see {log}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                return proc, url
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(1)
    proc.kill()
    raise ScreenshotError(f"mlflow server did not answer {url}/health within 120 s: see {log}")


def shoot(browser: str, url: str, dst: Path, size: tuple[int, int]) -> None:
    """One page, headless, once the UI has fetched and drawn it (Chromium's virtual time runs the page's
    timers and requests to completion before the picture is taken)."""
    cmd = [browser, "--headless=new", "--disable-gpu", "--hide-scrollbars", f"--window-size={size[0]},{size[1]}",
           "--run-all-compositor-stages-before-draw", "--virtual-time-budget=60000", f"--screenshot={dst}", url]
    if os.geteuid() == 0:
        cmd.insert(1, "--no-sandbox")  # Chromium refuses to run its sandbox as root (containers, CI)
    dst.unlink(missing_ok=True)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    if r.returncode != 0 or not dst.is_file():
        raise ScreenshotError(f"{browser} took no screenshot of {url} ({r.returncode}): {r.stderr.strip()[-300:]}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tracking-uri", default=None, help="a store holding a search (default: run a smoke search)")
    ap.add_argument("--experiment", default="mimimi")
    ap.add_argument("--out", default=str(OUT), help="folder for the PNGs (default: docs/screenshots)")
    ap.add_argument("--chromium", default=None, help="the browser to run headless (default: chromium on PATH)")
    args = ap.parse_args(argv)
    try:
        browser = find_browser(args.chromium)
        with tempfile.TemporaryDirectory(prefix="mimimi-screenshots-") as d:
            tmp = Path(d)
            uri = args.tracking_uri or smoke_store(tmp)
            todo = pages(Tracker(uri), args.experiment)
            proc, url = serve(Tracker(uri).uri, tmp / "server.log")
            try:
                out = Path(args.out)
                out.mkdir(parents=True, exist_ok=True)
                for name, fragment in todo.items():
                    shoot(browser, f"{url}/{fragment}", out / name, SIZES[name])
                    print(f"{out / name}")
            finally:
                os.killpg(proc.pid, signal.SIGTERM)  # the server and the workers it started
                proc.wait(timeout=30)
    except ScreenshotError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
