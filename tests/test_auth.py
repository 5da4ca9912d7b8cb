"""``mimimi.auth``: the cluster's secrets stay private, a node's MLflow client and Ray commands pick them up,
and the authenticated MLflow server on loopback refuses requests without credentials and writes from the
read-only user."""
from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from base64 import b64encode
from pathlib import Path

import pytest

from mimimi import auth

REPO = Path(__file__).resolve().parents[1]


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_init_makes_private_secrets_and_keeps_existing_ones(tmp_path):
    folder = tmp_path / "clusters" / "c"
    made = auth.init(folder)
    assert sorted(p.name for p in made) == sorted([auth.RAY_TOKEN, *auth.PASSWORD_FILES.values()])
    assert mode(folder) == 0o700 and all(mode(p) == 0o600 for p in made)
    values = {p.name: p.read_text() for p in made}
    assert all(len(v) == 64 and int(v, 16) >= 0 for v in values.values())  # 32 random bytes, hex
    assert len(set(values.values())) == len(values)
    (folder / auth.RAY_TOKEN).unlink()  # rotate one: only it changes
    assert [p.name for p in auth.init(folder)] == [auth.RAY_TOKEN]
    again = {p.name: p.read_text() for p in folder.iterdir()}
    assert again[auth.RAY_TOKEN] != values[auth.RAY_TOKEN]
    assert all(again[k] == v for k, v in values.items() if k != auth.RAY_TOKEN)


def test_a_secret_others_can_read_is_refused(tmp_path):
    auth.init(tmp_path)
    (tmp_path / auth.RAY_TOKEN).chmod(0o644)
    with pytest.raises(auth.AuthError, match=r"ray_auth_token: readable by other users \(mode 644\); chmod 600"):
        auth.init(tmp_path)
    with pytest.raises(auth.AuthError, match="mlflow_reader_password: cannot read the secret"):
        auth.read_secret(tmp_path / "nothing" / "mlflow_reader_password")


def test_cluster_dir_is_named_after_the_cluster(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert auth.cluster_dir(REPO / "cluster" / "gpu.yaml") == tmp_path / ".mimimi" / "clusters" / "mimimi-gpu"
    (tmp_path / "bad.yaml").write_text("provider: {}\n")
    with pytest.raises(auth.AuthError, match="bad.yaml: not a Ray cluster config with a cluster_name"):
        auth.cluster_dir(tmp_path / "bad.yaml")


def test_env_lines_read_the_password_from_its_file(tmp_path):
    auth.init(tmp_path)
    lines = auth.env_lines(tmp_path)
    assert lines[0] == "export MLFLOW_TRACKING_USERNAME=mimimi-reader"
    secret = (tmp_path / "mlflow_reader_password").read_text()
    assert secret not in "\n".join(lines)  # never printed
    out = subprocess.run(["bash", "-c", "\n".join(lines) + '\necho "$MLFLOW_TRACKING_PASSWORD"'],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == secret


def test_a_node_authenticates_mlflow_and_ray_without_options(tmp_path, monkeypatch):
    secrets_dir, home = tmp_path / "mimimi-secrets", tmp_path / "home"
    home.mkdir()
    (home / ".bashrc").write_text("alias ll='ls -l'\n")
    auth.init(secrets_dir)
    for p in secrets_dir.iterdir():
        p.chmod(0o644)  # as a copy may leave them
    auth.setup_node(secrets_dir, home)
    auth.setup_node(secrets_dir, home)  # twice: one copy of the lines
    assert mode(home / ".mlflow" / "credentials") == 0o600 and mode(secrets_dir / auth.RAY_TOKEN) == 0o600
    bashrc = (home / ".bashrc").read_text()
    assert bashrc.count(auth.BASHRC_MARK) == 1 and bashrc.startswith("alias ll=")
    # MLflow's own reader finds the read-write user in ~/.mlflow/credentials
    from mlflow.utils.credentials import read_mlflow_creds

    monkeypatch.setenv("HOME", str(home))
    for var in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(var, raising=False)
    creds = read_mlflow_creds()
    assert (creds.username, creds.password) == ("mimimi", (secrets_dir / "mlflow_password").read_text())
    # what the Ray launcher runs on a node: bash sources ~/.bashrc first
    env = {"HOME": str(home), "PATH": os.environ["PATH"]}
    out = subprocess.run(["bash", "-c", 'source ~/.bashrc; echo "$RAY_AUTH_MODE $RAY_AUTH_TOKEN_PATH"'], env=env,
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == ["token", str((secrets_dir / auth.RAY_TOKEN).resolve())]


# --------------------------------------------------------------------------- the server, on loopback
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(url: str, user: str | None = None, password: str | None = None, data: bytes | None = None) -> int:
    headers = {"Content-Type": "application/json"}
    if user:
        headers["Authorization"] = "Basic " + b64encode(f"{user}:{password}".encode()).decode()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers), timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def start_server(tmp: Path, secrets_dir: Path, port: int) -> subprocess.Popen:
    log = open(tmp / f"serve-{port}.log", "wb")
    cmd = [sys.executable, "-m", "mimimi.auth", "serve", "--secrets", str(secrets_dir), "--state", str(tmp / "state"),
           "--uri", f"http://127.0.0.1:{port}", "--", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
           "--backend-store-uri", f"sqlite:///{tmp / 'mlflow.db'}", "--artifacts-destination", str(tmp / "artifacts")]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    for var in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        env.pop(var, None)
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=tmp)


def wait_ready(p: subprocess.Popen, log: Path, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert p.poll() is None, log.read_text()[-3000:]
        if "users mimimi, mimimi-reader ready" in log.read_text():
            return
        time.sleep(1)
    pytest.fail(f"server not ready: {log.read_text()[-3000:]}")


def stop(p: subprocess.Popen) -> None:
    os.killpg(p.pid, 15)
    try:
        p.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, 9)
        p.wait()


@pytest.mark.integration
@pytest.mark.timeout(600)
def test_the_server_refuses_strangers_and_the_reader_writes_nothing(tmp_path, monkeypatch):
    secrets_dir = tmp_path / "secrets"
    auth.init(secrets_dir)
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server = start_server(tmp_path, secrets_dir, port)
    try:
        wait_ready(server, tmp_path / f"serve-{port}.log")
        assert mode(tmp_path / "state" / auth.ADMIN_PASSWORD) == 0o600
        search = f"{uri}/api/2.0/mlflow/experiments/search?max_results=5"
        pw = {u: (secrets_dir / f).read_text() for u, f in auth.PASSWORD_FILES.items()}
        assert request(search) == 401  # no credentials
        assert request(search, "mimimi", "not-the-password") == 401
        assert request(search, "mimimi-reader", pw["mimimi-reader"]) == 200

        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "mimimi")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", pw["mimimi"])
        writer = MlflowClient(uri)
        exp = writer.create_experiment("mimimi")
        run = writer.create_run(exp).info.run_id
        writer.log_metric(run, "auc", 90.0)
        writer.create_registered_model("mimimi-fan")
        version = writer.create_model_version("mimimi-fan", f"runs:/{run}/model", run_id=run).version
        writer.set_registered_model_alias("mimimi-fan", "champion", version)

        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "mimimi-reader")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", pw["mimimi-reader"])
        reader = MlflowClient(uri)
        assert reader.get_run(run).data.metrics == {"auc": 90.0}
        assert reader.get_model_version_by_alias("mimimi-fan", "champion").version == version
        for write in (lambda: reader.log_metric(run, "auc", 99.0),
                      lambda: reader.set_registered_model_alias("mimimi-fan", "champion", version),
                      lambda: reader.create_model_version("mimimi-fan", f"runs:/{run}/model"),
                      lambda: reader.create_run(exp)):
            with pytest.raises(MlflowException, match="403"):
                write()
        created = f"{uri}/api/2.0/mlflow/users/create"
        assert request(created, "mimimi-reader", pw["mimimi-reader"], b'{"username": "x", "password": "y"}') == 403
    finally:
        stop(server)

    # a restart keeps the users and takes a rotated password
    (secrets_dir / "mlflow_reader_password").unlink()
    auth.init(secrets_dir)
    server = start_server(tmp_path, secrets_dir, port)
    try:
        wait_ready(server, tmp_path / f"serve-{port}.log")
        new = (secrets_dir / "mlflow_reader_password").read_text()
        assert request(search, "mimimi-reader", new) == 200
        assert request(search, "mimimi-reader", pw["mimimi-reader"]) == 401
    finally:
        stop(server)
