"""A real two-node Ray cluster on this machine (slow): the smoke search trains its trials on both nodes and
records everything in an MLflow tracking server over HTTP, both locked as ``cluster/*.yaml`` lock them.

Both Ray nodes, the MLflow server and the search are processes this test starts and stops itself, each
in a process group of its own that it kills by id: never ``ray stop``, which would stop every Ray on the
machine. The cluster requires a token (Ray 2.59+ token authentication), a fresh one passed to every
process as ``RAY_AUTH_TOKEN``, so ``~/.ray/auth_token`` is neither read nor written. The MLflow server is
``python -m mimimi.auth serve`` (MLflow's basic-auth app, users ``mimimi`` and ``mimimi-reader`` from secrets
that ``mimimi.auth.init`` made): the search writes as ``mimimi``, the checks read as ``mimimi-reader``.

Placement: each node has 1 CPU. A trial takes 0.2 CPU for its Tune function and 0.6 for its Train
worker, so whatever node the two trial functions land on, each node still fits one Train worker and
neither fits two: the two trials, running at once (max_concurrent 2), must train on different nodes.
Each Train worker reports its Ray node id, which the search records as the trial's MLflow tag
``mimimi.node_id``; the test compares those with the ids of the nodes it started, found through Ray's
State API by the custom resource each node was given (``head_node``, ``node_b``).
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from mimimi import auth

REPO = Path(__file__).resolve().parents[1]
SEARCH = REPO / "tuning" / "search.py"
BIN = Path(sys.executable).parent  # ray and mlflow of this environment

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

PLACEMENT = """\
# tests/test_multinode.py: with 1 CPU per node, one trial (0.2 + 0.6 CPU) fits a node and two Train
# workers do not, so two concurrent trials train on different nodes.
resources:
  cpus_per_worker: 0.6
  trial_cpus: 0.2
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def wait_for(what: str, check, timeout: float, procs=()) -> object:
    """Poll ``check()`` until it returns something truthy; fail early when one of ``procs`` died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in procs:
            if p.poll() is not None:
                pytest.fail(f"{what}: {p.args[:3]}... exited with {p.returncode}:\n{p.log.read_text()[-3000:]}")
        if value := check():
            return value
        time.sleep(1)
    pytest.fail(f"{what}: not ready after {timeout:.0f} s")


class Processes:
    """Processes started in process groups of their own, stopped by group id (SIGTERM, then SIGKILL)."""

    def __init__(self, logs: Path):
        self.logs = logs
        self.started: list[subprocess.Popen] = []

    def start(self, name: str, cmd: list[str], env: dict) -> subprocess.Popen:
        log = self.logs / f"{name}.log"
        with open(log, "wb") as f:
            p = subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 start_new_session=True)
        p.log = log
        self.started.append(p)
        return p

    def stop_all(self) -> None:
        for p in reversed(self.started):  # node b before the head
            self._signal(p, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for p in reversed(self.started):
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            self._signal(p, signal.SIGKILL)  # the rest of the group (raylet, GCS, workers, uvicorn)
            p.wait()

    @staticmethod
    def _signal(p: subprocess.Popen, sig: int) -> None:
        try:
            os.killpg(p.pid, sig)  # the group's id is the pid of the process we started (new session)
        except ProcessLookupError:
            pass


def http_json(url: str, token: str | None = None):
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def alive_nodes(dashboard: str, token: str) -> dict[str, str]:
    """{custom resource: node id} of the alive nodes, from the State API; {} while it is not up."""
    try:
        data = http_json(f"{dashboard}/api/v0/nodes", token)
    except (urllib.error.URLError, OSError, ValueError):
        return {}
    nodes = data["data"]["result"]["result"]
    return {res: n["node_id"] for n in nodes if n["state"] == "ALIVE"
            for res in ("head_node", "node_b") if res in n["resources_total"]}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A Ray head and a second Ray node on this machine, plus an MLflow server; all stopped afterwards."""
    tmp = tmp_path_factory.mktemp("multinode")
    # Ray's unix sockets live under --temp-dir and their paths must stay under 108 characters
    ray_tmp = Path(tempfile.mkdtemp(prefix="mmn-", dir="/tmp"))
    procs = Processes(tmp)
    try:
        token = secrets.token_hex(32)
        env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH")}
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token, RAY_USAGE_STATS_ENABLED="0",
                   # a busy 2-core machine can take longer than Train's default 60 s to start a worker
                   RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S="300")
        gcs, dash, mlflow_port = free_port(), free_port(), free_port()
        common = ["--block", "--num-cpus", "1", "--num-gpus", "0", "--object-store-memory", str(128 * 2**20),
                  "--disable-usage-stats"]
        head = procs.start("head", [str(BIN / "ray"), "start", "--head", "--port", str(gcs), *common,
                                    "--resources", '{"head_node": 1}', "--temp-dir", str(ray_tmp / "head"),
                                    "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash),
                                    "--ray-client-server-port", str(free_port()),
                                    "--dashboard-agent-listen-port", str(free_port())], env)
        secrets_dir = tmp / "secrets"
        auth.init(secrets_dir)
        passwords = {user: (secrets_dir / f).read_text() for user, f in auth.PASSWORD_FILES.items()}
        mlflow = procs.start("mlflow", [sys.executable, "-m", "mimimi.auth", "serve", "--secrets", str(secrets_dir),
                                        "--state", str(tmp / "mlflow-auth"), "--uri", f"http://127.0.0.1:{mlflow_port}",
                                        "--", "--host", "127.0.0.1", "--port", str(mlflow_port),
                                        "--workers", "1", "--backend-store-uri", f"sqlite:///{tmp / 'mlflow.db'}",
                                        "--artifacts-destination", str(tmp / "artifacts")],
                             # no job runner (GenAI jobs): it would leave its queue folder in /dev/shm
                             {**env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})

        def gcs_up():
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", gcs)) == 0

        wait_for("ray head", gcs_up, 120, [head])
        node_b = procs.start("node_b", [str(BIN / "ray"), "start", "--address", f"127.0.0.1:{gcs}", *common,
                                        "--resources", '{"node_b": 1}', "--temp-dir", str(ray_tmp / "node_b"),
                                        "--dashboard-agent-listen-port", str(free_port())], env)
        dashboard = f"http://127.0.0.1:{dash}"
        nodes = wait_for("two alive Ray nodes", lambda: (n := alive_nodes(dashboard, token)) and len(n) == 2 and n,
                         180, [head, node_b])

        wait_for("mlflow server and its users", lambda: "users mimimi, mimimi-reader ready" in mlflow.log.read_text(),
                 240, [mlflow])
        yield dict(tmp=tmp, env=env, address=f"127.0.0.1:{gcs}", dashboard=dashboard, token=token, nodes=nodes,
                   tracking_uri=f"http://127.0.0.1:{mlflow_port}", passwords=passwords)
    finally:
        procs.stop_all()
        shutil.rmtree(ray_tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def search(cluster):
    """The smoke search, driven from this machine against the two-node cluster."""
    tmp = cluster["tmp"]
    (tmp / "placement.yaml").write_text(PLACEMENT)
    (tmp / "cwd").mkdir()
    cmd = [sys.executable, str(SEARCH), "--smoke-test", "--name", "multinode", "--address", cluster["address"],
           "--tracking-uri", cluster["tracking_uri"], "--storage-path", str(tmp / "storage"),
           "--search-config", str(tmp / "placement.yaml")]
    env = {**cluster["env"], "MLFLOW_TRACKING_USERNAME": auth.WRITER,  # on a node: ~/.mlflow/credentials
           "MLFLOW_TRACKING_PASSWORD": cluster["passwords"][auth.WRITER]}
    t0 = time.monotonic()
    r = subprocess.run(cmd, cwd=tmp / "cwd", env=env, capture_output=True, text=True, timeout=420,
                       start_new_session=True)
    assert r.returncode == 0, f"{cmd}\n{r.stdout[-3000:]}\n{r.stderr[-6000:]}"
    print(f"smoke search on 2 nodes: {time.monotonic() - t0:.0f} s")
    return r


def runs_by_role(client, role):
    exp = client.get_experiment_by_name("mimimi")
    return client.search_runs([exp.experiment_id], filter_string=f"tags.`mimimi.role` = '{role}'")


def test_the_cluster_requires_its_token(cluster):
    with pytest.raises(urllib.error.HTTPError) as e:
        http_json(f"{cluster['dashboard']}/api/v0/nodes")
    assert e.value.code == 401
    assert alive_nodes(cluster["dashboard"], cluster["token"]) == cluster["nodes"]


@pytest.fixture
def reader(cluster, monkeypatch):
    """An MLflow client logged in as the read-only user."""
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", auth.READER)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", cluster["passwords"][auth.READER])
    return MlflowClient(tracking_uri=cluster["tracking_uri"])


def test_the_tracking_server_requires_a_user_and_the_reader_writes_nothing(cluster, search, reader):
    runs = f"{cluster['tracking_uri']}/api/2.0/mlflow/experiments/search?max_results=5"
    with pytest.raises(urllib.error.HTTPError) as e:
        http_json(runs)
    assert e.value.code == 401
    (parent,) = runs_by_role(reader, "type-search")
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException, match="403"):
        reader.set_registered_model_alias("mimimi-valve", "champion", "1")
    with pytest.raises(MlflowException, match="403"):
        reader.log_metric(parent.info.run_id, "test/valve/mean_auc", 100.0)


def test_trials_train_on_both_nodes(cluster, search, reader):
    trials = runs_by_role(reader, "trial")
    assert len(trials) == 2
    where = {t.data.tags["mimimi.trial_id"]: t.data.tags.get("mimimi.node_id") for t in trials}
    assert set(where.values()) == set(cluster["nodes"].values()), (where, cluster["nodes"])


def test_every_run_is_in_the_tracking_server(cluster, search, reader):
    c = reader
    (run,) = runs_by_role(c, "search")
    (parent,) = runs_by_role(c, "type-search")
    trials = runs_by_role(c, "trial")
    assert run.info.status == parent.info.status == "FINISHED"
    assert parent.data.tags["mlflow.parentRunId"] == run.info.run_id
    assert len(trials) == 2
    assert all(t.data.tags["mlflow.parentRunId"] == parent.info.run_id and t.info.status == "FINISHED" for t in trials)
    assert {"test/valve/mean_auc", "test/valve/mean_pauc"} <= set(parent.data.metrics)
    (version,) = c.search_model_versions("name='mimimi-valve'")
    assert version.run_id == parent.info.run_id
    # artifacts went through the server into its --artifacts-destination
    assert "evaluation/results.md" in {a.path for a in c.list_artifacts(parent.info.run_id, "evaluation")}
    assert list((cluster["tmp"] / "artifacts").rglob("results.md"))
    # and the trials' checkpoints into the shared storage path, from both nodes' workers
    assert len({p.parent.parent for p in (cluster["tmp"] / "storage" / "multinode").rglob("checkpoint.pt")}) >= 2
