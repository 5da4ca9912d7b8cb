"""The house drawn from the imports: library below, commands on top, MLflow and Ray at the edges.

Every module of ``mimimi``, ``tuning`` and ``bench`` sits on one floor of ``FLOORS``; an import — at any
depth: module level, inside a function, under ``TYPE_CHECKING`` — may only go to the same floor or a lower
one, the imports within a floor form no circle, and a command imports no other command. ``mimimi.tracking``
and ``mimimi.pyfunc`` are MLflow's only importers in the library (``mimimi.auth``, a command, imports MLflow's
auth client inside the function that sets up a tracking server's users); Ray is imported only under
``tuning`` (and by ``bench.ray_overhead``, a benchmark of it).
"""
from __future__ import annotations

import ast
import subprocess
import sys
from fnmatch import fnmatch
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("mimimi", "tuning", "bench")

FLOORS = [  # lowest first: (floor, module patterns)
    ("foundation: config, layers, metrics, the DCASE table, index, audio, synthesis, downloads",
     ["mimimi", "mimimi.config", "mimimi.nn", "mimimi.nn.*", "mimimi.metrics", "mimimi.precision", "mimimi.augment",
      "mimimi.champion", "mimimi.markdown", "mimimi.data", "mimimi.data.dcase", "mimimi.data.audio", "mimimi.data.index",
      "mimimi.data.corrupt", "mimimi.data.synth", "mimimi.data.download"]),
    ("features: STFT / log-mel, the cache, torch datasets", ["mimimi.features", "mimimi.data.dataset"]),
    ("models: the model kinds", ["mimimi.kinds"]),
    ("scoring: outputs, back-ends, the fitted state, checkpoints, verification",
     ["mimimi.scoring", "mimimi.scoring.*", "mimimi.checkpoint", "mimimi.verify"]),
    ("workflows: training, evaluation, reports", ["mimimi.training", "mimimi.evaluation", "mimimi.report"]),
    ("MLflow edge", ["mimimi.pyfunc", "mimimi.tracking"]),
    ("Ray edge: the search library", ["tuning", "tuning.*"]),
    ("benchmark library", ["bench", "bench.harness", "bench.cases", "bench.report", "bench.reference",
                           "bench.ray_overhead", "bench.objective_study", "bench.network_study", "bench.domain_study",
                           "bench.rehearsal_measure", "bench.rehearsal_stages", "bench.rehearsal_report",
                           "bench.rehearsal_projection"]),
    ("commands", ["mimimi.cli", "mimimi.train", "mimimi.evaluate", "mimimi.score", "mimimi.cache", "mimimi.synth",
                  "mimimi.index", "mimimi.download", "mimimi.auth", "tuning.search", "bench.run", "bench.accuracy",
                  "bench.gpu", "bench.rehearsal"]),
]
COMMANDS = FLOORS[-1][1]


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = _modules()


def floor_of(module: str) -> int:
    """The floor of ``module``: its most specific pattern (an exact name beats a ``.*``)."""
    matches = [(pattern.count("*") == 0, len(pattern), i) for i, (_, patterns) in enumerate(FLOORS)
               for pattern in patterns if fnmatch(module, pattern)]
    if not matches:
        raise AssertionError(f"{module} is on no floor of tests/test_layers.py FLOORS: place it")
    return max(matches)[2]


def internal_imports(module: str) -> set[str]:
    """Every module of PACKAGES that ``module`` imports, at any depth of its code."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x, from .a import b
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in MODULES:  # `import mimimi.scoring.fitted as x` -> the module itself
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found


GRAPH = {m: internal_imports(m) for m in MODULES}


def test_every_module_is_on_a_floor_and_says_its_job():
    for module, path in MODULES.items():
        floor_of(module)
        doc = ast.get_docstring(ast.parse(path.read_text()))
        if path.name != "__init__.py" or path.stat().st_size:
            assert doc and doc.strip().splitlines()[0].strip(), f"{path}: no opening docstring saying its job"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_go_down_never_up(module):
    mine = floor_of(module)
    up = sorted(t for t in GRAPH[module] if floor_of(t) > mine)
    assert not up, f"{module} ({FLOORS[mine][0]}) imports {up} from a higher floor"


def test_no_circle_within_a_floor():
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for t in sorted(GRAPH[m]):
            if floor_of(t) != floor_of(m):
                continue
            assert state.get(t) != 1, "import circle: " + " -> ".join(path + [m, t])
            if t not in state:
                visit(t, path + [m])
        state[m] = 2

    for m in sorted(MODULES):
        if m not in state:
            visit(m, [])


def test_commands_import_no_command():
    for module in COMMANDS:
        assert not (GRAPH[module] & set(COMMANDS)), f"{module} imports the command(s) {GRAPH[module] & set(COMMANDS)}"


def _loaded_after(statement: str, prefixes: tuple[str, ...]) -> list[str]:
    code = f"import sys; {statement}; print(sorted(m for m in sys.modules if m.startswith({prefixes!r})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT, timeout=120)
    return eval(out.stdout.strip())  # a list of module names printed by the child


def test_the_served_model_loads_no_evaluation_report_or_plots():
    """What ``mlflow models serve`` imports: the scoring library, not the evaluation, reports or matplotlib."""
    loaded = _loaded_after("import mimimi.pyfunc", ("mimimi.evaluat", "mimimi.report", "matplotlib", "mimimi.train",
                                                    "ray"))
    assert loaded == [], f"import mimimi.pyfunc loads {loaded}"


@pytest.mark.parametrize("module", ["mimimi.score", "mimimi.evaluate", "mimimi.scoring.clips", "mimimi.training",
                                    "mimimi.kinds", "mimimi.report", "mimimi.checkpoint", "mimimi.verify"])
def test_library_modules_import_neither_mlflow_nor_ray(module):
    assert _loaded_after(f"import {module}", ("mlflow", "ray")) == [], f"importing {module} imports MLflow or Ray"


def test_only_tracking_and_pyfunc_import_mlflow():
    def importers(top_level: bool) -> list[str]:
        return sorted(p.name for p in (ROOT / "mimimi").rglob("*.py") if any(
            (line if top_level else line.lstrip()).startswith(("import mlflow", "from mlflow"))
            for line in p.read_text().splitlines()))

    assert importers(top_level=True) == ["pyfunc.py", "tracking.py"]
    assert importers(top_level=False) == ["auth.py", "pyfunc.py", "tracking.py"]


def test_only_tuning_imports_ray():
    ray = sorted(m for m in MODULES if any(line.lstrip().startswith(("import ray", "from ray"))
                                          for line in MODULES[m].read_text().splitlines()))
    assert all(m.startswith("tuning") or m == "bench.ray_overhead" for m in ray), ray


def test_models_logged_before_pyfunc_still_load():
    from mimimi import pyfunc, tracking

    # their model-from-code file runs "from mimimi.tracking import MimimiModel"
    assert tracking.MimimiModel is pyfunc.MimimiModel
    assert "from mimimi.pyfunc import MimimiModel" in pyfunc.MODEL_CODE
