"""``requirements.lock`` and ``pyproject.toml`` agree, and the virtual environment is exactly the lock.

The lock (``make lock``) is what ``make demo``, ``make test``, ``.ci/run`` and the cluster nodes install.
It goes stale silently when someone edits ``pyproject.toml`` and forgets ``make lock``; these checks make
that a test failure instead of a broken install for the next user.
"""
from __future__ import annotations

import re
import sysconfig
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    from pip._vendor import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "requirements.lock"
PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^\s;\\]+)")
# the environment the lock is compiled for (Makefile: LOCK_TARGET)
LOCK_ENV = {**default_environment(), "python_version": "3.11", "python_full_version": "3.11.0",
            "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64",
            "implementation_name": "cpython", "platform_python_implementation": "CPython", "os_name": "posix"}


def parse_lock(text: str) -> dict[str, dict]:
    """{canonical name: {"version", "hashes"}} of a ``uv pip compile --generate-hashes`` file.

    >>> parse_lock("torch==2.14.1 \\\\\\n    --hash=sha256:ab\\n    # via mimimi\\n")
    {'torch': {'version': '2.14.1', 'hashes': ['sha256:ab']}}
    """
    out: dict[str, dict] = {}
    current = None
    for line in text.splitlines():
        if m := PIN.match(line):
            current = out.setdefault(canonicalize_name(m["name"]), {"version": m["version"], "hashes": []})
        elif current is not None and (h := re.search(r"--hash=(\S+)", line)):
            current["hashes"].append(h[1])
        elif line and not line[0].isspace() and not line.startswith("#"):
            raise ValueError(f"{LOCK.name}: not a pinned requirement: {line!r}")
    return out


def project_requirements(pyproject: dict) -> list[Requirement]:
    project = pyproject["project"]
    return [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["test"]]


def closure(roots: list[Requirement], requires_of) -> dict[str, set[str]]:
    """{package: extras asked for} of everything ``roots`` need, transitively, on ``LOCK_ENV``.

    ``requires_of(name)`` returns the package's Requires-Dist strings.

    >>> deps = {"a": ["b[x]"], "b": ["c; extra == 'x'", "d; sys_platform == 'win32'"], "c": [], "d": []}
    >>> sorted(closure([Requirement("a")], deps.__getitem__))
    ['a', 'b', 'c']
    """
    seen: dict[str, set[str]] = {}
    todo = [(canonicalize_name(r.name), set(r.extras)) for r in roots if r.marker is None or r.marker.evaluate(LOCK_ENV)]
    while todo:
        name, extras = todo.pop()
        known = seen.get(name)
        if known is not None and extras <= known:
            continue
        seen[name] = (known or set()) | extras
        for spec in requires_of(name) or []:
            req = Requirement(spec)
            if req.marker is None or any(req.marker.evaluate({**LOCK_ENV, "extra": e}) for e in ("", *seen[name])):
                todo.append((canonicalize_name(req.name), set(req.extras)))
    return seen


@pytest.fixture(scope="module")
def lock() -> dict[str, dict]:
    return parse_lock(LOCK.read_text())


@pytest.fixture(scope="module")
def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_every_project_requirement_is_locked_inside_its_range(lock, pyproject):
    for req in project_requirements(pyproject):
        name = canonicalize_name(req.name)
        assert name in lock, f"{req} is in pyproject.toml but not in {LOCK.name}: run `make lock`"
        assert Version(lock[name]["version"]) in req.specifier, \
            f"{LOCK.name} has {name}=={lock[name]['version']}, outside pyproject.toml's {req}: run `make lock`"


def test_every_lock_entry_is_pinned_with_hashes(lock):
    assert lock, f"{LOCK.name} pins nothing"
    for name, entry in lock.items():
        assert entry["hashes"], f"{LOCK.name}: {name} has no --hash (pip's hash-checking mode needs one)"


def test_the_lock_is_exactly_what_the_project_needs(lock, pyproject):
    """Nothing missing (install would fail in hash mode) and nothing left over (a dependency dropped from
    pyproject.toml but not from the lock), judged from the installed packages' own metadata."""
    def requires_of(name: str) -> list[str]:
        try:
            return metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            pytest.fail(f"{name} is needed but not installed: the venv is not the lock (run `make test` again)")

    needed = set(closure(project_requirements(pyproject), requires_of))
    missing, extra = sorted(needed - set(lock)), sorted(set(lock) - needed)
    assert not missing, f"{LOCK.name} lacks {missing}, which pyproject.toml's dependencies need: run `make lock`"
    assert not extra, f"{LOCK.name} has {extra}, which nothing in pyproject.toml needs: run `make lock`"


def test_the_environment_is_the_lock(lock):
    """Every locked package is installed at its locked version, and nothing else is (the project and pip aside).

    Only the environment's own site-packages count: Ray puts its vendored copies (psutil, colorama under
    ray/thirdparty_files) on sys.path when it is imported, and they are part of the ray wheel."""
    site = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    installed = {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions(path=site)}
    wrong = {n: (installed.get(n), e["version"]) for n, e in lock.items() if installed.get(n) != e["version"]}
    assert not wrong, f"installed vs {LOCK.name} (installed, locked): {wrong}"
    unlocked = sorted(set(installed) - set(lock) - {"mimimi", "pip"})
    assert not unlocked, f"installed but not in {LOCK.name}: {unlocked}"
