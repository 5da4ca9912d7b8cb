"""MLflow tracking: the store, runs, params, metrics, artifacts, logged models and the registry.

With ``mimimi.pyfunc`` (the logged model's Python side), the only module that imports MLflow.

The store is a SQLite database with the artifact folders next to it: by default
``<repo>/mlruns/mlflow.db`` and ``<repo>/mlruns/artifacts/<experiment>/``. MLflow 3.17's plain file
store is in maintenance mode, and a sqlite experiment created without an artifact location puts its
artifacts under the current directory, so ``ensure_experiment`` always gives one. An ``http(s)://``
tracking server chooses artifact locations itself.

Everything goes through a ``Tracker``: one store, one ``MlflowClient``, passed to whoever logs. Runs are
addressed by id and MLflow's fluent "active run" is never used, so a search driver can keep a parent run
and many trial runs open at the same time. MLflow's process-wide tracking URI is set only around the calls
that read nothing else (``Model.log``, loading or downloading a ``models:/`` URI) and restored after them,
so two stores can be used from one process and importing this module changes nothing.

``log_model`` logs a checkpoint as the run's pyfunc model (``mimimi.pyfunc``: MLflow's "model from
code", not a pickled object), with the versions it was built with and the sha256 of every file in it
(``mimimi.verify``), the checkpoint's also as a tag of the run and of the registered version.
``resolve_model`` downloads a model to score with and refuses one that is not MIMIMI's or not as logged,
before anything in it is loaded; ``update_champion`` moves the registry alias ``champion``
(``mimimi.champion``'s rule).

Metrics may be NaN (a diverged trial is information). MLflow's sqlite store keeps NaN, but clamps
±inf to ±1.797e308.

>>> resolve_tracking_uri("sqlite:////data/mlruns/mlflow.db")
'sqlite:////data/mlruns/mlflow.db'
>>> resolve_tracking_uri("/data/mlruns"), resolve_tracking_uri("http://head:5000")
('sqlite:////data/mlruns/mlflow.db', 'http://head:5000')
>>> flatten_params({"train": {"lr": 0.001, "loss_weights": (1.0, 1.0, 1.0)}, "seed": 0, "p": 0.4458865003910399})
{'train.lr': '0.001', 'train.loss_weights': '[1.0, 1.0, 1.0]', 'seed': '0', 'p': '0.445887'}
"""
from __future__ import annotations

import dataclasses
import json
import numbers
import os
import re
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit, urlunsplit


import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking.context.registry import resolve_tags
from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH, MAX_TAG_VAL_LENGTH

from mimimi import champion, pyfunc, verify
from mimimi.checkpoint import load_checkpoint
from mimimi.config import to_dict

MimimiModel = pyfunc.MimimiModel  # the code file of a model logged before mimimi.pyfunc imports it from here
REPO_MLRUNS = Path(__file__).resolve().parents[1] / "mlruns"
MODEL_NAME = "model"  # the logged model's name: runs:/<run_id>/model
PARENT_TAG = "mlflow.parentRunId"
DESCRIPTION_TAG = "mlflow.note.content"  # a run's description in the MLflow UI (markdown)
MODEL_URI_TAG = "mimimi.model_uri"  # set on a run by log_model: models:/m-...
REGISTERED_TAG = "mimimi.registered_model"  # models:/<name>/<version>, when log_model registered it
BEST_MODEL_RUN_TAG = "mimimi.best_model_run_id"  # set on a search's parent run: the trial run with the best model
DIGEST_TAG = verify.DIGEST_TAG  # mimimi.checkpoint_sha256: set by log_model on the run and the registered version
STATUSES = ("FINISHED", "FAILED", "KILLED")


class TrackingError(ValueError):
    """A tracking call that cannot be done, in one line naming the run id or the tracking URI."""


@dataclass(frozen=True)
class RunRecord:
    """A run as plain data: metrics hold each key's latest value (``metric_history`` has every step)."""

    run_id: str
    experiment_id: str
    run_name: str
    status: str  # RUNNING | SCHEDULED | FINISHED | FAILED | KILLED
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    parent_run_id: str | None = None
    artifact_uri: str = ""


class ModelRef(NamedTuple):
    model_uri: str  # models:/m-<id>; runs:/<run_id>/model also loads it
    version: int | None  # registered model version, None when not registered


# ---------------------------------------------------------------------------------------------
# store

def default_tracking_uri() -> str:
    """``sqlite:///<repo>/mlruns/mlflow.db``, absolute (Ray Tune changes each trial's working directory)."""
    return f"sqlite:///{REPO_MLRUNS.resolve()}/mlflow.db"


def resolve_tracking_uri(uri: str | Path) -> str:
    """An absolute tracking URI.

    A relative ``sqlite:///`` path becomes absolute against the current directory. A bare path is a
    ``.db`` file, or a folder that holds ``mlflow.db``. Other URIs (``http(s)://``, ``postgresql://``,
    ...) are returned unchanged.
    """
    uri = str(uri)
    if not urlsplit(uri).scheme and uri != "databricks":
        p = Path(uri).expanduser().absolute()
        return f"sqlite:///{p if p.suffix == '.db' else p / 'mlflow.db'}"
    if uri.startswith("sqlite:///"):
        path, sep, query = uri[len("sqlite:///"):].partition("?")
        if path in ("", ":memory:"):
            raise TrackingError(f"{uri}: an in-memory sqlite store cannot be shared by MLflow's connections")
        p = Path(path)
        return f"sqlite:///{p if p.is_absolute() else p.absolute()}{sep}{query}"
    if uri.startswith("sqlite:"):
        raise TrackingError(f"{uri}: an in-memory sqlite store cannot be shared by MLflow's connections")
    return uri


def _sqlite_path(uri: str) -> Path | None:
    return Path(uri[len("sqlite:///"):].partition("?")[0]) if uri.startswith("sqlite:///") else None


def _shown(uri: str) -> str:
    """The URI for messages, without any user:password."""
    parts = urlsplit(uri)
    if parts.password is None and parts.username is None:
        return uri
    return urlunsplit(parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else "")))


_HTTP_STATUS = re.compile(r"failed with error code (401|403) != 200")


def _first_line(e: MlflowException) -> str:
    """The message's first line; a refusal by an authenticated server (cluster/README.md, Security) in words.

    >>> _first_line(MlflowException("API request to endpoint /x failed with error code 401 != 200. Response ..."))
    'the server requires a user (HTTP 401): set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, or ~/.mlflow/credentials'
    """
    line = (str(e.message).strip().splitlines() or [e.error_code])[0]
    if m := _HTTP_STATUS.search(line):
        if m[1] == "401":
            return ("the server requires a user (HTTP 401): set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, "
                    "or ~/.mlflow/credentials")
        user = os.environ.get("MLFLOW_TRACKING_USERNAME") or "this user"
        return f"permission denied to {user} (HTTP 403): a read-only user cannot write"
    return line


def _artifact_location(uri: str, name: str) -> str | None:
    """``<db folder>/artifacts/<name>`` as a file URI for a sqlite store; None lets the store decide."""
    db = _sqlite_path(uri)
    if db is None:
        return None
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "experiment"
    return (db.parent / "artifacts" / safe).as_uri()


def _record(run) -> RunRecord:
    info, data = run.info, run.data
    return RunRecord(run_id=info.run_id, experiment_id=info.experiment_id, run_name=info.run_name or "",
                     status=info.status, params=dict(data.params), metrics=dict(data.metrics),
                     tags=dict(data.tags), parent_run_id=data.tags.get(PARENT_TAG), artifact_uri=info.artifact_uri)


# ---------------------------------------------------------------------------------------------
# params, metrics, tags, artifacts

def _truncate(value: str, limit: int) -> str:
    return value if len(value) <= limit else value[:limit - 3] + "..."


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested mappings -> ``{"a.b": str(value)}``; lists and tuples as JSON; values cut to MLflow's limit."""
    out: dict[str, str] = {}
    for k, v in params.items():
        key = f"{prefix}{k}"
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            v = to_dict(v)
        if isinstance(v, Mapping) and v:
            for kk, vv in flatten_params(v, f"{key}.").items():
                if kk in out:
                    raise TrackingError(f"parameter {kk!r} is given twice (nested and dotted)")
                out[kk] = vv
        else:
            if key in out:
                raise TrackingError(f"parameter {key!r} is given twice (nested and dotted)")
            out[key] = _truncate(_param_str(v), MAX_PARAM_VAL_LENGTH)
    return out


def _param_str(v: Any) -> str:
    """Lists and tuples as JSON (as a config tree's ``to_dict`` has them), floats with 6 significant digits
    (a sampled 0.4458865003910399 reads 0.445887; the exact values are in a search's best_config.json),
    anything else as ``str``."""
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, (list, tuple)):
        try:
            return json.dumps(v)
        except (TypeError, ValueError):
            pass
    return str(v)


def _number(key: str, value: Any, run_id: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TrackingError(f"run {run_id}: metric {key!r} is not a number ({type(value).__name__} {value!r:.60})")
    return float(value)


def _plain(obj: Any) -> Any:
    """JSON-able data: numpy scalars and arrays, paths and dataclasses converted."""
    def default(o: Any) -> Any:
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
        if isinstance(o, Path):
            return str(o)
        if dataclasses.is_dataclass(o) and not isinstance(o, type):
            return dataclasses.asdict(o)
        raise TypeError(f"{type(o).__name__} is not JSON serialisable")

    try:
        return json.loads(json.dumps(obj, default=default))
    except (TypeError, ValueError) as e:
        raise TrackingError(f"cannot store as JSON/YAML: {e}") from None


# ---------------------------------------------------------------------------------------------
# the MLflow model of a checkpoint

def _checked_thresholds(run_id: str, thresholds: Mapping[str, float | None], ids: Mapping[str, int]) -> dict:
    """``{machine ID: float or None}`` for the model's IDs; an ID the model does not know raises."""
    out = {}
    for mid, t in thresholds.items():
        if str(mid) not in ids:
            raise TrackingError(f"run {run_id}: threshold for machine ID {mid!r}, which the model does not know "
                                f"{sorted(ids)}")
        t = None if t is None or pd.isna(t) else float(t)
        if t is not None and not np.isfinite(t):
            raise TrackingError(f"run {run_id}: threshold of machine ID {mid!r} is {t}")
        out[str(mid)] = t
    return dict(sorted(out.items()))


# ---------------------------------------------------------------------------------------------
# --- mimimi.score: resolve a model to score with; the registry alias "champion"

_REGISTERED_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[^/]+))/?$")
_LOGGED_URI = re.compile(r"^models:/(?P<id>m-[0-9a-f]+)/?$")  # a logged model: models:/m-<id>
_RUNS_URI = re.compile(r"^runs:/(?P<run>[^/]+)(?:/|$)")


class ResolvedModel(NamedTuple):
    uri: str  # the model URI scored with (a run id resolves to its model's models:/m-... URI)
    checkpoint: Path  # the downloaded checkpoint.pt
    thresholds: dict[str, float | None] | None  # machine ID -> threshold; None: logged without thresholds
    version: int | None  # the registered version a models:/<name>@<alias> or models:/<name>/<N> URI names


class ChampionUpdate(NamedTuple):
    promoted: bool  # the alias moved to the candidate
    reason: str
    version: int | None  # the champion after the update (None: none, or not decided)
    previous_version: int | None  # the champion before (None: there was none)
    candidate: float | None  # the candidate's figure (metric of run_id)
    previous: float | None  # the previous champion's figure (metric of its run), None if not recorded


# ---------------------------------------------------------------------------------------------
# the tracker

@contextmanager
def _fluent_uri(uri: str) -> Iterator[None]:
    """MLflow's ``Model.log`` and its downloads of ``models:/`` URIs read only the process-wide tracking URI:
    ``uri`` for that call, then the old one."""
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri  # MLflow 3.17; restores env and global
    with _use_tracking_uri(uri):
        yield


@contextmanager
def _no_progress_bars() -> Iterator[None]:
    """No progress bar per artifact download (a search downloads many small ones); the setting restored after."""
    old = os.environ.get(_PROGRESS_ENV)
    os.environ[_PROGRESS_ENV] = "false"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(_PROGRESS_ENV, None)
        else:
            os.environ[_PROGRESS_ENV] = old


_PROGRESS_ENV = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"


class Tracker:
    """One tracking store and the one ``MlflowClient`` (``client``) every run, model and registry call uses.

    ``uri`` as ``resolve_tracking_uri`` takes it; None: ``$MLFLOW_TRACKING_URI`` when set, else
    ``default_tracking_uri()``. A sqlite database's folder is created; with ``create=False`` (a reader: scoring,
    evaluating a run) a sqlite store that does not exist is a ``TrackingError`` instead of a new empty store.
    Nothing process-wide is changed, so trackers of two stores can live in one process.
    """

    def __init__(self, uri: str | Path | None = None, *, create: bool = True):
        self.uri = resolve_tracking_uri(uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri())
        if (db := _sqlite_path(self.uri)) is not None:
            if not create and not db.is_file():
                raise TrackingError(f"no tracking store at {_shown(self.uri)}: nothing has been logged there "
                                    "(give --tracking-uri, or score a local checkpoint with --checkpoint)")
            db.parent.mkdir(parents=True, exist_ok=True)
        self.client = MlflowClient(self.uri)

    def __repr__(self) -> str:
        return f"Tracker({_shown(self.uri)!r})"

    def __reduce__(self):  # pickled as its URI (Tune pickles its callbacks; a client holds connections)
        return Tracker, (self.uri,)

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """MlflowException -> TrackingError: ``<what> not found in <uri>`` or ``<what>: <first line>``."""
        try:
            yield
        except MlflowException as e:
            if e.error_code == "RESOURCE_DOES_NOT_EXIST":
                raise TrackingError(f"{what} not found in {_shown(self.uri)}") from None
            raise TrackingError(f"{what}: {_first_line(e)}") from None

    def ensure_experiment(self, name: str) -> str:
        """The id of experiment ``name``, created if missing (with its artifact folder beside a sqlite store)."""
        uri = self.uri
        with self._errors(f"experiment {name!r} in {_shown(uri)}"):
            exp = self.client.get_experiment_by_name(name)
            if exp is None:
                try:
                    return self.client.create_experiment(name, artifact_location=_artifact_location(uri, name))
                except MlflowException as e:
                    if e.error_code != "RESOURCE_ALREADY_EXISTS":  # another process created it meanwhile
                        raise
                    exp = self.client.get_experiment_by_name(name)
        if exp.lifecycle_stage != "active":
            raise TrackingError(f"experiment {name!r} in {_shown(uri)} is deleted: restore it "
                                f"(mlflow experiments restore --experiment-id {exp.experiment_id}) or use another name")
        return exp.experiment_id

    def start_run(self, experiment_id: str, run_name: str, parent_run_id: str | None = None,
                  tags: dict[str, Any] | None = None) -> str:
        """Create a RUNNING run and return its id; a child of ``parent_run_id`` when given.

        Context tags as MLflow's fluent API adds them (user, source, git commit) come first.
        """
        all_tags = {k: _truncate(str(v), MAX_TAG_VAL_LENGTH) for k, v in (tags or {}).items()}
        if parent_run_id is not None:
            self._mlflow_run(parent_run_id)  # an unknown parent fails here, not in the UI later
            all_tags[PARENT_TAG] = parent_run_id
        with self._errors(f"experiment {experiment_id}"):
            run = self.client.create_run(experiment_id, run_name=run_name, tags=resolve_tags(all_tags))
        return run.info.run_id

    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        """Mark the run finished, failed or killed (``STATUSES``)."""
        if status not in STATUSES:
            raise TrackingError(f"run {run_id}: status must be one of {list(STATUSES)}, got {status!r}")
        with self._errors(f"run {run_id}"):
            self.client.set_terminated(run_id, status)

    def _mlflow_run(self, run_id: str):
        try:
            return self.client.get_run(run_id)
        except MlflowException as e:
            if e.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):  # unknown or malformed id
                raise TrackingError(f"run {run_id} not found in {_shown(self.uri)}") from None
            raise TrackingError(f"run {run_id}: {_first_line(e)}") from None

    def get_run(self, run_id: str) -> RunRecord:
        """The run as plain data; an unknown id raises ``TrackingError("run <id> not found in <uri>")``."""
        return _record(self._mlflow_run(run_id))

    def child_runs(self, parent_run_id: str) -> list[RunRecord]:
        """The (not deleted) runs of the parent's experiment tagged as its children, oldest first."""
        parent = self._mlflow_run(parent_run_id)
        out, token = [], None
        with self._errors(f"run {parent_run_id}"):
            while True:
                page = self.client.search_runs([parent.info.experiment_id], f"tags.`{PARENT_TAG}` = '{parent_run_id}'",
                                          max_results=1000, order_by=["attributes.start_time ASC"], page_token=token)
                out += [_record(r) for r in page]
                if not (token := page.token):
                    return out

    def metric_history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        """Every ``(step, value)`` logged for ``key``, by step."""
        with self._errors(f"run {run_id}"):
            hist = self.client.get_metric_history(run_id, key)
        return sorted((m.step, m.value) for m in hist)

    def log_params(self, run_id: str, params: Mapping[str, Any] | Any) -> None:
        """Log (possibly nested) params, or a config dataclass, in batches.

        MLflow refuses to change a logged param's value, and so does this.
        """
        if dataclasses.is_dataclass(params) and not isinstance(params, type):
            params = to_dict(params)
        flat = flatten_params(params)
        with self._errors(f"run {run_id}"):
            self.client.log_batch(run_id, params=[Param(k, v) for k, v in flat.items()])  # chunked by MLflow

    def log_metrics(self, run_id: str, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Log numeric metrics at ``step`` (default 0), in one batch; nested mappings are flattened with dots.

        A value that is not a real number (str, bool, None, tensor) raises ``TrackingError``; NaN and ±inf are
        logged (the sqlite store clamps ±inf to ±1.797e308).
        """
        flat: dict[str, Any] = {}

        def walk(m: Mapping[str, Any], prefix: str) -> None:
            for k, v in m.items():
                if isinstance(v, Mapping):
                    walk(v, f"{prefix}{k}.")
                else:
                    flat[f"{prefix}{k}"] = v

        walk(metrics, "")
        now = int(time.time() * 1000)
        batch = [Metric(k, _number(k, v, run_id), now, int(step or 0)) for k, v in flat.items()]
        with self._errors(f"run {run_id}"):
            self.client.log_batch(run_id, metrics=batch)

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        """Set tags (values as ``str``, cut to MLflow's limit) in one batch."""
        batch = [RunTag(str(k), _truncate(str(v), MAX_TAG_VAL_LENGTH)) for k, v in tags.items()]
        with self._errors(f"run {run_id}"):
            self.client.log_batch(run_id, tags=batch)

    def log_artifacts(self, run_id: str, local_dir: str | Path, artifact_path: str | None = None) -> None:
        """Copy a folder's contents into the run's artifacts (under ``artifact_path`` when given)."""
        if not Path(local_dir).is_dir():
            raise TrackingError(f"run {run_id}: {local_dir} is not a directory")
        with self._errors(f"run {run_id}"):
            self.client.log_artifacts(run_id, str(local_dir), artifact_path)

    def log_artifact(self, run_id: str, local_file: str | Path, artifact_path: str | None = None) -> None:
        """Copy one file into the run's artifacts (under ``artifact_path`` when given)."""
        if not Path(local_file).is_file():
            raise TrackingError(f"run {run_id}: {local_file} is not a file")
        with self._errors(f"run {run_id}"):
            self.client.log_artifact(run_id, str(local_file), artifact_path)

    def log_dict(self, run_id: str, obj: Any, artifact_file: str) -> None:
        """Store ``obj`` as ``artifact_file``: YAML for ``.yml``/``.yaml``, JSON otherwise."""
        with self._errors(f"run {run_id}"):
            self.client.log_dict(run_id, _plain(obj), artifact_file)

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        """Store ``text`` as ``artifact_file`` (e.g. ``report.md``)."""
        with self._errors(f"run {run_id}"):
            self.client.log_text(run_id, text, artifact_file)

    def log_model(self, run_id: str, checkpoint: str | Path, *, registered_name: str | None = None,
                  extra: dict[str, Any] | None = None, thresholds: Mapping[str, float | None] | None = None,
                  threshold_method: str = "youden") -> ModelRef:
        """Log the checkpoint as the run's pyfunc model ``model``, registered as ``registered_name`` when given.

        The model folder holds ``artifacts/checkpoint.pt`` and ``config.json``, ``features.json``, ``ids.json``
        (resolved config, feature settings, ID map); its MLmodel metadata has them under ``mimimi`` beside
        ``extra``, with what ``mimimi.verify`` checks before the model loads (``verify.model_record``: format,
        loader, the sha256 of every artifact and of the code file). The run is tagged ``mimimi.model_uri`` and,
        as is the registered version, ``mimimi.checkpoint_sha256`` (a run logs one model: a second one moves
        the tag, and the first no longer resolves). A bad checkpoint raises ``CheckpointError``.

        ``thresholds`` (machine ID -> score threshold, None/NaN where there is none) are stored as
        ``artifacts/thresholds.json`` and in the metadata (``mimimi.thresholds``); such a model takes a
        ``path`` or a ``waveform`` per row and answers ``score``, ``decision``, ``threshold``, ``machine_id``,
        ``pred_id`` (``mimimi.pyfunc.SCORING_SIGNATURE``); without, ``SIGNATURE``.
        """
        checkpoint = Path(checkpoint)
        loaded = load_checkpoint(checkpoint)
        if thresholds is None and loaded.scoring is not None:  # the checkpoint's normal-only thresholds
            thresholds = loaded.scoring.thresholds[loaded.scoring.default]
            threshold_method = (f"{loaded.scoring.settings['threshold_method']} quantile "
                                f"{loaded.scoring.settings['threshold_quantile']:g} of normal training scores "
                                f"({loaded.scoring.default})")
        per_id = _checked_thresholds(run_id, thresholds, loaded.ids) if thresholds is not None else None  # mimimi.score
        extra = _plain(dict(extra or {}))
        if "mimimi" in extra:
            raise TrackingError(f"run {run_id}: extra model metadata must not use the key 'mimimi'")
        run = self._mlflow_run(run_id)
        cfg = loaded.cfg
        info_json = {"config": to_dict(cfg), "features": to_dict(cfg.features), "ids": dict(loaded.ids)}
        meta = {"machine_type": loaded.meta.get("machine_type"), "model": cfg.model.name, "ids": dict(loaded.ids),
                "features": info_json["features"], "epoch": loaded.meta.get("epoch"),
                "versions": loaded.meta.get("versions")}
        if per_id is not None:  # --- mimimi.score
            meta.update(thresholds=per_id, threshold_method=threshold_method)
            if loaded.scoring is not None:
                meta.update(scorers=loaded.scoring.names, default_scorer=loaded.scoring.default)
            info_json["thresholds"] = {"method": threshold_method, "rule": "anomaly if score >= threshold",
                                       "machine_type": meta["machine_type"], "per_id": per_id}
        with tempfile.TemporaryDirectory(prefix="mimimi-model-") as tmp:
            tmp = Path(tmp)
            artifacts = {"checkpoint": tmp / "checkpoint.pt"}
            shutil.copyfile(checkpoint, artifacts["checkpoint"])
            for name, obj in info_json.items():
                artifacts[name] = tmp / f"{name}.json"
                artifacts[name].write_text(json.dumps(obj, indent=1))
            code = tmp / "mimimi_model.py"
            code.write_text(pyfunc.MODEL_CODE)
            meta.update(verify.model_record(artifacts, code))  # the digests of the files as logged
            digest = meta["checkpoint_sha256"]
            self.set_tags(run_id, {DIGEST_TAG: digest})  # before the model: a model never exists without it
            with self._errors(f"run {run_id}"), warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*An input example was not provided")  # paths: none to give
                # Created here, in the run's experiment: Model.log without an active run would put it in
                # experiment 0, whose artifacts live under the current directory (and runs:/ would miss it).
                logged = self.client.create_logged_model(
                    run.info.experiment_id, name=MODEL_NAME, source_run_id=run_id,
                    tags={"mimimi.machine_type": str(meta["machine_type"]), "mimimi.model": cfg.model.name})
                with _fluent_uri(self.uri), _no_progress_bars():  # Model.log downloads what it logged
                    info = mlflow.models.Model.log(
                        artifact_path=None, name=MODEL_NAME, flavor=mlflow.pyfunc, run_id=run_id,
                        model_id=logged.model_id, python_model=str(code),
                        artifacts={k: str(v) for k, v in artifacts.items()},
                        signature=pyfunc.SIGNATURE if per_id is None else pyfunc.SCORING_SIGNATURE,
                        pip_requirements=pyfunc.pip_requirements(), metadata={**extra, "mimimi": meta},
                        registered_model_name=registered_name)
        version = info.registered_model_version
        tags = {MODEL_URI_TAG: info.model_uri}
        if version is not None:
            tags[REGISTERED_TAG] = f"models:/{registered_name}/{version}"
            with self._errors(f"registered model {registered_name!r} version {version}"):
                self.client.set_model_version_tag(registered_name, str(version), DIGEST_TAG, digest)
        self.set_tags(run_id, tags)
        return ModelRef(info.model_uri, int(version) if version is not None else None)

    def _model_uri_of(self, run_id: str) -> str:
        """The run's model: its ``mimimi.model_uri``, else a logged model ``model`` linked to it, else the
        model of the run its ``mimimi.best_model_run_id`` names (followed once per hop)."""
        seen = []
        while True:
            run = self._mlflow_run(run_id)
            if uri := run.data.tags.get(MODEL_URI_TAG):
                return uri
            outputs = run.outputs.model_outputs if run.outputs else []
            for out in reversed(outputs):  # a model logged by other code, newest first
                with self._errors(f"run {run_id}"):
                    if self.client.get_logged_model(out.model_id).name == MODEL_NAME:
                        return f"models:/{out.model_id}"
            seen.append(run_id)
            run_id = run.data.tags.get(BEST_MODEL_RUN_TAG)
            if not run_id:
                via = f" (followed {BEST_MODEL_RUN_TAG} from {' -> '.join(seen[:-1])})" if len(seen) > 1 else ""
                raise TrackingError(f"run {seen[-1]} has no logged model{via} in {_shown(self.uri)}")
            if run_id in seen:
                raise TrackingError(f"run {seen[0]}: {BEST_MODEL_RUN_TAG} tags form a loop ({' -> '.join(seen + [run_id])})")

    def load_checkpoint_from_run(self, run_id: str, dst_dir: str | Path | None = None) -> Path:
        """Download the checkpoint of the model logged in ``run_id`` (or in the run its
        ``mimimi.best_model_run_id`` tag names) into ``dst_dir`` (default: a new temporary folder).

        Returns the path of ``<dst_dir>/checkpoint.pt``; ``mimimi.checkpoint.load_checkpoint`` loads it. Only
        the MLmodel and the checkpoint are downloaded; the checkpoint's sha256 must match the metadata's and
        the source run's ``mimimi.checkpoint_sha256`` tag (as ``resolve_model`` checks it), else
        ``verify.ModelVerificationError``.
        """
        model_uri = self._model_uri_of(run_id)
        name = f"run {run_id}: model {model_uri}"
        with self._errors(name), _no_progress_bars():
            logged = self.client.get_logged_model(model_uri.removeprefix("models:/"))
            root = logged.artifact_location
            with tempfile.TemporaryDirectory(prefix="mimimi-mlmodel-") as tmp:
                mlflow.artifacts.download_artifacts(artifact_uri=f"{root}/MLmodel", dst_path=tmp, tracking_uri=self.uri)
                conf = verify.read_mlmodel(tmp, name)
            flavor = (conf.get("flavors") or {}).get("python_function") or {}
            rel = ((flavor.get("artifacts") or {}).get("checkpoint") or {}).get("path")
            if not rel:
                raise TrackingError(f"{name} has no checkpoint artifact (not logged by mimimi?)")
            dst = Path(dst_dir) if dst_dir is not None else Path(tempfile.mkdtemp(prefix="mimimi-checkpoint-"))
            verify.inside(dst, rel, "artifact 'checkpoint'", name)  # a path that stays below the model's root
            dst.mkdir(parents=True, exist_ok=True)
            path = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"{root}/{rel}", dst_path=str(dst),
                                                            tracking_uri=self.uri))
        meta = (conf.get("metadata") or {}).get("mimimi") or {}
        got = verify.check_file(path, rel, meta.get("checkpoint_sha256"), name)
        fmt = meta.get("format", 0)
        self._check_digest(name, got, fmt != 0 or not isinstance(fmt, int), logged.source_run_id, None)
        return path

    def resolve_model(self, model_uri: str | None = None, *, run_id: str | None = None,
                      dst_dir: str | Path | None = None) -> ResolvedModel:
        """Download the model of ``model_uri`` (``models:/mimimi-fan@champion``, ``models:/mimimi-fan/3``,
        ``models:/m-...``, ``runs:/<run>/model``) or of run ``run_id`` (its model, or that of the run its
        ``mimimi.best_model_run_id`` names) into ``dst_dir`` (default: a new temporary folder), and verify it
        before anything in it is loaded.

        ``mimimi.verify.verify_model_dir`` checks the folder (MIMIMI's code file, every file's sha256 against
        the MLmodel metadata); then the checkpoint's sha256 is compared with the ``mimimi.checkpoint_sha256``
        tag of the run that logged the model, as the store says (the registered version's run, the logged
        model's source run; for other ``models:/`` forms the MLmodel's ``run_id``), and of the registered
        version when it has one. That catches files and metadata rewritten together by someone who cannot
        write runs; whoever can write runs can write that tag too. A model logged before digests were recorded
        has no such tag and passes on its metadata alone; a URI outside the store (a folder, ``s3://...``) is
        checked against its own metadata only.

        An unknown model, alias, version or run raises a one-line ``TrackingError``; a refused model a one-line
        ``verify.ModelVerificationError`` (a ``CheckpointError``).
        """
        if (model_uri is None) == (run_id is None):
            raise TrackingError("give a model URI or a run id (one of them)")
        if run_id is not None:
            model_uri = self._model_uri_of(run_id)
        name = f"model {model_uri}"
        version, source_run, version_digest = None, None, None
        tracked = model_uri.startswith(("models:/", "runs:/"))
        with self._errors(name), _no_progress_bars():
            if (m := _REGISTERED_URI.match(model_uri)) and (m["alias"] or m["version"]):
                mv = (self.client.get_model_version_by_alias(m["name"], m["alias"]) if m["alias"]
                      else self.client.get_model_version(m["name"], m["version"]))
                version, source_run, version_digest = int(mv.version), mv.run_id, (mv.tags or {}).get(DIGEST_TAG)
            elif m := _LOGGED_URI.match(model_uri):
                source_run = self.client.get_logged_model(m["id"]).source_run_id
            elif m := _RUNS_URI.match(model_uri):
                source_run = m["run"]
            dst = Path(dst_dir) if dst_dir is not None else Path(tempfile.mkdtemp(prefix="mimimi-model-"))
            dst.mkdir(parents=True, exist_ok=True)
            with _fluent_uri(self.uri):  # a models:/ URI is looked up in the process-wide store
                local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(dst),
                                                                 tracking_uri=self.uri))
        verified = verify.verify_model_dir(local, name)  # reads files only: nothing is imported or unpickled
        if tracked:
            if source_run is None and not _REGISTERED_URI.match(model_uri) and not _LOGGED_URI.match(model_uri):
                source_run = verify.read_mlmodel(local, name).get("run_id")  # models:/<name>/latest and the like
            self._check_digest(name, verified.checkpoint_sha256, bool(verified.format), source_run, version_digest)
        thr = verified.artifacts.get("thresholds")
        return ResolvedModel(model_uri, verified.artifacts["checkpoint"],
                             pyfunc.read_thresholds(thr) if thr else None, version)

    def _check_digest(self, name: str, got: str, recorded_digests: bool, source_run: str | None,
                      version_digest: str | None) -> None:
        """The checkpoint's sha256 ``got`` against the ``mimimi.checkpoint_sha256`` tags of its registered version
        (when set) and of its source run (required when the model ``recorded_digests``: ``format`` >= 1)."""
        if version_digest is not None and version_digest != got:
            raise verify.ModelVerificationError(
                f"{name}: checkpoint sha256 {got[:16]}… does not match the registered version's {DIGEST_TAG} "
                f"{version_digest[:16]}…")
        recorded = None
        if source_run:
            try:
                recorded = self._mlflow_run(source_run).data.tags.get(DIGEST_TAG)
            except TrackingError as e:
                if recorded_digests:
                    raise verify.ModelVerificationError(f"{name}: cannot read the run that logged it ({e})") from None
        elif recorded_digests:
            raise verify.ModelVerificationError(f"{name}: the store names no run that logged it, so its "
                                                f"{DIGEST_TAG} cannot be checked")
        if recorded is None:
            if recorded_digests:
                raise verify.ModelVerificationError(f"{name}: the run that logged it ({source_run}) has no "
                                                    f"{DIGEST_TAG} tag")
            return  # logged before digests were recorded: its metadata is all there is
        if recorded != got:
            raise verify.ModelVerificationError(
                f"{name}: checkpoint sha256 {got[:16]}… does not match the {DIGEST_TAG} tag {recorded[:16]}… of "
                f"the run that logged it ({source_run})")

    def load_pyfunc(self, model_uri: str):
        """``mlflow.pyfunc.load_model(model_uri)`` from this store (the model ``mlflow models serve`` runs)."""
        with self._errors(f"model {model_uri}"), _no_progress_bars(), _fluent_uri(self.uri):
            return mlflow.pyfunc.load_model(model_uri)

    def describe_version(self, name: str, version: int, description: str, tags: Mapping[str, Any]) -> None:
        """Set the description and tags of version ``version`` of registered model ``name`` (the registry page)."""
        with self._errors(f"registered model {name!r} version {version}"):
            self.client.update_model_version(name, str(version), description=description)
            for k, v in tags.items():
                self.client.set_model_version_tag(name, str(version), k, _truncate(_param_str(v), MAX_TAG_VAL_LENGTH))

    def set_champion(self, name: str, version: int) -> None:
        """Point the alias ``champion`` of registered model ``name`` at ``version``."""
        with self._errors(f"registered model {name!r} version {version}"):
            self.client.set_registered_model_alias(name, champion.ALIAS, str(version))

    def champion_version(self, name: str) -> int | None:
        """The version the alias ``champion`` of ``name`` points at; None when there is none (or no such model)."""
        mv = self._champion(name)
        return None if mv is None else int(mv.version)

    def _champion(self, name: str):
        try:
            return self.client.get_model_version_by_alias(name, champion.ALIAS)
        except MlflowException as e:
            if e.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return None
            raise TrackingError(f"registered model {name!r}: {_first_line(e)}") from None

    def update_champion(self, name: str, version: int, metric: str, run_id: str) -> ChampionUpdate:
        """Move ``champion`` of ``name`` to ``version`` if ``champion.decide`` says so, comparing ``metric`` of
        ``run_id`` (the run that logged the candidate) with ``metric`` of the current champion's run.

        Recorded in ``run_id``: params ``champion.rule`` and ``champion.metric``, and tags ``mimimi.champion.*``:
        promoted, reason (in words, with both figures), version, previous_version, candidate and previous (the
        two figures; "" when not recorded). No metrics: the candidate's figure is ``metric`` itself.
        """
        if version is None:
            raise TrackingError(f"run {run_id}: the model was not registered as {name!r}: no version to make champion")
        candidate = self._mlflow_run(run_id).data.metrics.get(metric)
        current = self._champion(name)
        previous = None
        if current is not None and current.run_id:
            try:
                previous = self.client.get_run(current.run_id).data.metrics.get(metric)
            except MlflowException as e:
                if e.error_code != "RESOURCE_DOES_NOT_EXIST":  # any other failure: never promote blind
                    raise TrackingError(f"registered model {name!r}: cannot read the champion's run {current.run_id} "
                                        f"({_first_line(e)}); the champion stays") from None
                previous = None  # the champion's run was deleted for good: no recorded figure
        if current is not None and int(current.version) == int(version):
            decision = champion.Decision(False, f"version {version} is already the champion")
        else:
            decision = champion.decide(candidate, previous, has_champion=current is not None)
            if current is not None:  # figures were compared: say which
                decision = decision._replace(reason=f"{metric}: {decision.reason}")
        if decision.promote:
            self.set_champion(name, version)
        before = None if current is None else int(current.version)
        after = int(version) if decision.promote else before
        self.log_params(run_id, {"champion.rule": champion.RULE.format(metric=metric), "champion.metric": metric})
        self.set_tags(run_id, {"mimimi.champion.promoted": str(decision.promote).lower(),
                               "mimimi.champion.reason": decision.reason, "mimimi.champion.version": str(after),
                               "mimimi.champion.previous_version": "" if before is None else str(before),
                               "mimimi.champion.candidate": "" if candidate is None else f"{candidate:.6g}",
                               "mimimi.champion.previous": "" if previous is None else f"{previous:.6g}"})
        return ChampionUpdate(decision.promote, decision.reason, after, before, candidate, previous)
