"""mimimi.verify on hand-made model folders (the layout MLflow 3.17 gives a MIMIMI model), and the proof that
a checkpoint cannot run code. No MLflow, no training: the models logged and served for real are in
test_score.py and test_serve.py."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import yaml

from mimimi import verify
from mimimi.checkpoint import CheckpointError, load_checkpoint

ARTIFACTS = {"checkpoint": b"weights", "config": b'{"model": {}}', "ids": b'{"00": 0}',
             "thresholds": b'{"per_id": {"00": 1.0}}'}


def make_model(folder: Path, *, old: bool = False, code: str = verify.MODEL_CODE) -> Path:
    """A model folder as log_model leaves it: artifacts/<name>.*, mimimi_model.py and an MLmodel whose
    python_function is MLflow's model-from-code loader. ``old``: metadata from before digests were recorded."""
    (folder / "artifacts").mkdir(parents=True)
    files = {}
    for name, data in ARTIFACTS.items():
        files[name] = folder / "artifacts" / f"{name}{'.pt' if name == 'checkpoint' else '.json'}"
        files[name].write_bytes(data)
    (folder / "mimimi_model.py").write_text(code)
    meta = verify.model_record(files, folder / "mimimi_model.py")
    if old:
        meta = {"checkpoint_sha256": meta["checkpoint_sha256"]}
    conf = {"flavors": {"python_function": {
                "artifacts": {n: {"path": f"artifacts/{p.name}", "uri": f"/tmp/x/{p.name}"} for n, p in files.items()},
                "code": None, "loader_module": verify.MLFLOW_LOADER, "model_code_path": "/tmp/x/mimimi_model.py"}},
            "metadata": {"mimimi": {"machine_type": "valve", **meta}}, "run_id": "0" * 32}
    (folder / "MLmodel").write_text(yaml.safe_dump(conf))
    return folder


def edit_mlmodel(folder: Path, change) -> None:
    conf = yaml.safe_load((folder / "MLmodel").read_text())
    change(conf)
    (folder / "MLmodel").write_text(yaml.safe_dump(conf))


def refused(folder: Path, *message: str) -> str:
    with pytest.raises(verify.ModelVerificationError) as e:
        verify.verify_model_dir(folder, "model models:/mimimi-valve@champion")
    line = str(e.value)
    assert isinstance(e.value, CheckpointError) and "\n" not in line, line
    assert line.startswith("model models:/mimimi-valve@champion: ") and all(m in line for m in message), line
    return line


def test_a_model_as_logged_passes(tmp_path):
    folder = make_model(tmp_path / "m")
    v = verify.verify_model_dir(folder)
    assert v.format == verify.FORMAT and v.folder == folder
    assert v.artifacts == {n: folder / "artifacts" / f"{n}{'.pt' if n == 'checkpoint' else '.json'}" for n in ARTIFACTS}
    assert v.checkpoint_sha256 == verify.sha256_file(folder / "artifacts" / "checkpoint.pt")
    meta = yaml.safe_load((folder / "MLmodel").read_text())["metadata"]["mimimi"]
    assert meta["loader"] == "mimimi.pyfunc" and set(meta["artifacts_sha256"]) == set(ARTIFACTS)
    assert meta["code_sha256"] == verify.sha256_file(folder / "mimimi_model.py")


@pytest.mark.parametrize("name", sorted(ARTIFACTS))
def test_any_changed_artifact_is_refused(tmp_path, name):
    folder = make_model(tmp_path / "m")
    path = next((folder / "artifacts").glob(f"{name}.*"))
    path.write_bytes(path.read_bytes() + b" ")
    refused(folder, f"artifacts/{path.name}: sha256", "does not match", "changed after it was logged")
    path.unlink()
    refused(folder, f"artifacts/{path.name} is missing")


@pytest.mark.parametrize("change, message", [
    (lambda c: c.pop("metadata"), "not a MIMIMI model (no 'mimimi' metadata"),
    (lambda c: c["metadata"].pop("mimimi"), "not a MIMIMI model (no 'mimimi' metadata"),
    (lambda c: c.pop("flavors"), "no python_function flavor"),
    (lambda c: c["flavors"]["python_function"].update(loader_module="mlflow.pyfunc.model"),
     "its python_function loader is 'mlflow.pyfunc.model'"),
    (lambda c: c["flavors"]["python_function"].pop("model_code_path"), "not a model from MIMIMI's code"),
    (lambda c: c["flavors"]["python_function"].update(code="code"), "adds code to the Python path"),
    (lambda c: c["metadata"]["mimimi"].update(loader="evil"), "mimimi.loader is 'evil'"),
    (lambda c: c["metadata"]["mimimi"].update(format=2), "mimimi.format 2 is not one this mimimi reads"),
    (lambda c: c["metadata"]["mimimi"]["artifacts_sha256"].pop("thresholds"),
     "artifact 'thresholds' (artifacts/thresholds.json) has no recorded sha256"),
    (lambda c: c["flavors"]["python_function"]["artifacts"].pop("ids"), "recorded artifact(s) ['ids'] are not in"),
    (lambda c: c["flavors"]["python_function"]["artifacts"]["ids"].update(path="../../etc/passwd"),
     "leads outside the model folder"),
    (lambda c: c["flavors"]["python_function"]["artifacts"]["ids"].update(path="/etc/passwd"),
     "artifact 'ids' has no usable path"),
    (lambda c: c["metadata"]["mimimi"].update(code_sha256="0" * 64), "mimimi_model.py: sha256"),
    (lambda c: c["metadata"]["mimimi"].update(checkpoint_sha256="0" * 64), "artifacts/checkpoint.pt: sha256"),
])
def test_a_model_that_is_not_mimimis_or_not_as_logged_is_refused(tmp_path, change, message):
    folder = make_model(tmp_path / "m")
    edit_mlmodel(folder, change)
    refused(folder, message)


def test_no_or_unreadable_mlmodel(tmp_path):
    folder = make_model(tmp_path / "m")
    (folder / "MLmodel").write_text("flavors: [unclosed")
    refused(folder, "unreadable MLmodel")
    (folder / "MLmodel").unlink()
    refused(folder, "no MLmodel file (not an MLflow model)")


def test_a_changed_code_file_is_refused_even_with_its_digest_rewritten(tmp_path):
    folder = make_model(tmp_path / "m", code=verify.MODEL_CODE + "import os; os.system('touch pwned')\n")
    refused(folder, "model code file mimimi_model.py differs from MIMIMI's")


def test_a_model_logged_before_digests_passes_on_its_checkpoint_and_code(tmp_path):
    folder = make_model(tmp_path / "m", old=True, code=verify.OLD_MODEL_CODES[0])  # from mimimi.tracking import
    v = verify.verify_model_dir(folder)
    assert v.format == 0 and v.checkpoint_sha256 == verify.sha256_file(folder / "artifacts" / "checkpoint.pt")
    (folder / "artifacts" / "ids.json").write_text("{}")  # not recorded then: not checked (read as data)
    verify.verify_model_dir(folder)
    (folder / "artifacts" / "checkpoint.pt").write_bytes(b"other weights")
    refused(folder, "artifacts/checkpoint.pt: sha256", "does not match")
    shutil.rmtree(folder)
    make_model(folder, old=True, code=verify.MODEL_CODE + "# edited\n")
    refused(folder, "differs from MIMIMI's")


def test_load_context_finds_the_model_folder_from_its_artifacts(tmp_path):
    folder = make_model(tmp_path / "m")
    given = {n: str(p) for n, p in verify.verify_model_dir(folder).artifacts.items()}  # as MLflow passes them
    assert verify.verify_loaded_artifacts(given).folder == folder
    other = tmp_path / "ids.json"
    other.write_text("{}")
    with pytest.raises(verify.ModelVerificationError, match="artifact 'ids' is loaded from .*not the verified file"):
        verify.verify_loaded_artifacts({**given, "ids": str(other)})
    (folder / "artifacts" / "config.json").write_text("{}")
    with pytest.raises(verify.ModelVerificationError, match=f"^{folder}: artifacts/config.json: sha256"):
        verify.verify_loaded_artifacts(given)
    with pytest.raises(verify.ModelVerificationError, match="no MLmodel file in any folder above it"):
        verify.verify_loaded_artifacts({"checkpoint": str(other)})


class _Payload:
    """Unpickled, it calls ``open(marker, "w")``: a file appears if the checkpoint's pickle ran code."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def test_a_checkpoint_that_would_run_code_is_refused_without_running_it(tmp_path):
    marker, path = tmp_path / "ran", tmp_path / "evil.pt"
    torch.save({"state_dict": {}, "config": {}, "ids": {}, "meta": {}, "versions": {}, "scoring": _Payload(marker)},
               path)
    with pytest.raises(CheckpointError, match=r"evil\.pt: not a usable MIMIMI checkpoint .*Weights only load failed"):
        load_checkpoint(path)
    assert not marker.exists()  # weights_only: the pickle's code never ran
    # the oracle: the same file unpickled without weights_only does run it
    torch.load(path, weights_only=False)
    assert marker.exists()


# the code files logged models hold, as they were written: any other text would be refused
LOGGED_CODES = ['''"""MIMIMI pyfunc model: written by mimimi.tracking.log_model, run by MLflow on load."""
import mlflow

from mimimi.pyfunc import MimimiModel

mlflow.models.set_model(MimimiModel())
''', '''"""MIMIMI pyfunc model: written by mimimi.tracking.log_model, run by MLflow on load."""
import mlflow

from mimimi.tracking import MimimiModel

mlflow.models.set_model(MimimiModel())
''']


def test_the_code_files_of_logged_models_are_still_accepted():
    assert [verify.MODEL_CODE, *verify.OLD_MODEL_CODES] == LOGGED_CODES
