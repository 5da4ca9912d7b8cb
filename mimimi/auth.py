"""A cluster's secrets: the Ray token and the MLflow users, made on your machine, never in the repository.

The cluster configs (``cluster/gpu.yaml``, ``cluster/local.yaml``) lock two doors with them (cluster/README.md,
"Security"):

* **Ray** requires a token (Ray 2.59+ token authentication) from every node, driver and dashboard client;
* the head's **MLflow server** runs MLflow's basic-auth app: no request without a user and password; the
  search writes as ``mimimi`` (read-write), people browse as ``mimimi-reader`` (read-only), and only the
  head holds the administrator ``mimimi-admin``, which creates the two users.

Four commands, one per place::

    python -m mimimi.auth init cluster/gpu.yaml           # your machine, before the first `ray up`
    python -m mimimi.auth env cluster/gpu.yaml [--user mimimi]   # your machine: shell exports for MLflow
    python -m mimimi.auth node ~/mimimi-secrets            # every node (setup_commands)
    python -m mimimi.auth serve --secrets ~/mimimi-secrets --state ~/mlflow/auth -- <mlflow server options>

``init`` writes ``~/.mimimi/clusters/<cluster_name>/`` (mode 700; each file 600; an existing file is kept, so
deleting one and running ``init`` again rotates it): ``ray_auth_token`` and the passwords of ``mimimi`` and
``mimimi-reader``. ``ray up`` copies that folder to ``~/mimimi-secrets`` on every node (``file_mounts``).
``node`` writes the node's ``~/.mlflow/credentials`` (the ``mimimi`` user: MLflow's client reads it, so the
search authenticates with no option) and the lines of ``~/.bashrc`` that turn Ray's token mode on for every
command the launcher runs there (``ray start``, ``ray submit``, ``ray exec``). ``serve`` runs on the head:
it makes the administrator's password and the server's session key on first start, beside the auth
database (they must outlive restarts with it), starts ``mlflow server --app-name basic-auth``, creates or
updates the two users and their roles, and then waits on the server; if the users cannot be set up it stops
the server (fail closed). No secret is ever passed on a command line or printed: commands read files.

>>> "--app-name" in server_command(["--port", "5000"]), USERS
(True, {'mimimi': 'EDIT', 'mimimi-reader': 'READ'})
"""
from __future__ import annotations

import argparse
import os
import secrets
import signal
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

CLUSTERS = Path("~/.mimimi/clusters")  # your machine: one folder of secrets per cluster_name
RAY_TOKEN = "ray_auth_token"
ADMIN = "mimimi-admin"  # exists on the head only
WRITER, READER = "mimimi", "mimimi-reader"
USERS = {WRITER: "EDIT", READER: "READ"}  # user -> MLflow permission on every experiment and registered model
PASSWORD_FILES = {WRITER: "mlflow_password", READER: "mlflow_reader_password"}
ADMIN_PASSWORD, SESSION_KEY = "mlflow_admin_password", "mlflow_session_key"  # the head's, under --state
BASHRC_MARK = "# mimimi.auth: Ray token authentication"
WORKSPACE = "default"  # MLflow's workspace for role grants when workspaces are off (as here)


class AuthError(RuntimeError):
    """A secret or a server that cannot be set up, with the file or address in the one-line message."""


# ------------------------------------------------------------------------------------------- secret files
def cluster_dir(cluster_yaml: str | Path) -> Path:
    """``~/.mimimi/clusters/<cluster_name>``: the secrets of the cluster that ``cluster_yaml`` launches."""
    path = Path(cluster_yaml)
    try:
        name = yaml.safe_load(path.read_text())["cluster_name"]
    except (OSError, yaml.YAMLError, TypeError, KeyError) as e:
        raise AuthError(f"{path}: not a Ray cluster config with a cluster_name ({type(e).__name__}: {e})") from None
    return CLUSTERS.expanduser() / str(name)


def make_secret(path: Path) -> bool:
    """Write 32 random bytes (hex) to ``path`` with mode 600 unless it exists; True when written."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # never readable by others, not even briefly
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))
    return True


def read_secret(path: Path) -> str:
    """The secret in ``path``; an error when it is missing, empty, or readable by other users."""
    try:
        mode = path.stat().st_mode
        value = path.read_text().strip()
    except OSError as e:
        raise AuthError(f"{path}: cannot read the secret ({e.strerror}); make it with python -m mimimi.auth init") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise AuthError(f"{path}: readable by other users (mode {stat.S_IMODE(mode):o}); chmod 600 it")
    if not value:
        raise AuthError(f"{path}: empty secret")
    return value


def init(folder: Path) -> list[Path]:
    """Make the secrets a cluster's nodes get (the Ray token, both MLflow users' passwords); keep existing ones."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    folder.chmod(0o700)
    made = []
    for name in (RAY_TOKEN, *PASSWORD_FILES.values()):
        if make_secret(folder / name):
            made.append(folder / name)
        read_secret(folder / name)  # an old file with loose permissions is an error now, not on the head
    return made


def env_lines(folder: Path, user: str = READER) -> list[str]:
    """Shell lines that make MLflow clients authenticate as ``user``, reading the password from its file."""
    if user not in PASSWORD_FILES:
        raise AuthError(f"unknown user {user!r}; choose from {', '.join(PASSWORD_FILES)}")
    read_secret(folder / PASSWORD_FILES[user])
    return [f"export MLFLOW_TRACKING_USERNAME={user}",
            f'export MLFLOW_TRACKING_PASSWORD="$(cat {folder / PASSWORD_FILES[user]})"']


# ------------------------------------------------------------------------------------------------ a node
def setup_node(secrets_dir: Path, home: Path | None = None) -> list[Path]:
    """On a node: ``~/.mlflow/credentials`` for the read-write user and Ray's token mode in ``~/.bashrc``.

    The launcher copies the secrets with whatever mode the copy gives them; they are made private here.
    Running it again rewrites the credentials and leaves one copy of the ``~/.bashrc`` lines.
    """
    home = Path(home or Path.home())
    secrets_dir.chmod(0o700)
    for p in secrets_dir.iterdir():
        p.chmod(0o600)
    token = secrets_dir / RAY_TOKEN
    read_secret(token)
    password = read_secret(secrets_dir / PASSWORD_FILES[WRITER])
    creds = home / ".mlflow" / "credentials"  # MLflow's client reads it (mlflow.utils.credentials)
    creds.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(creds, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"[mlflow]\nmlflow_tracking_username = {WRITER}\nmlflow_tracking_password = {password}\n")
    creds.chmod(0o600)
    bashrc = home / ".bashrc"
    lines = bashrc.read_text().splitlines() if bashrc.exists() else []
    kept, skip = [], False
    for line in lines:  # drop an earlier copy of the block
        if line == BASHRC_MARK:
            skip = True
            continue
        if skip and line.startswith("export RAY_AUTH_"):
            continue
        skip = False
        kept.append(line)
    kept += [BASHRC_MARK, f"export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH={token.resolve()}"]
    bashrc.write_text("\n".join(kept) + "\n")
    return [creds, bashrc]


# -------------------------------------------------------------------------------------- the MLflow server
def server_command(mlflow_args: list[str]) -> list[str]:
    """``mlflow server`` with the basic-auth app; ``mlflow_args``: its other options (host, port, stores)."""
    return [str(Path(sys.executable).parent / "mlflow"), "server", "--app-name", "basic-auth", *mlflow_args]


def server_env(state: Path) -> dict[str, str]:
    """The auth app's environment: its config file, the administrator, the session key (made on first use)."""
    state.mkdir(parents=True, exist_ok=True, mode=0o700)
    state.chmod(0o700)
    for name in (ADMIN_PASSWORD, SESSION_KEY):
        make_secret(state / name)
    ini = state / "basic_auth.ini"
    ini.write_text("[mlflow]\n"
                   "# who has no grant sees nothing; grants come from the roles python -m mimimi.auth serve makes\n"
                   "default_permission = NO_PERMISSIONS\n"
                   f"database_uri = sqlite:///{(state / 'basic_auth.db').resolve()}\n"
                   f"admin_username = {ADMIN}\n"
                   "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    return {"MLFLOW_AUTH_CONFIG_PATH": str(ini), "MLFLOW_AUTH_ADMIN_USERNAME": ADMIN,
            "MLFLOW_AUTH_ADMIN_PASSWORD": read_secret(state / ADMIN_PASSWORD),
            "MLFLOW_FLASK_SERVER_SECRET_KEY": read_secret(state / SESSION_KEY)}


def wait_healthy(uri: str, server: subprocess.Popen, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AuthError(f"mlflow server exited with status {server.returncode} before {uri} answered")
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=5) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(1)
    raise AuthError(f"{uri}: no answer from /health after {timeout:.0f} s")


def provision(uri: str, admin_password: str, passwords: dict[str, str]) -> None:
    """Create or update each user with its password, and give it a role that grants ``USERS[user]`` on every
    experiment and registered model (MLflow's role-based grants); as the administrator."""
    from mlflow.exceptions import MlflowException
    from mlflow.server.auth.client import AuthServiceClient

    os.environ.update(MLFLOW_TRACKING_USERNAME=ADMIN, MLFLOW_TRACKING_PASSWORD=admin_password)  # this process only
    client = AuthServiceClient(uri)
    try:
        roles = {r.name: r for r in client.list_roles(WORKSPACE)}
        for user, permission in USERS.items():
            try:
                client.get_user(user)
                client.update_user_password(user, passwords[user])  # a rotated secret takes effect
            except MlflowException as e:
                if e.error_code != "RESOURCE_DOES_NOT_EXIST":
                    raise
                client.create_user(user, passwords[user])
            name = f"{user}-{permission.lower()}"
            role = roles.get(name) or client.create_role(WORKSPACE, name, f"{permission} on every experiment and model")
            have = {(p.resource_type, p.resource_pattern) for p in client.list_role_permissions(role.id)}
            for kind in ("experiment", "registered_model"):
                if (kind, "*") not in have:
                    client.add_role_permission(role.id, kind, "*", permission)
            if role.id not in {r.id for r in client.list_user_roles(user)}:
                client.assign_role(user, role.id)
    except MlflowException as e:
        raise AuthError(f"{uri}: cannot set up the MLflow users ({str(e).splitlines()[0]})") from None


def serve(secrets_dir: Path, state: Path, mlflow_args: list[str], uri: str) -> int:
    """Run the authenticated MLflow server until it exits; its users are set up once it answers."""
    passwords = {user: read_secret(secrets_dir / f) for user, f in PASSWORD_FILES.items()}
    env = {**os.environ, **server_env(state)}
    server = subprocess.Popen(server_command(mlflow_args), env=env)
    forward = lambda signum, frame: server.send_signal(signum)  # noqa: E731 - stop the server with us
    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    try:
        wait_healthy(uri, server)
        provision(uri, env["MLFLOW_AUTH_ADMIN_PASSWORD"], passwords)
    except AuthError as e:
        server.terminate()
        server.wait()
        raise e
    print(f"mlflow server at {uri}: basic auth on, users {', '.join(USERS)} ready", flush=True)
    return server.wait()


# ----------------------------------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mimimi.auth", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("init", help="your machine: make a cluster's Ray token and MLflow passwords")
    p.add_argument("cluster", help="the cluster config (cluster/gpu.yaml): its cluster_name names the folder")
    p.add_argument("--dir", type=Path, help="the folder instead of ~/.mimimi/clusters/<cluster_name>")
    p = sub.add_parser("env", help="your machine: shell exports that make MLflow clients log in (eval them)")
    p.add_argument("cluster")
    p.add_argument("--dir", type=Path)
    p.add_argument("--user", default=READER, choices=list(PASSWORD_FILES))
    p = sub.add_parser("node", help="a node: ~/.mlflow/credentials and Ray's token mode in ~/.bashrc")
    p.add_argument("secrets", type=Path, help="the folder ray up copied the secrets to (~/mimimi-secrets)")
    p = sub.add_parser("serve", help="the head: mlflow server with basic auth and the two users")
    p.add_argument("--secrets", type=Path, required=True, help="the users' passwords (~/mimimi-secrets)")
    p.add_argument("--state", type=Path, required=True, help="the auth database, administrator and session key")
    p.add_argument("--uri", default="http://127.0.0.1:5000", help="where this server answers, for the set-up")
    p.add_argument("mlflow_args", nargs=argparse.REMAINDER, help="-- then mlflow server's options")
    args = ap.parse_args(argv)
    try:
        if args.command == "init":
            folder = (args.dir or cluster_dir(args.cluster)).expanduser()
            made = init(folder)
            print(f"{folder}: " + (f"made {', '.join(p.name for p in made)}" if made else "every secret was there"))
            print("ray up copies it to ~/mimimi-secrets on every node; keep it out of the repository")
        elif args.command == "env":
            print("\n".join(env_lines((args.dir or cluster_dir(args.cluster)).expanduser(), args.user)))
        elif args.command == "node":
            for path in setup_node(args.secrets.expanduser()):
                print(f"wrote {path}")
        else:
            rest = args.mlflow_args[1:] if args.mlflow_args[:1] == ["--"] else args.mlflow_args
            return serve(args.secrets.expanduser(), args.state.expanduser(), rest, args.uri.rstrip("/"))
    except AuthError as e:
        print(f"mimimi.auth: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
