"""The MLflow pyfunc model of a MIMIMI checkpoint: its interface, and the Python that MLflow runs to load it.

``mimimi.tracking.log_model`` writes the model folder: ``artifacts/checkpoint.pt`` (the checkpoint with
its fitted scorers), optionally ``artifacts/thresholds.json``, and the model-from-code file ``MODEL_CODE``
that builds a ``MimimiModel``, with every file's sha256 in the MLmodel metadata; ``load_context`` loads
nothing that ``mimimi.verify`` refuses. Scoring is ``mimimi.scoring.clips.score_frame``'s: the loop
``mimimi score`` runs over files.

A checkpoint with fitted scorers (every ``best.pt`` training writes) gives a model that takes rows of
``path`` or ``waveform`` (+ ``machine_id``) and answers ``score``, ``decision``, ``threshold``,
``machine_id``, ``pred_id`` (``SCORING_SIGNATURE``), with the ``scorer`` and ``aggregate`` params; its
thresholds are the checkpoint's normal-only ones::

    mlflow.pyfunc.load_model(model_uri).predict(pd.DataFrame({"path": [...]}), params={"scorer": "gmm"})

An older checkpoint without scorers gives ``score`` (its native score) and ``pred_id`` only
(``SIGNATURE``), or decisions with the ``thresholds`` passed to ``log_model``.

Every answer has an ``error`` column: None for a scored row, else one line saying why that row could not
be scored (its ``score`` NaN); the other rows are still scored, as ``mimimi.score`` scores the good files.
A request with no row that can be scored, or none of the ``path`` / ``waveform`` columns, is an error
(``ModelInputError``: HTTP 400 from the scoring server, with that line as its message).
"""
from __future__ import annotations

import json
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema
from mlflow.types.schema import AnyType

import mimimi
from mimimi import verify
from mimimi.checkpoint import CheckpointError, Loaded, load_checkpoint
from mimimi.scoring.clips import ScoreError, score_frame

# a model logged without thresholds; MLflow checks inputs against it (a missing "path" fails before predict)
SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec("string", "path"), ColSpec("string", "machine_id", required=False)]),
    outputs=Schema([ColSpec("double", "score"), ColSpec("string", "pred_id"),
                    ColSpec("string", "error", required=False)]),
    params=ParamSchema([ParamSpec("aggregate", "string", "mean"),  # segment scores -> clip score: mean | max
                        ParamSpec("scorer", "string", "default")]),  # mimimi.scoring: knn-stats, ce, gmm, ...
)
# a model with thresholds (every checkpoint training writes). Every input column is optional, so that a row
# gives a path OR a waveform; score_frame checks each row.
SCORING_SIGNATURE = ModelSignature(
    inputs=Schema([ColSpec("string", "path", required=False),
                   # mono samples at 16 kHz; Any, so that score_frame (not MLflow's schema check, whose
                   # message dumps the frame) says what is wrong with a bad one
                   ColSpec(AnyType(), "waveform", required=False),
                   ColSpec("string", "machine_id", required=False)]),
    outputs=Schema([ColSpec("double", "score"), ColSpec("string", "decision", required=False),
                    ColSpec("double", "threshold", required=False), ColSpec("string", "machine_id"),
                    ColSpec("string", "pred_id", required=False), ColSpec("string", "error", required=False)]),
    params=ParamSchema([ParamSpec("aggregate", "string", "mean"), ParamSpec("scorer", "string", "default")]),
)
# the model-from-code file stored in the model folder; MLflow runs it on load. It lives in mimimi.verify (which
# checks a model's code file against it without importing MLflow). Models logged before this module existed
# import MimimiModel from mimimi.tracking, which re-exports it.
MODEL_CODE = verify.MODEL_CODE
# what predict imports (mimimi itself is not on PyPI: install the project, e.g. pip install -e .)
REQUIREMENTS = ("mlflow", "torch", "torchaudio", "numpy", "pandas", "soundfile", "scikit-learn",
                "pyyaml", "tqdm")


class ModelInputError(MlflowException, ScoreError):
    """Model input the pyfunc model cannot score: a ``mimimi.scoring.clips.ScoreError`` to Python callers, an
    ``MlflowException`` to MLflow's scoring server, which answers it with HTTP 400 and the message.

    The message stays the one line it was made with: MLflow 3.17's scoring server rewrites the message of
    any ``MlflowException`` from ``predict`` to ``"Failed to predict data '<the whole input frame>'. Error:
    ..."``, which would put a dump of the request (waveforms included) into every error answer.
    """

    def __init__(self, message: str):
        self._line = str(message).splitlines()[0] if str(message).strip() else str(message)
        super().__init__(self._line, error_code=INVALID_PARAMETER_VALUE)

    @property
    def message(self) -> str:
        return self._line

    @message.setter
    def message(self, value: str) -> None:  # what MlflowException.__init__ and the scoring server assign
        pass


def pip_requirements() -> list[str]:
    """The installed versions of ``REQUIREMENTS`` and of mimimi, as pins for the model's environment."""
    reqs = []
    for dist in REQUIREMENTS:
        try:
            reqs.append(f"{dist}=={importlib_metadata.version(dist).split('+')[0]}")  # no local tag (+cpu)
        except importlib_metadata.PackageNotFoundError:
            reqs.append(dist)
    return reqs + [f"mimimi=={mimimi.__version__}"]


def read_thresholds(path: str | Path) -> dict[str, float | None]:
    """The per-ID thresholds of a ``thresholds.json`` written by ``log_model``."""
    try:
        per_id = json.loads(Path(path).read_text())["per_id"]
        return {str(k): None if v is None else float(v) for k, v in per_id.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{path}: not a thresholds file written by mimimi ({e})") from None


def predict(loaded: Loaded, model_input: pd.DataFrame, thresholds: dict | None = None, aggregate: str = "mean",
            scorer: str | None = None) -> pd.DataFrame:
    """``score_frame`` with its errors as ``ModelInputError`` (one line naming the row or the file)."""
    try:
        return score_frame(loaded, model_input, thresholds=thresholds, aggregate=aggregate, scorer=scorer)
    except ScoreError as e:
        raise ModelInputError(str(e)) from None


class MimimiModel(mlflow.pyfunc.PythonModel):
    """The pyfunc model: the checkpoint is the artifact ``checkpoint``, per-ID thresholds the optional artifact
    ``thresholds`` (models logged before checkpoints carried them)."""

    def load_context(self, context) -> None:
        """Verify the model folder (``mimimi.verify``: every file's sha256 against the MLmodel metadata, the
        code file against ``MODEL_CODE``), then load. A refused model raises ``verify.ModelVerificationError``
        in one line: ``mlflow.pyfunc.load_model`` fails with it and ``mlflow models serve`` does not start.
        MLflow has run the model's code file by then; ``python -m mimimi.score`` checks before loading."""
        verify.verify_loaded_artifacts(context.artifacts)
        self.loaded = load_checkpoint(context.artifacts["checkpoint"])
        path = context.artifacts.get("thresholds")
        self.thresholds = read_thresholds(path) if path else None

    def predict(self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        params = params or {}
        return predict(self.loaded, model_input, self.thresholds, params.get("aggregate", "mean"),
                       params.get("scorer", "default"))
