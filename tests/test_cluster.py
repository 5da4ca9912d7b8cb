"""The cluster-launcher configs in ``cluster/``: Ray's own checks pass offline, and the nodes get the versions
that ``pyproject.toml`` pins.

``ray up`` has no dry run. Before its first cloud call it runs ``prepare_config`` (merge with the
provider's defaults, setup-command merge, Docker and min/max-worker checks) and ``validate_config`` (Ray's
JSON schema: unknown keys, head type, max_workers >= sum of min_workers); both are called here exactly as
``ray up`` calls them. What ``ray up`` does next needs the cloud: for AWS, filling node resources from
the instance type (boto3, credentials) and creating the IAM profile, key pair and security group; it is
not run here, which is why every node type gives its ``resources`` explicitly.
"""
from __future__ import annotations

import copy
import re
import shlex
import socket
from pathlib import Path

import jsonschema
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    from pip._vendor import tomli as tomllib

from ray.autoscaler._private.util import prepare_config, validate_config

from mimimi import auth

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "cluster").glob("*.yaml"))
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
PINS = {Requirement(r).name: Requirement(r) for r in PYPROJECT["project"]["dependencies"]}
IMAGE = re.compile(r"rayproject/ray:(?P<ray>\d+\.\d+\.\d+)-py(?P<py>\d)(?P<pyminor>\d+)(?P<platform>-gpu|-cu\d+|-cpu)?$")
SETUP_KEYS = ("initialization_commands", "setup_commands", "head_setup_commands", "worker_setup_commands")


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def ids(paths):
    return [p.name for p in paths]


@pytest.fixture
def offline(monkeypatch):
    """Any attempt to open a network connection or resolve a name fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access during an offline config check: {args!r:.200}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def commands(cfg: dict) -> list[str]:
    """Every shell command of a config: global setup and start lists, and those of each node type."""
    out = [c for key in (*SETUP_KEYS, "head_start_ray_commands", "worker_start_ray_commands") for c in cfg.get(key) or []]
    for node_type in (cfg.get("available_node_types") or {}).values():
        out += [c for key in SETUP_KEYS for c in node_type.get(key) or []]
    return out


def pip_requirements(cmd: str) -> tuple[list[Requirement], list[str]]:
    """(requirements, editable paths) of a ``pip install`` command; ([], []) for anything else."""
    words = shlex.split(cmd)
    if words[:2] != ["pip", "install"] and words[1:3] != ["-m", "pip"]:
        return [], []
    reqs, editable = [], []
    takes_value = {"-e", "--editable", "-r", "--requirement", "-c", "--constraint", "-i", "--index-url",
                   "--extra-index-url", "-f", "--find-links"}
    it = iter(words[words.index("install") + 1:])
    for w in it:
        if w in ("-e", "--editable"):
            editable.append(next(it))
        elif w in takes_value:
            next(it)
        elif not w.startswith("-"):
            reqs.append(Requirement(w))
    return reqs, editable


def test_there_is_a_gpu_and_an_on_premise_config():
    assert {"gpu.yaml", "local.yaml"} <= {p.name for p in CONFIGS}


@pytest.mark.parametrize("path", CONFIGS, ids=ids(CONFIGS))
def test_ray_accepts_the_config_offline(path, offline):
    raw = load(path)
    prepared = prepare_config(copy.deepcopy(raw))  # what `ray up` runs first ...
    validate_config(prepared)                       # ... and then, before any cloud call
    head = prepared["head_node_type"]
    for name, node_type in prepared["available_node_types"].items():
        assert node_type["min_workers"] <= node_type["max_workers"], name
    if raw["provider"]["type"] != "local":  # the local provider makes its own single node type
        assert "GPU" not in prepared["available_node_types"][head]["resources"]
        assert any(t["resources"].get("GPU", 0) > 0 for n, t in prepared["available_node_types"].items() if n != head)


def test_ray_rejects_a_broken_config(offline):
    """The check has teeth: an unknown key and max_workers < sum(min_workers) are refused."""
    raw = load(REPO / "cluster" / "gpu.yaml")
    typo = copy.deepcopy(raw)
    typo["available_node_types"]["ray.worker.gpu"]["min_worker"] = 1
    with pytest.raises(jsonschema.ValidationError, match="min_worker"):
        validate_config(prepare_config(typo))
    too_many = copy.deepcopy(raw)
    too_many["available_node_types"]["ray.worker.gpu"]["min_workers"] = raw["max_workers"] + 1
    with pytest.raises(ValueError, match="max_workers"):
        validate_config(prepare_config(too_many))


@pytest.mark.parametrize("path", CONFIGS, ids=ids(CONFIGS))
def test_the_image_has_the_pinned_ray_and_a_supported_python(path):
    image = load(path)["docker"]["image"]
    m = IMAGE.match(image)
    assert m, f"{image}: not a rayproject/ray:<version>-py<XY>[-gpu|-cuXXX] image (ray-ml is no longer published)"
    assert Version(m["ray"]) in PINS["ray"].specifier, f"{image} vs pyproject's {PINS['ray']}"
    python = Version(f"{m['py']}.{m['pyminor']}")
    assert python in SpecifierSet(PYPROJECT["project"]["requires-python"]), f"{image}: Python {python}"


@pytest.mark.parametrize("path", CONFIGS, ids=ids(CONFIGS))
def test_setup_installs_exactly_the_lock_and_then_the_project(path):
    """Every node gets requirements.lock in pip's hash-checking mode, then the mounted repository without
    dependencies: what CI tested, and nothing that pip would resolve on the day."""
    cfg = load(path)
    mounts = cfg["file_mounts"]
    installs = [shlex.split(c) for c in commands(cfg) if pip_requirements(c) != ([], []) or " -r " in c]
    lock_installs = [w for w in installs if "-r" in w]
    assert lock_installs, f"{path.name}: no `pip install -r <repo>/requirements.lock`"
    for words in lock_installs:
        target = words[words.index("-r") + 1]
        mount, _, rel = target.rpartition("/")
        assert rel == "requirements.lock" and mount in mounts and (REPO / mounts[mount]).resolve() == REPO, \
            f"{path.name}: {target} is not the repository's requirements.lock"
        assert "--require-hashes" in words, f"{path.name}: the lock is installed without --require-hashes"
    # `ray submit` copies only the script: the package reaches every node through file_mounts + pip install -e
    editables = []
    for words in installs:
        reqs, editable = pip_requirements(shlex.join(words))
        editables += editable
        if editable:
            assert "--no-deps" in words, f"{path.name}: `pip install -e` without --no-deps re-resolves the pins"
        for r in reqs:
            assert r.name not in PINS, f"{path.name}: {r} installed beside the lock (the lock pins {r.name})"
    assert editables, f"{path.name}: no `pip install -e` of the mounted repository"
    for e in editables:
        assert e in mounts, f"{path.name}: pip install -e {e} is not a file_mounts target"
        assert (REPO / mounts[e]).resolve() == REPO, f"{path.name}: {e} is not mounted from the repository root"


@pytest.mark.parametrize("path", CONFIGS, ids=ids(CONFIGS))
def test_the_head_serves_mlflow_to_the_cluster_and_train_waits_for_new_nodes(path):
    cfg = load(path)
    (server,) = [shlex.split(c) for c in cfg["head_start_ray_commands"] if "mimimi.auth serve" in c]
    server = server[server.index("--") + 1:]  # mlflow server's own options
    opts = {w: server[i + 1] for i, w in enumerate(server[:-1]) if w.startswith("--")}
    assert opts["--host"] == "0.0.0.0" and opts["--allowed-hosts"]
    assert opts["--backend-store-uri"].startswith(("sqlite:////", "postgresql://"))
    assert opts["--artifacts-destination"]
    if cfg["provider"]["type"] == "aws":
        assert opts["--artifacts-destination"].startswith("s3://")
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        (start,) = [c for c in cfg[key] if re.search(r"\bray start\b", c)]
        m = re.search(r"RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S=(\d+)", start)
        assert m and int(m[1]) > 60, f"{path.name}: {key} keeps Train's 60 s worker-group start timeout"
        assert start.index(m[0]) < start.index("ray start")


@pytest.mark.parametrize("path", CONFIGS, ids=ids(CONFIGS))
def test_security_is_on_by_default(path):
    """Ray requires the token on every node, MLflow runs its basic-auth app with the two users, and the
    secrets come from the user's ~/.mimimi/clusters/<cluster_name> (never the repository, never inline)."""
    cfg = load(path)
    text = path.read_text()
    (mount, source), = [(m, s) for m, s in cfg["file_mounts"].items() if m != "~/mimimi"]
    assert source == f"~/.mimimi/clusters/{cfg['cluster_name']}", f"{path.name}: secrets from {source}"
    assert Path(auth.CLUSTERS / cfg["cluster_name"]).expanduser() == auth.cluster_dir(path)
    assert not re.search(r"\b[0-9a-f]{32,}\b", text), f"{path.name}: something like a secret written inline"
    setup = cfg["setup_commands"]
    (at,) = [i for i, c in enumerate(setup) if "mimimi.auth node" in c]
    assert shlex.split(setup[at]) == ["python", "-m", "mimimi.auth", "node", mount]
    assert at > max(i for i, c in enumerate(setup) if "pip install" in c)  # mimimi is installed by then
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        (start,) = [c for c in cfg[key] if re.search(r"\bray start\b", c)]
        m = re.search(r"export RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH=(\S+);", start)
        assert m and start.index(m[0]) < start.index("ray start"), f"{path.name}: {key} starts Ray without a token"
        assert m[1] == f"$HOME/{mount.removeprefix('~/')}/{auth.RAY_TOKEN}"
    assert "mlflow server" not in " ".join(cfg["head_start_ray_commands"]), f"{path.name}: MLflow without auth"
    (serve,) = [shlex.split(c) for c in cfg["head_start_ray_commands"] if "mimimi.auth serve" in c]
    opts = {w: serve[i + 1] for i, w in enumerate(serve[:serve.index("--")]) if w.startswith("--")}
    assert opts["--secrets"] == mount and not opts["--state"].startswith("/srv"), opts  # admin: head only
    port = serve[serve.index("--port", serve.index("--")) + 1]
    assert opts["--uri"] == f"http://127.0.0.1:{port}"
