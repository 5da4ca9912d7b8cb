"""Score clips with a loaded model: a table of indexed clips (``score_clips``, what evaluation uses), or new
recordings given as audio files (``score_paths``, the ``mimimi score`` command) or as served rows
(``score_frame``, the MLflow pyfunc model). Files and rows go through one loop, ``score_items``: validate
each item, decode it, score every good one with the model, decide.

A clip is ``anomaly`` when its score is >= the threshold stored with the model for that scorer and machine
ID (fitted to normal training clips only, never to test data), else ``normal``; no decision where the model
has no threshold for that ID. An item that cannot be scored (a missing or undecodable file, no or an unknown
machine ID, a clip shorter than half a segment, a malformed waveform) gets a one-line error naming it; the
others are still scored.

Cost: every item is decoded once into a temporary feature cache of its batch, then each segment goes
through the model once; memory holds one batch of items.

>>> decide(0.35, 0.35), decide(0.34, 0.35), decide(0.34, None)
('anomaly', 'normal', None)
"""
from __future__ import annotations

import math
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import torch
from torch import nn

from mimimi import kinds
from mimimi.checkpoint import Loaded
from mimimi.config import Config
from mimimi.data.audio import AudioError, check_length, extend
from mimimi.data.index import machine_id_from_path, normalize_id
from mimimi.features import FeatureCache
from mimimi.scoring.fitted import Scoring, ScoringError, with_scores
from mimimi.scoring.outputs import Features, clip_outputs

ANOMALY, NORMAL = "anomaly", "normal"
AGGREGATES = ("mean", "max")
COLUMNS = ["path", "machine_id", "score", "decision", "threshold", "pred_id"]  # score_paths' rows
MODEL_COLUMNS = ["score", "decision", "threshold", "machine_id", "pred_id"]  # the pyfunc's, with thresholds (+ error)
PLAIN_MODEL_COLUMNS = ["score", "pred_id"]  # the pyfunc's, for a model logged without thresholds (+ error)
MODEL_ID_HINT = "give a machine_id column, or a file name ..._id_XX_... or section_XX_... (2021+), or an id_XX folder"
CLI_ID_HINT = "give --machine-id, or a file name ..._id_XX_... or section_XX_... (2021+), or an id_XX folder"

Thresholds = Mapping[str, float | None]  # machine ID -> threshold (None: no decision for that ID)


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
    uri: str  # models:/mimimi-fan@champion, runs:/..., a logged model id, or a local checkpoint file
    version: int | None  # registry version, when the URI names a registered model


class Item(NamedTuple):
    """One clip to score: a file (``path``) or samples (``wave``), the machine ID it was given (None: from the
    path), and an error found before decoding (a malformed request row)."""

    key: str  # the path, or "<waveform i>"
    path: str | None
    wave: Any = None
    given_id: Any = None
    error: str | None = None


# ---------------------------------------------------------------------------------------------
# a table of clips

@torch.no_grad()
def score_clips(model: nn.Module, cfg: Config, clips: pd.DataFrame, ids: dict[str, int], cache,
                aggregate: str = "mean", device: str | torch.device = "cpu", progress: bool = False, *,
                fitted: Scoring | None = None, scorer: str | None = None,
                all_scorers: bool = False) -> pd.DataFrame:
    """One row per clip: the index columns plus ``score`` (higher = more anomalous) and ``pred_id``; with
    ``all_scorers``, ``score_<name>`` for every scorer of ``fitted``. Without ``fitted`` scorers only the
    model's native score exists."""
    kind = kinds.of(cfg)
    out = clip_outputs(model, kind, cfg, clips, ids, cache, aggregate, device, progress)
    if fitted is None:
        if scorer not in (None, "default", kind.native) or kind.native is None:
            raise ScoringError(f"this {kind.name} checkpoint has no fitted scorers (only {kind.native!r})")
        scored = out.clips.copy()
        scored["score"] = out.native
        scored["pred_id"] = out.pred_id
        return scored
    return with_scores(out, fitted, fitted.names if all_scorers else None, scorer)


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


def machine_id_of(key: str, given: Any, ids: Mapping[str, int], path: str | None = None,
                  hint: str = MODEL_ID_HINT) -> str:
    """The clip's machine ID: ``given`` ("02", "id_02", 2), else parsed from ``path``; one the model knows."""
    mid = normalize_id(given) or (machine_id_from_path(path) if path else None)
    if mid is None:
        raise ScoreError(f"{key}: no machine ID ({hint})")
    if mid not in ids:
        raise ScoreError(f"{key}: machine ID {mid!r} is not one the model was trained on {sorted(ids)}")
    return mid


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


def scorer_used(loaded: Loaded, scorer: str | None) -> str:
    """The name of the scorer ``scorer`` stands for with this model (its default for None)."""
    return loaded.scoring.check(scorer) if loaded.scoring is not None else kinds.of(loaded.cfg).native


def with_decisions(scored: pd.DataFrame, thresholds: Thresholds | None) -> pd.DataFrame:
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


# ---------------------------------------------------------------------------------------------
# one loop for files and served rows

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


def _decode_alone(cache: FeatureCache, kind: str, path: str) -> None:
    """Decode ``path`` into ``cache`` now, so that a bad file fails alone: ``ScoreError`` in one line naming it."""
    try:
        cache.get(path, kind)
    except AudioError as e:
        raise ScoreError(str(e).splitlines()[0]) from None
    except OSError as e:  # vanished since it was listed, or unreadable
        raise ScoreError(f"{path}: {e.strerror or e}") from None


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


def score_items(loaded: Loaded, items: Sequence[Item], *, thresholds: Thresholds | None, aggregate: str = "mean",
                device: str = "cpu", scorer: str | None = None,
                id_hint: str = MODEL_ID_HINT) -> tuple[pd.DataFrame, dict[int, str]]:
    """Score ``items`` together: (the scored ones — ``path`` (the key), ``machine_id``, ``score``,
    ``decision``, ``threshold``, ``pred_id`` and ``item``, its position in ``items`` — and, per item that
    could not be scored, its one-line error). Each item is checked and decoded alone, so a bad one fails
    alone; the good ones share the forward passes."""
    kind = kinds.of(loaded.cfg).feature
    keys, ids, rows, waves, errors = [], [], [], {}, {}
    with tempfile.TemporaryDirectory(prefix="mimimi-features-") as tmp:
        cache = FeatureCache(tmp, loaded.cfg.features)
        for i, item in enumerate(items):
            try:
                if item.error:
                    raise ScoreError(item.error)
                if item.wave is None and not Path(item.path).is_file():
                    raise ScoreError(f"{item.path}: no such file")  # before "no machine ID": the file is missing
                mid = machine_id_of(item.key, item.given_id, loaded.ids, item.path, id_hint)
                if item.wave is not None:
                    waves[item.key] = _waveform(item.key, item.wave, loaded)
                else:
                    _decode_alone(cache, kind, item.path)
            except ScoreError as e:
                errors[i] = str(e).splitlines()[0]
                continue
            keys.append(item.key)
            ids.append(mid)
            rows.append(i)
        scored = (_score(loaded, keys, ids, Features(cache, waves=waves), aggregate, device, scorer) if keys
                  else pd.DataFrame({"path": [], "machine_id": [], "score": pd.Series(dtype="float64"),
                                     "pred_id": []}))
    scored = with_decisions(scored, thresholds)
    scored["item"] = rows
    return scored, errors


def _check_aggregate(aggregate: str) -> None:
    if aggregate not in AGGREGATES:
        raise ScoreError(f"aggregate must be 'mean' or 'max', got {aggregate!r}")


def _batches(items: Sequence, size: int) -> Iterator[Sequence]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def score_paths(model: Model, paths: Sequence[str | Path], *, machine_id: str | None = None,
                aggregate: str = "mean", batch_size: int = 32, device: str = "cpu",
                id_hint: str = CLI_ID_HINT, scorer: str | None = None) -> Scored:
    """Score audio files ``batch_size`` at a time; a file that cannot be scored (undecodable, no or
    unknown machine ID) is listed in ``errors`` and the others are still scored."""
    _check_aggregate(aggregate)
    if batch_size < 1:
        raise ScoreError(f"batch size must be >= 1, got {batch_size}")
    thresholds = thresholds_for(model.loaded, scorer, model.thresholds)
    parts, errors = [], []
    for batch in _batches([str(p) for p in paths], batch_size):
        items = [Item(p, p, given_id=machine_id) for p in batch]
        scored, failed = score_items(model.loaded, items, thresholds=thresholds, aggregate=aggregate,
                                     device=device, scorer=scorer, id_hint=id_hint)
        parts.append(scored)
        errors += [(batch[i], message) for i, message in sorted(failed.items())]
    scored = pd.concat(parts, ignore_index=True) if parts else with_decisions(pd.DataFrame(
        {"path": [], "machine_id": [], "score": pd.Series(dtype="float64"), "pred_id": []}), thresholds)
    return Scored(scored[COLUMNS], errors)


def _cell(row: pd.Series, column: str) -> Any:
    v = row.get(column)
    if v is None or (np.isscalar(v) and pd.isna(v)) or (isinstance(v, str) and not v.strip()):
        return None
    return v


def _row_item(i: int, row: pd.Series) -> Item:
    """A request row as an item: a path or a waveform (not both, not neither) and an optional machine_id."""
    path, wave = _cell(row, "path"), row.get("waveform")
    has_wave = wave is not None and not (np.isscalar(wave) and pd.isna(wave))
    key = str(path) if path is not None else f"<waveform {i}>"
    error = (f"row {i}: give a path or a waveform, not both" if path is not None and has_wave else
             f"row {i}: no path and no waveform" if path is None and not has_wave else None)
    return Item(key, None if has_wave else key, wave if has_wave else None, _cell(row, "machine_id"), error)


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
    _check_aggregate(aggregate)
    thresholds = thresholds_for(loaded, scorer, thresholds)
    if not {"path", "waveform"} & set(model_input.columns):
        got = f"got columns {list(model_input.columns)}" if len(model_input.columns) else "got none of them"
        raise ScoreError(f"model input needs a 'path' column (audio files) or a 'waveform' column (mono samples "
                         f"at {loaded.cfg.features.sample_rate} Hz), {got}; columns other than path, waveform and "
                         "machine_id are ignored")
    columns = (MODEL_COLUMNS if thresholds is not None else PLAIN_MODEL_COLUMNS) + ["error"]
    items = [_row_item(i, row) for i, (_, row) in enumerate(model_input.iterrows())]
    scored, errors = score_items(loaded, items, thresholds=thresholds, aggregate=aggregate, device=device,
                                 scorer=scorer)
    n = len(items)
    if n and scored.empty:
        bad = [errors[i] for i in sorted(errors)]
        more = f" (and {len(bad) - 1} more row(s) that cannot be scored)" if len(bad) > 1 else ""
        raise ScoreError(f"{bad[0]}{more}")
    out = pd.DataFrame({"score": np.full(n, np.nan),  # an unscored row keeps the machine_id it was given
                        "machine_id": pd.Series([normalize_id(it.given_id) for it in items], dtype=object)})
    for c in ("decision", "threshold", "pred_id"):
        out[c] = pd.Series([None] * n, dtype=object)
    rows = scored["item"].tolist()
    for c in ("score", "machine_id", "decision", "threshold", "pred_id"):
        out.loc[rows, c] = scored[c].to_numpy() if c == "score" else scored[c].tolist()
    out["error"] = pd.Series([errors.get(i) for i in range(n)], dtype=object)
    return out[columns].reset_index(drop=True)


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
