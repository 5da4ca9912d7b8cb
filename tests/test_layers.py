"""The layering of the README's Layout: data → features → model → train → evaluate/score never import
MLflow or Ray; ``mimimi.tracking`` and ``mimimi.pyfunc`` are MLflow's only importers in the library (and
``mimimi.auth``, inside the function that sets up the tracking server's users)."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("module", ["mimimi.score", "mimimi.evaluate", "mimimi.scoring", "mimimi.train",
                                    "mimimi.kinds", "mimimi.report", "mimimi.checkpoint", "mimimi.verify"])
def test_library_modules_import_neither_mlflow_nor_ray(module):
    code = f"import sys, {module}; print(sorted(m for m in ('mlflow', 'ray') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]", f"importing {module} imports {out.stdout.strip()}"


def test_only_tracking_and_pyfunc_import_mlflow():
    importers = sorted(p.name for p in (ROOT / "mimimi").rglob("*.py")
                       if any(line.startswith(("import mlflow", "from mlflow")) for line in p.read_text().splitlines()))
    assert importers == ["pyfunc.py", "tracking.py"]
    # mimimi.auth sets up the tracking server's users, on the head only: MLflow's auth client is imported there
    inside = sorted(p.name for p in (ROOT / "mimimi").rglob("*.py") if p.name not in importers
                    and any(line.lstrip().startswith(("import mlflow", "from mlflow")) for line in p.read_text().splitlines()))
    assert inside == ["auth.py"]


def test_models_logged_before_pyfunc_still_load():
    from mimimi import pyfunc, tracking

    # their model-from-code file runs "from mimimi.tracking import MimimiModel"
    assert tracking.MimimiModel is pyfunc.MimimiModel
    assert "from mimimi.pyfunc import MimimiModel" in pyfunc.MODEL_CODE
