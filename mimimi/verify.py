"""Verify a downloaded MIMIMI model folder before anything in it is loaded: is it MIMIMI's, and unchanged?

A pyfunc model is Python code, and anyone who can write the model registry can point ``@champion`` at a
model of their own. ``mimimi.tracking.Tracker.log_model`` therefore records, in the MLmodel metadata under
``mimimi`` (``model_record``): ``format: 1``, ``loader: mimimi.pyfunc``, the sha256 of every artifact file
(``artifacts_sha256``, by artifact name) and of the model code file (``code_sha256``), and, as before,
``checkpoint_sha256``. ``verify_model_dir`` refuses, with one ``ModelVerificationError`` line naming the
model and the file, a folder that:

- has no MLmodel, or an unreadable one;
- is not a MIMIMI model: no ``mimimi`` metadata, a python_function flavor that is not a model from code
  (``mlflow.pyfunc.loaders.code_model``), extra code (``code_paths``) on it, or a model code file that is not
  byte for byte MIMIMI's ``MODEL_CODE`` (or the code of models logged before ``mimimi.pyfunc`` existed);
- has a file whose sha256 is not the recorded one, a file missing, an artifact without a recorded digest,
  or an artifact path outside the folder.

Models logged before digests were recorded (``mimimi`` metadata with ``checkpoint_sha256`` only, no
``format``) still pass when their code file is MIMIMI's and their checkpoint matches that digest; their
other artifacts (JSON, read as data) are not checked.

This module imports no MLflow: the MLmodel file is read as YAML (``yaml.safe_load``, which builds plain data
only), so a folder is judged before any MLflow loading code sees it, and the check is the same for
``mimimi.score`` (``Tracker.resolve_model``) and for the served model (``MimimiModel.load_context``).

Limits. Digests stored beside the files protect against a changed or swapped file, not against someone who
rewrites both the files and the MLmodel: ``Tracker.resolve_model`` also compares the checkpoint with the
``mimimi.checkpoint_sha256`` tag of the run that logged the model (``DIGEST_TAG``), but whoever may write runs
may write that tag too. A model without ``format`` is taken as an older one, so a forger can skip the file
digests (never the code-file check; torch loads the checkpoint with ``weights_only``, which runs no code).
``mlflow models serve`` runs the model's code file before ``load_context`` can check anything: a served
foreign model is refused only after its code ran; ``python -m mimimi.score`` refuses before. The environment
files (``requirements.txt``, ``conda.yaml``, ``python_env.yaml``) are not checked: ``mimimi.score`` never reads
them, and ``mlflow models serve`` with an environment manager other than ``local`` installs from them before
any model code runs. The real lock is an authenticated MLflow server on which scorers and servers have
read-only accounts.

>>> MODEL_CODE.splitlines()[-1], len(OLD_MODEL_CODES)
('mlflow.models.set_model(MimimiModel())', 1)
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from mimimi.checkpoint import CheckpointError, digest_file, sha256_file

FORMAT = 1  # what log_model records as mimimi.format; a higher one is refused (newer than this code)
LOADER = "mimimi.pyfunc"  # the module whose MimimiModel the code file builds
MLFLOW_LOADER = "mlflow.pyfunc.loaders.code_model"  # MLflow 3.17's python_function loader of a model from code
DIGEST_TAG = "mimimi.checkpoint_sha256"  # run and registered-version tag set by log_model
MLMODEL = "MLmodel"
# the model-from-code file stored in the model folder; MLflow runs it on load (mimimi.pyfunc re-exports it).
# Written line by line so that no line of this module starts with "import mlflow" (tests/test_layers.py).
MODEL_CODE = "\n".join([
    '"""MIMIMI pyfunc model: written by mimimi.tracking.log_model, run by MLflow on load."""',
    "import mlflow",
    "",
    "from mimimi.pyfunc import MimimiModel",
    "",
    "mlflow.models.set_model(MimimiModel())",
    ""])
# the code files of earlier models, still accepted: before mimimi.pyfunc existed (mimimi.tracking re-exports
# MimimiModel). A change to MODEL_CODE adds the old text here, or the models logged with it stop loading.
OLD_MODEL_CODES = (MODEL_CODE.replace("from mimimi.pyfunc import", "from mimimi.tracking import"),)
_CODES = {c.encode() for c in (MODEL_CODE, *OLD_MODEL_CODES)}


class ModelVerificationError(CheckpointError):
    """A model folder that is not MIMIMI's or not as logged, in one line naming the model and the file."""


class Verified(NamedTuple):
    folder: Path
    artifacts: dict[str, Path]  # artifact name -> file in the folder, as MLflow's loader resolves them
    checkpoint_sha256: str
    format: int  # 0: logged before digests were recorded (checkpoint only)




def model_record(artifacts: Mapping[str, str | Path], code: str | Path) -> dict[str, Any]:
    """What ``log_model`` records under ``mimimi`` to make the folder verifiable: the files it is about to log
    (artifact name -> file, and the code file)."""
    digests = {name: sha256_file(path) for name, path in sorted(artifacts.items())}
    return {"format": FORMAT, "loader": LOADER, "checkpoint_sha256": digests["checkpoint"],
            "artifacts_sha256": digests, "code_sha256": sha256_file(code)}


def _short(digest: str) -> str:
    return f"{digest[:16]}…"


def inside(folder: Path, rel: Any, what: str, name: str) -> Path:
    """``folder / rel``, refused when ``rel`` is not a relative path that stays inside the folder."""
    if not isinstance(rel, str) or not rel or Path(rel).is_absolute():
        raise ModelVerificationError(f"{name}: {what} has no usable path ({rel!r})")
    path = folder / rel
    if not path.resolve().is_relative_to(folder.resolve()):
        raise ModelVerificationError(f"{name}: {what} path {rel!r} leads outside the model folder")
    return path


def _digest(path: Path, rel: str, name: str) -> str:
    if not path.is_file():
        raise ModelVerificationError(f"{name}: {rel} is missing")
    return sha256_file(path)


def check_file(path: Path, rel: str, want: Any, name: str) -> str:
    """The sha256 of ``path`` (``rel`` in messages), refused unless it is ``want``, the digest recorded at log time."""
    got = _digest(path, rel, name)
    if got != want:
        shown = _short(want) if isinstance(want, str) else repr(want)
        raise ModelVerificationError(f"{name}: {rel}: sha256 {_short(got)} does not match {shown} recorded at log "
                                     "time (changed after it was logged)")
    return got


def read_mlmodel(folder: str | Path, name: str | None = None) -> dict[str, Any]:
    """The MLmodel file of ``folder`` as plain data (YAML, nothing constructed)."""
    folder = Path(folder)
    name = name or str(folder)
    path = folder / MLMODEL
    if not path.is_file():
        raise ModelVerificationError(f"{name}: no {MLMODEL} file (not an MLflow model)")
    try:
        conf = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ModelVerificationError(f"{name}: unreadable {MLMODEL} ({str(e).splitlines()[0]})") from None
    if not isinstance(conf, dict):
        raise ModelVerificationError(f"{name}: unreadable {MLMODEL} (not a mapping)")
    return conf


def verify_model_dir(folder: str | Path, name: str | None = None) -> Verified:
    """Check a downloaded model folder as the module docstring says; ``name`` (default: the folder) starts
    every message. Reads files only: nothing in the folder is imported or unpickled."""
    folder = Path(folder)
    name = name or str(folder)
    conf = read_mlmodel(folder, name)
    meta = (conf.get("metadata") or {}).get("mimimi") if isinstance(conf.get("metadata"), dict) else None
    if not isinstance(meta, dict):
        raise ModelVerificationError(f"{name}: not a MIMIMI model (no 'mimimi' metadata in its {MLMODEL})")
    flavor = (conf.get("flavors") or {}).get("python_function") if isinstance(conf.get("flavors"), dict) else None
    if not isinstance(flavor, dict):
        raise ModelVerificationError(f"{name}: not a MIMIMI model (no python_function flavor)")
    if flavor.get("loader_module") != MLFLOW_LOADER or not flavor.get("model_code_path"):
        raise ModelVerificationError(f"{name}: not a MIMIMI model (its python_function loader is "
                                     f"{flavor.get('loader_module')!r}, not a model from MIMIMI's code)")
    if flavor.get("code"):
        raise ModelVerificationError(f"{name}: not a MIMIMI model (it adds code to the Python path: "
                                     f"{flavor['code']!r})")
    fmt = meta.get("format", 0)
    if not isinstance(fmt, int) or isinstance(fmt, bool) or not 0 <= fmt <= FORMAT:
        raise ModelVerificationError(f"{name}: mimimi.format {fmt!r} is not one this mimimi reads (0..{FORMAT})")
    if fmt and meta.get("loader") != LOADER:
        raise ModelVerificationError(f"{name}: not a MIMIMI model (mimimi.loader is {meta.get('loader')!r}, "
                                     f"not {LOADER!r})")

    # the code file: where MLflow's loader looks for it (the recorded path's file name, in the folder)
    code_rel = Path(str(flavor["model_code_path"])).name
    code = inside(folder, code_rel, "the model code file", name)
    if not code.is_file():
        raise ModelVerificationError(f"{name}: {code_rel} is missing")
    if code.read_bytes() not in _CODES:
        raise ModelVerificationError(f"{name}: model code file {code_rel} differs from MIMIMI's "
                                     "(mimimi.pyfunc.MODEL_CODE)")
    if fmt:
        check_file(code, code_rel, meta.get("code_sha256"), name)

    arts = flavor.get("artifacts") or {}
    if not isinstance(arts, dict) or not isinstance(arts.get("checkpoint"), dict):
        raise ModelVerificationError(f"{name}: not a MIMIMI model (no checkpoint artifact)")
    paths = {}
    for art, info in arts.items():
        rel = info.get("path") if isinstance(info, dict) else None
        paths[str(art)] = (inside(folder, rel, f"artifact {art!r}", name), rel)
    want = meta.get("checkpoint_sha256")
    if not isinstance(want, str):
        raise ModelVerificationError(f"{name}: no checkpoint_sha256 recorded in its mimimi metadata")
    ckpt, ckpt_rel = paths["checkpoint"]
    got = check_file(ckpt, ckpt_rel, want, name)
    if fmt:
        recorded = meta.get("artifacts_sha256")
        if not isinstance(recorded, dict):
            raise ModelVerificationError(f"{name}: no artifacts_sha256 recorded in its mimimi metadata")
        if missing := sorted(set(recorded) - set(paths)):
            raise ModelVerificationError(f"{name}: recorded artifact(s) {missing} are not in its {MLMODEL}")
        for art, (path, rel) in paths.items():
            if art not in recorded:
                raise ModelVerificationError(f"{name}: artifact {art!r} ({rel}) has no recorded sha256")
            check_file(path, rel, recorded[art], name)
        if recorded["checkpoint"] != want:
            raise ModelVerificationError(f"{name}: checkpoint_sha256 and artifacts_sha256.checkpoint disagree")
    return Verified(folder, {art: path for art, (path, _) in paths.items()}, got, fmt)


def verify_loaded_artifacts(artifacts: Mapping[str, str]) -> Verified:
    """For ``MimimiModel.load_context``: verify the model folder that holds the artifact files MLflow hands
    over (``context.artifacts``, absolute paths ``<model folder>/<recorded path>``: MLflow 3.17's
    ``_load_context_model_and_signature``), and check that those are the files verified."""
    if "checkpoint" not in artifacts:
        raise ModelVerificationError(f"not a MIMIMI model: no checkpoint artifact among {sorted(artifacts)}")
    ckpt = Path(artifacts["checkpoint"])
    folder = next((d for d in ckpt.parents if (d / MLMODEL).is_file()), None)
    if folder is None:
        raise ModelVerificationError(f"{ckpt}: no {MLMODEL} file in any folder above it (not an MLflow model)")
    verified = verify_model_dir(folder)
    for art, path in artifacts.items():
        if art not in verified.artifacts or Path(path).resolve() != verified.artifacts[art].resolve():
            raise ModelVerificationError(f"{folder}: artifact {art!r} is loaded from {path}, not the verified file")
    return verified


def verify_checkpoint_file(path: str | Path) -> str | None:
    """For a checkpoint used as a file (``mimimi score --checkpoint``, ``mimimi evaluate --checkpoint``): its
    sha256 against ``<path>.sha256``, which ``save_checkpoint`` writes beside it. Returns the digest; refuses a
    file that changed since (``ModelVerificationError``, one line); None when there is no digest file (a
    checkpoint copied without it): the caller says so. Either way the checkpoint is then read weights-only, so
    no code in it runs."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    side = digest_file(path)
    if not side.is_file():
        return None
    want = side.read_text().split()[:1]
    got = sha256_file(path)
    if want != [got]:
        raise ModelVerificationError(f"{path}: sha256 {_short(got)} does not match {side.name} "
                                     f"({_short(want[0]) if want else 'empty'}): changed since training wrote it")
    return got
