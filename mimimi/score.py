"""Score new recordings with a tuned model: anomaly score, machine ID and decision per file.

    python -m mimimi.score --machine-type fan PATH...                 # models:/mimimi-fan@champion
    python -m mimimi.score --model models:/mimimi-fan/3 PATH... [--format table|csv|json] [--output FILE]
    python -m mimimi.score --run-id RUN_ID PATH... [--machine-id 02] [--tracking-uri URI]

PATH is a wav file or a folder (searched recursively for ``*.wav``). Files of any channel count and
sample rate are decoded as for training (``mimimi.features.decode``). The machine ID comes from the file
name (``..._id_02_...``) or an ``id_02`` folder, or from ``--machine-id``. ``--scorer`` picks the anomaly
score (``mimimi.scoring``: ``knn-stats`` by default, ``knn``, ``ce``, ``mahalanobis``, ``gmm``, ``recon``). A clip is
``anomaly`` when its score is >= the threshold stored with the model for that scorer and machine ID
(fitted to normal training clips only, never to test data), else ``normal``; no decision where the model
has no threshold for that ID.

A file that cannot be scored is reported on stderr (one line naming it), the others are still scored,
and the exit status is 1; 2 when nothing can be scored (usage, a model that cannot be loaded, or no
file that could be scored).

The same scoring serves the MLflow pyfunc model (``score_frame``): one row per clip, a ``path`` or a
``waveform`` (mono samples at the model's sample rate, 16 kHz), and an optional ``machine_id``; the
``scorer`` and ``aggregate`` params.

>>> decide(0.35, 0.35), decide(0.34, 0.35), decide(0.34, None)
('anomaly', 'normal', None)
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pandas as pd

from mimimi import kinds
from mimimi.checkpoint import CheckpointError, Loaded, load_checkpoint
from mimimi.config import merge
from mimimi.data.audio import AudioError, check_length, extend
from mimimi.data.index import machine_id_from_path, normalize_id
from mimimi.evaluate import score_clips
from mimimi.features import FeatureCache
from mimimi.scoring import Features, ScoringError

if TYPE_CHECKING:  # MLflow only for a model given by URI or run id
    from mimimi.tracking import Tracker

ANOMALY, NORMAL = "anomaly", "normal"
AGGREGATES = ("mean", "max")
FORMATS = ("table", "csv", "json")
COLUMNS = ["path", "machine_id", "score", "decision", "threshold", "pred_id"]  # the CLI's output
MODEL_COLUMNS = ["score", "decision", "threshold", "machine_id", "pred_id"]  # the pyfunc's, with thresholds (+ error)
PLAIN_MODEL_COLUMNS = ["score", "pred_id"]  # the pyfunc's, for a model logged without thresholds (+ error)

Thresholds = Mapping[str, float | None]  # machine ID -> threshold (None: the ID had one test class)


class ScoreError(ValueError):
    """A clip (or request row) that cannot be scored, in one line naming the file or the row."""


class Scored(NamedTuple):
    scores: pd.DataFrame  # COLUMNS, one row per scored file, in input order
    errors: list[tuple[str, str]]  # (path, one-line message) per file that could not be scored


class Model(NamedTuple):
    """A model to score with: the checkpoint, the per-ID thresholds logged beside it (models from before
    thresholds were stored in the checkpoint; None otherwise) and where it came from."""

    loaded: Loaded
    thresholds: dict[str, float | None] | None
    uri: str  # models:/mimimi-fan@champion, runs:/..., a logged model id
    version: int | None  # registry version, when the URI names a registered model


# ---------------------------------------------------------------------------------------------
# decisions and machine IDs

def decide(score: float, threshold: float | None) -> str | None:
    """``"anomaly"`` when ``score >= threshold`` (the rule of ``metrics.youden_threshold``), ``"normal"``
    below it, None without a threshold."""
    if threshold is None or math.isnan(threshold):
        return None
    return ANOMALY if score >= threshold else NORMAL


def _threshold(thresholds: Thresholds | None, machine_id: str) -> float | None:
    t = (thresholds or {}).get(machine_id)
    return None if t is None or math.isnan(t) else float(t)


MODEL_ID_HINT = "give a machine_id column, or a file name ..._id_XX_... or section_XX_... (2021+), or an id_XX folder"
CLI_ID_HINT = "give --machine-id, or a file name ..._id_XX_... or section_XX_... (2021+), or an id_XX folder"


def machine_id_of(key: str, given: Any, ids: Mapping[str, int], path: str | None = None,
                  hint: str = MODEL_ID_HINT) -> str:
    """The clip's machine ID: ``given`` ("02", "id_02", 2), else parsed from ``path``; one the model knows."""
    mid = normalize_id(given) or (machine_id_from_path(path) if path else None)
    if mid is None:
        raise ScoreError(f"{key}: no machine ID ({hint})")
    if mid not in ids:
        raise ScoreError(f"{key}: machine ID {mid!r} is not one the model was trained on {sorted(ids)}")
    return mid


# ---------------------------------------------------------------------------------------------
# scoring

def thresholds_for(loaded: Loaded, scorer: str | None, logged: Thresholds | None = None) -> dict | None:
    """The per-ID thresholds to decide with: the checkpoint's for ``scorer`` (normal-only), else ``logged``
    (a model logged before checkpoints carried them, native score only). Unknown scorers raise ScoreError."""
    if loaded.scoring is None:
        if scorer not in (None, "", "default", kinds.of(loaded.cfg).native):
            raise ScoreError(f"scorer {scorer!r}: this model has no fitted scorers, only its native score")
        return dict(logged) if logged is not None else None
    try:
        return dict(loaded.scoring.thresholds[loaded.scoring.check(scorer)])
    except ScoringError as e:
        raise ScoreError(str(e)) from None


def _waveform(key: str, value: Any, loaded: Loaded) -> np.ndarray:
    """A waveform cell -> mono float32 at the model's rate, extended to one segment as ``load_audio`` does."""
    try:
        wave = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        wave = None
    if wave is None or wave.ndim != 1 or wave.size == 0:
        raise ScoreError(f"{key}: the waveform must be a non-empty list of numbers (mono samples at "
                         f"{loaded.cfg.features.sample_rate} Hz)")
    if not np.isfinite(wave).all():
        raise ScoreError(f"{key}: the waveform contains NaN or infinite samples")
    f = loaded.cfg.features
    try:
        return extend(check_length(key, wave.astype(np.float32), f.min_samples, f.sample_rate), f.min_samples)
    except AudioError as e:
        raise ScoreError(str(e)) from None


def _score(loaded: Loaded, keys: Sequence[str], ids: Sequence[str], features: Features,
           aggregate: str, device: str, scorer: str | None = None) -> pd.DataFrame:
    clips = pd.DataFrame({"path": list(keys), "machine_id": list(ids), "label": "unknown"})
    try:
        return score_clips(loaded.model, loaded.cfg, clips, loaded.ids, features, aggregate, device,
                           fitted=loaded.scoring, scorer=scorer)
    except (AudioError, ScoringError) as e:
        raise ScoreError(str(e)) from None
    except OSError as e:  # a file that vanished or cannot be read
        raise ScoreError(f"{e.filename or 'a file'}: {e.strerror or e}") from None


def _decode_alone(cache: FeatureCache, kind: str, path: str) -> None:
    """Decode ``path`` into ``cache`` now, so that a bad file fails alone: ``ScoreError`` in one line naming it."""
    try:
        cache.get(path, kind)
    except AudioError as e:
        raise ScoreError(str(e).splitlines()[0]) from None
    except OSError as e:  # vanished since it was listed, or unreadable
        raise ScoreError(f"{path}: {e.strerror or e}") from None


def _with_decisions(scored: pd.DataFrame, thresholds: Thresholds | None) -> pd.DataFrame:
    """``threshold``, ``decision`` and ``pred_id`` as object columns, None where missing (JSON null; pandas
    would turn None into NaN in a float or str column)."""
    out = scored.copy()
    thr = [_threshold(thresholds, m) for m in out["machine_id"]]

    def column(values) -> pd.Series:
        return pd.Series([None if v is None or (isinstance(v, float) and math.isnan(v)) else v for v in values],
                         index=out.index, dtype=object)

    out["threshold"] = column(thr)
    out["decision"] = column([decide(s, t) for s, t in zip(out["score"], thr)])
    out["pred_id"] = column(out["pred_id"].tolist())
    return out


def _cell(row: pd.Series, column: str) -> Any:
    v = row.get(column)
    if v is None or (np.isscalar(v) and pd.isna(v)) or (isinstance(v, str) and not v.strip()):
        return None
    return v


def score_frame(loaded: Loaded, model_input: pd.DataFrame, *, thresholds: Thresholds | None = None,
                aggregate: str = "mean", device: str = "cpu", scorer: str | None = None) -> pd.DataFrame:
    """The pyfunc model's predict: one output row per input row, in input order.

    Input columns: ``path`` (an audio file) or ``waveform`` (a list of mono samples at the model's sample
    rate) per row, and an optional ``machine_id`` (else parsed from the path). Output: ``MODEL_COLUMNS``
    with thresholds (the checkpoint's for ``scorer``, else ``thresholds``), else ``PLAIN_MODEL_COLUMNS``
    (what a model without thresholds returns), and ``error``: None for a scored row; for a row that
    cannot be scored, one line naming it (and ``score`` NaN, no decision). Raises ``ScoreError`` for the
    request itself (no ``path`` / ``waveform`` column, a bad ``scorer`` or ``aggregate``) and when not
    one row could be scored.
    """
    if aggregate not in AGGREGATES:
        raise ScoreError(f"aggregate must be 'mean' or 'max', got {aggregate!r}")
    thresholds = thresholds_for(loaded, scorer, thresholds)
    if not {"path", "waveform"} & set(model_input.columns):
        got = f"got columns {list(model_input.columns)}" if len(model_input.columns) else "got none of them"
        raise ScoreError(f"model input needs a 'path' column (audio files) or a 'waveform' column (mono samples "
                         f"at {loaded.cfg.features.sample_rate} Hz), {got}; columns other than path, waveform and "
                         "machine_id are ignored")
    columns = (MODEL_COLUMNS if thresholds is not None else PLAIN_MODEL_COLUMNS) + ["error"]
    kind = kinds.of(loaded.cfg).feature
    n = len(model_input)
    errors: list[str | None] = [None] * n
    given: list[str | None] = [None] * n
    keys, ids, rows, waves = [], [], [], {}
    with tempfile.TemporaryDirectory(prefix="mimimi-features-") as tmp:
        cache = FeatureCache(tmp, loaded.cfg.features)
        for i, (_, row) in enumerate(model_input.iterrows()):
            path, wave = _cell(row, "path"), row.get("waveform")
            has_wave = wave is not None and not (np.isscalar(wave) and pd.isna(wave))
            key = str(path) if path is not None else f"<waveform {i}>"
            try:
                if path is not None and has_wave:
                    raise ScoreError(f"row {i}: give a path or a waveform, not both")
                if path is None and not has_wave:
                    raise ScoreError(f"row {i}: no path and no waveform")
                if not has_wave and not Path(key).is_file():
                    raise ScoreError(f"{key}: no such file")
                mid = machine_id_of(key, _cell(row, "machine_id"), loaded.ids, None if has_wave else key)
                if has_wave:
                    waves[key] = _waveform(key, wave, loaded)
                else:
                    _decode_alone(cache, kind, key)
            except ScoreError as e:
                errors[i] = str(e).splitlines()[0]
                given[i] = normalize_id(_cell(row, "machine_id"))
                continue
            keys.append(key)
            ids.append(mid)
            rows.append(i)
        if n and not keys:
            bad = [e for e in errors if e]
            more = f" (and {len(bad) - 1} more row(s) that cannot be scored)" if len(bad) > 1 else ""
            raise ScoreError(f"{bad[0]}{more}")
        scored = (_score(loaded, keys, ids, Features(cache, waves=waves), aggregate, device, scorer) if keys
                  else pd.DataFrame({"path": [], "machine_id": [], "score": [], "pred_id": []}))
    scored = _with_decisions(scored, thresholds)
    out = pd.DataFrame({"score": np.full(n, np.nan), "machine_id": pd.Series(given, dtype=object)})
    for c in ("decision", "threshold", "pred_id"):
        out[c] = pd.Series([None] * n, dtype=object)
    for c in ("score", "machine_id", "decision", "threshold", "pred_id"):
        out.loc[rows, c] = scored[c].to_numpy() if c == "score" else scored[c].tolist()
    out["error"] = pd.Series(errors, dtype=object)
    return out[columns].reset_index(drop=True)


def _batches(items: Sequence, size: int) -> Iterator[Sequence]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def score_paths(model: Model, paths: Sequence[str | Path], *, machine_id: str | None = None,
                aggregate: str = "mean", batch_size: int = 32, device: str = "cpu",
                id_hint: str = CLI_ID_HINT, scorer: str | None = None) -> Scored:
    """Score audio files ``batch_size`` at a time; a file that cannot be scored (undecodable, no or
    unknown machine ID) is listed in ``errors`` and the others are still scored."""
    if aggregate not in AGGREGATES:
        raise ScoreError(f"aggregate must be 'mean' or 'max', got {aggregate!r}")
    if batch_size < 1:
        raise ScoreError(f"batch size must be >= 1, got {batch_size}")
    loaded = model.loaded
    thresholds = thresholds_for(loaded, scorer, model.thresholds)
    kind = kinds.of(loaded.cfg).feature
    parts, errors = [], []
    for batch in _batches([str(p) for p in paths], batch_size):
        # one temporary feature cache per batch: each file is decoded once, here, so a bad one fails alone
        with tempfile.TemporaryDirectory(prefix="mimimi-features-") as tmp:
            cache = FeatureCache(tmp, loaded.cfg.features)
            keys, ids = [], []
            for p in batch:
                try:
                    mid = machine_id_of(p, machine_id, loaded.ids, p, id_hint)
                    _decode_alone(cache, kind, p)
                except ScoreError as e:
                    errors.append((p, str(e).splitlines()[0]))
                    continue
                keys.append(p)
                ids.append(mid)
            if keys:
                parts.append(_score(loaded, keys, ids, Features(cache), aggregate, device, scorer))
    scored = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
        {"path": [], "machine_id": [], "score": pd.Series(dtype="float64"), "pred_id": []})
    return Scored(_with_decisions(scored, thresholds)[COLUMNS], errors)


# ---------------------------------------------------------------------------------------------
# models, files, output

def load_model(tracker: Tracker, model_uri: str | None = None, *, run_id: str | None = None) -> Model:
    """The model of a ``models:/`` or ``runs:/`` URI, or of an MLflow run (a search's parent run: its best
    model) in ``tracker``'s store, with its stored thresholds. Raises ``TrackingError`` or ``CheckpointError``
    (one line)."""
    with tempfile.TemporaryDirectory(prefix="mimimi-model-") as d:
        resolved = tracker.resolve_model(model_uri, run_id=run_id, dst_dir=d)
        loaded = load_checkpoint(resolved.checkpoint)
    return Model(loaded, resolved.thresholds, resolved.uri, resolved.version)


def find_audio(paths: Sequence[str | Path]) -> tuple[list[str], list[tuple[str, str]]]:
    """Files as given and every ``*.wav`` below a folder (sorted); a missing path or a folder without wav
    files is an error ``(path, message)``."""
    files, errors = [], []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.suffix.lower() == ".wav" and f.is_file())
            if not found:
                errors.append((str(p), f"{p}: no .wav files in this folder"))
            files += [str(f) for f in found]
        elif p.exists():
            files.append(str(p))
        else:
            errors.append((str(p), f"{p}: no such file or folder"))
    return files, errors


def _jsonable(v: Any) -> Any:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    return v.item() if isinstance(v, np.generic) else v


def format_scores(scores: pd.DataFrame, fmt: str = "table") -> str:
    """``scores`` (``COLUMNS``) as an aligned text table, CSV, or a JSON list of records (full precision)."""
    if fmt == "csv":
        return scores.to_csv(index=False)
    if fmt == "json":
        records = [{k: _jsonable(v) for k, v in r.items()} for r in scores.astype(object).to_dict("records")]
        return json.dumps(records, indent=1, allow_nan=False) + "\n"
    if fmt != "table":
        raise ScoreError(f"format must be one of {list(FORMATS)}, got {fmt!r}")
    rows = [[str(r.path), str(r.machine_id), f"{r.score:.6g}", r.decision or "—",
             "—" if r.threshold is None or pd.isna(r.threshold) else f"{r.threshold:.6g}",
             "—" if r.pred_id is None or pd.isna(r.pred_id) else str(r.pred_id)]
            for r in scores.itertuples()]
    widths = [max([len(c)] + [len(row[i]) for row in rows]) for i, c in enumerate(COLUMNS)]
    right = {"score", "threshold"}
    lines = ["  ".join(c.rjust(w) if c in right else c.ljust(w) for c, w in zip(COLUMNS, widths)).rstrip()]
    lines += ["  ".join(v.rjust(w) if c in right else v.ljust(w) for c, v, w in zip(COLUMNS, row, widths)).rstrip()
              for row in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mimimi.score", description=__doc__.split("\n\n")[0])
    ap.add_argument("paths", nargs="+", metavar="PATH", help="wav files and folders (searched recursively)")
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--model", help="an MLflow model URI, e.g. models:/mimimi-fan@champion, models:/mimimi-fan/3")
    src.add_argument("--run-id", help="an MLflow run with a model (a search's parent run: its best model)")
    ap.add_argument("--machine-type", help="default --model: models:/mimimi-<type>@champion")
    ap.add_argument("--machine-id", help="the machine ID of every file (default: from each file's name or folder)")
    ap.add_argument("--tracking-uri", default=None, help="MLflow store (default: $MLFLOW_TRACKING_URI, else "
                                                         "sqlite under mlruns/)")
    ap.add_argument("--format", choices=FORMATS, default="table")
    ap.add_argument("--output", default=None, help="write the output to this file instead of stdout")
    ap.add_argument("--scorer", default=None, help="knn-stats (default), knn, ce, mahalanobis, gmm; recon for the "
                                                   "autoencoder")
    ap.add_argument("--aggregate", choices=AGGREGATES, default="mean", help="segment scores -> clip score")
    ap.add_argument("--batch-size", type=int, default=32, help="files decoded and scored at a time")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", choices=["fp32", "bf16", "auto"], default=None,
                    help="the network's precision (default: the model's scoring.precision)")
    args = ap.parse_args(argv)
    if not (args.model or args.run_id or args.machine_type):
        ap.error("give --model, --run-id or --machine-type")
    if args.batch_size < 1:
        ap.error(f"--batch-size must be >= 1, got {args.batch_size}")
    uri = args.model or (None if args.run_id else f"models:/mimimi-{args.machine_type}@champion")
    from mimimi import tracking  # the CLI's MLflow side; scoring itself never imports MLflow

    try:
        model = load_model(tracking.Tracker(args.tracking_uri), uri, run_id=args.run_id)
        if args.precision:
            cfg = merge(model.loaded.cfg, {"scoring": {"precision": args.precision}})
            model = model._replace(loaded=model.loaded._replace(cfg=cfg))
        mtype = model.loaded.meta.get("machine_type")
        if args.machine_type and mtype and args.machine_type != mtype:
            raise ScoreError(f"{model.uri} is a model of {mtype!r}, not of --machine-type {args.machine_type!r}")
        given = machine_id_of("--machine-id", args.machine_id, model.loaded.ids) if args.machine_id else None
        thresholds = thresholds_for(model.loaded, args.scorer, model.thresholds)
    except (tracking.TrackingError, CheckpointError, ScoreError) as e:
        print(f"error: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    files, errors = find_audio(args.paths)
    result = score_paths(model, files, machine_id=given, aggregate=args.aggregate, batch_size=args.batch_size,
                         device=args.device, scorer=args.scorer)
    errors += result.errors
    text = format_scores(result.scores, args.format)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    for _, message in errors:
        print(f"error: {message}", file=sys.stderr)
    version = f" (version {model.version})" if model.version is not None else ""
    note = "" if thresholds is not None else "; the model has no stored thresholds: no decisions"
    fitted = model.loaded.scoring
    used = fitted.check(args.scorer) if fitted is not None else kinds.of(model.loaded.cfg).native
    print(f"scored {len(result.scores)} file(s) with {model.uri}{version}, scorer {used}, {len(errors)} error(s)"
          f"{note}", file=sys.stderr)
    if errors and result.scores.empty:
        return 2  # nothing could be scored
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
