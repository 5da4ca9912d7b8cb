"""Features: complex STFT segments for the complex network, log-mel frames for the AE baseline,
and the on-disk cache that makes every wav be decoded and transformed once.

Shapes: a 10 s clip at 16 kHz -> complex STFT (513, 313) -> evaluation segments (5, 513, 64)
with the default settings (hop 64 frames, the last segment aligned to the clip's end).

>>> import numpy as np
>>> cfg = FeatureConfig()
>>> spec = complex_stft(np.zeros(160000, np.float32), cfg)
>>> spec.shape, spec.dtype
((513, 313), dtype('complex64'))
>>> segment_starts(313, 64, 64)
[0, 64, 128, 192, 249]
>>> eval_segments(spec, cfg).shape
(5, 513, 64)
"""
from __future__ import annotations

import hashlib
import json
import math
import multiprocessing
import os
import signal
import sys
import tempfile
import time
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Iterator, Literal, NamedTuple

import numpy as np
import torch
import torchaudio.functional as AF
from tqdm import tqdm

from mimimi.config import FeatureConfig
from mimimi.data.audio import load_audio

Kind = Literal["stft", "logmel"]
KINDS: tuple[Kind, ...] = ("stft", "logmel")


@lru_cache(maxsize=8)
def _window(n_fft: int) -> torch.Tensor:
    return torch.hann_window(n_fft)


@lru_cache(maxsize=8)
def _mel_fbank(n_freq: int, n_mels: int, sample_rate: int) -> torch.Tensor:
    # Slaney scale and area normalisation, as librosa's defaults used by the DCASE baseline
    return AF.melscale_fbanks(n_freq, 0.0, sample_rate / 2, n_mels, sample_rate, norm="slaney", mel_scale="slaney")


def _stft(wave: np.ndarray, cfg: FeatureConfig) -> torch.Tensor:
    """(n,) float -> (n_freq, 1 + n // hop) complex; centred frames, reflect padding, Hann window."""
    return AF.spectrogram(
        torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32)), pad=0, window=_window(cfg.n_fft),
        n_fft=cfg.n_fft, hop_length=cfg.hop_length, win_length=cfg.n_fft, power=None, normalized=False,
        center=True, pad_mode="reflect",
    )


def complex_stft(wave: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """Complex STFT (n_freq, frames) complex64, normalised per clip when ``cfg.normalize == "clip"``.

    Per-clip normalisation (the seed's): real and imaginary parts each to zero mean and unit
    standard deviation over the whole clip, so recording gain does not decide the machine ID.
    """
    spec = _stft(wave, cfg)
    if cfg.normalize == "clip":
        re, im = spec.real, spec.imag
        re = (re - re.mean()) / (re.std() + 1e-8)
        im = (im - im.mean()) / (im.std() + 1e-8)
        spec = torch.complex(re, im)
    return spec.numpy().astype(np.complex64, copy=False)


def log_mel(wave: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """Log-mel power spectrogram (n_mels, frames) float32 in dB, as the DCASE 2020 baseline computes it."""
    power = _stft(wave, cfg).abs().pow(2)  # (F, T)
    mel = _mel_fbank(cfg.n_freq, cfg.n_mels, cfg.sample_rate).T @ power  # (n_mels, T)
    return (10.0 * torch.log10(mel + torch.finfo(torch.float32).eps)).numpy().astype(np.float32, copy=False)


def segment_starts(n_frames: int, segment: int, hop: int) -> list[int]:
    """Start frames of evaluation segments: every ``hop`` frames, plus one ending at the last frame.

    Every frame is covered; a clip shorter than one segment must be padded first.
    """
    if n_frames < segment:
        raise ValueError(f"{n_frames} frames is shorter than one segment of {segment}")
    starts = list(range(0, n_frames - segment + 1, hop))
    if starts[-1] + segment < n_frames:
        starts.append(n_frames - segment)
    return starts


def eval_segments(spec: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """(n_freq, frames) -> (n_segments, n_freq, segment_frames): all segments of a clip."""
    seg = cfg.segment_frames
    return np.stack([spec[:, s:s + seg] for s in segment_starts(spec.shape[1], seg, cfg.eval_hop_frames)])


def stack_frames(logmel: np.ndarray, n: int = 5) -> np.ndarray:
    """(n_mels, T) -> (T - n + 1, n * n_mels): n consecutive frames per vector, the DCASE AE's input."""
    n_mels, t = logmel.shape
    if t < n:
        raise ValueError(f"{t} frames is fewer than the {n} frames to stack")
    return np.concatenate([logmel[:, i:t - n + 1 + i] for i in range(n)], axis=0).T.copy()


def compute(wave: np.ndarray, cfg: FeatureConfig, kind: Kind) -> np.ndarray:
    """Transform a decoded waveform into the features of ``kind``."""
    return complex_stft(wave, cfg) if kind == "stft" else log_mel(wave, cfg)


def decode(path: str | Path, cfg: FeatureConfig) -> np.ndarray:
    """Decode one file the way the features expect: the only place a wav is read."""
    return load_audio(path, sample_rate=cfg.sample_rate, channel=cfg.channel, min_samples=cfg.min_samples)


def cache_settings(cfg: FeatureConfig, kind: Kind) -> dict:
    """The settings that change what ``kind`` stores (a new segment hop need not recompute the STFT)."""
    keys = ["sample_rate", "channel", "n_fft", "hop_length"]
    keys += ["normalize"] if kind == "stft" else ["n_mels"]
    if kind == "stft" and cfg.stft_cache_dtype != "complex64":  # complex64 entries keep their old key
        keys.append("stft_cache_dtype")
    return {"kind": kind, **{k: getattr(cfg, k) for k in keys}, "min_samples": cfg.min_samples}


def to_stored(features: np.ndarray, cfg: FeatureConfig, kind: Kind) -> np.ndarray:
    """What the cache writes: the features, or with ``stft_cache_dtype: float16`` the STFT as a (2, F, T)
    float16 array of its real and imaginary parts (half the bytes of complex64)."""
    if kind != "stft" or cfg.stft_cache_dtype == "complex64":
        return features
    pairs = np.stack([features.real, features.imag])
    if np.abs(pairs).max(initial=0.0) >= np.finfo(np.float16).max:
        raise ValueError(f"STFT values up to {np.abs(pairs).max():.3g} overflow float16: "
                         "use features.stft_cache_dtype: complex64 (or normalize: clip)")
    return pairs.astype(np.float16)


def from_stored(stored: np.ndarray, kind: Kind) -> np.ndarray:
    """The inverse of ``to_stored``: float16 pairs -> complex64 (a new array); anything else as it is."""
    if kind == "stft" and stored.dtype == np.float16:
        out = np.empty(stored.shape[1:], np.complex64)
        out.real, out.imag = stored[0], stored[1]
        return out
    return stored


class Located(NamedTuple):
    """One cache entry's array in its file (``FeatureCache.locate``): what ``FeatureCache.frames`` reads."""
    entry: str
    kind: str
    offset: int  # bytes before the array (the .npy header)
    shape: tuple[int, ...]
    dtype: str
    fortran: bool  # column-major: each frame's values lie together


CACHE_SUFFIX = "-mimimi-cache"  # <root><CACHE_SUFFIX>: the default cache of a data root, beside it


def cache_dir_for(data_root: str | Path, cache_dir: str | Path | None = None) -> Path:
    """Where the features of ``data_root`` are cached: ``cache_dir`` when given (``data.cache_dir``,
    ``--cache-dir``), else beside the root (``<root>-mimimi-cache``), or, where the root's folder cannot be
    written (a read-only dataset mount), in the user's cache (``$XDG_CACHE_HOME`` or ``~/.cache``:
    ``mimimi/<root name>-<hash of its path>``). Never inside the checkout unless asked.

    >>> cache_dir_for("/data/x", "/tmp/c"), cache_dir_for("/tmp/dcase2020/dev_data").name
    (PosixPath('/tmp/c'), 'dev_data-mimimi-cache')
    """
    if cache_dir:
        return Path(cache_dir).expanduser().absolute()
    root = Path(data_root).expanduser().absolute()
    parent = root.parent
    while not parent.exists() and parent != parent.parent:  # a root to be created: its first existing folder
        parent = parent.parent
    if os.access(parent, os.W_OK):
        return root.parent / f"{root.name}{CACHE_SUFFIX}"
    user = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return user / "mimimi" / f"{root.name}-{hashlib.sha1(str(root).encode()).hexdigest()[:8]}"


class FeatureCache:
    """Features on disk, one ``.npy`` per (file identity, kind, feature settings).

    A file's identity is its absolute path, size and modification time: an edited or replaced
    wav gets a new entry, an unchanged one is never decoded again. Entries are written
    atomically, so several training workers may fill the same cache at once.

    Layout: ``<cache_dir>/<kind>-<settings hash>/<identity hash>.npy`` plus ``settings.json``.
    """

    def __init__(self, cache_dir: str | Path, cfg: FeatureConfig):
        self.cache_dir = Path(cache_dir)
        self.cfg = cfg

    def kind_dir(self, kind: Kind) -> Path:
        blob = json.dumps(cache_settings(self.cfg, kind), sort_keys=True).encode()
        return self.cache_dir / f"{kind}-{hashlib.sha1(blob).hexdigest()[:12]}"

    def entry(self, path: str | Path, kind: Kind) -> Path:
        p = Path(path).resolve()
        st = p.stat()
        ident = f"{p}|{st.st_size}|{st.st_mtime_ns}".encode()
        return self.kind_dir(kind) / f"{hashlib.sha1(ident).hexdigest()}.npy"

    def get(self, path: str | Path, kind: Kind = "stft", mmap: bool = True) -> np.ndarray:
        """The features of ``path``; decoded and stored on first use. Memory-mapped by default (a float16
        STFT entry is converted to complex64 on every read instead)."""
        entry = self.entry(path, kind)
        if not entry.exists():
            self._store(entry, compute(decode(path, self.cfg), self.cfg, kind), kind)
        return from_stored(np.load(entry, mmap_mode="r" if mmap else None), kind)

    def locate(self, path: str | Path, kind: Kind = "stft") -> Located:
        """Where the features of ``path`` lie in their entry (filled on first use), for ``frames``: the file's
        identity is hashed and the header parsed once here, not on every read."""
        entry = self.entry(path, kind)
        if not entry.exists():
            self.get(path, kind)
        stored = np.load(entry, mmap_mode="r")
        return Located(str(entry), kind, int(stored.offset), tuple(stored.shape), stored.dtype.str,
                       bool(stored.flags.f_contiguous and not stored.flags.c_contiguous))

    @staticmethod
    def frames(at: Located, start: int, stop: int) -> np.ndarray:
        """Frames ``[start, stop)`` (the last axis) of a ``locate``d entry, as ``get(path)[..., start:stop]``
        would give them, as a new array. A column-major 2-D entry (the complex64 STFT ``complex_stft``
        stores) holds those frames as one run of bytes: one read of exactly them, instead of opening and
        mapping the entry (hashing its identity, parsing its header) for every training segment."""
        if len(at.shape) == 2 and at.fortran and 0 <= start <= stop <= at.shape[1]:
            dtype = np.dtype(at.dtype)
            out = np.empty((stop - start, at.shape[0]), dtype)  # (frames, F): the bytes' order
            with open(at.entry, "rb", buffering=0) as f:
                f.seek(at.offset + start * at.shape[0] * dtype.itemsize)
                got = f.readinto(out)
            if got != out.nbytes:
                raise OSError(f"{at.entry}: feature cache entry truncated (read {got} of {out.nbytes} bytes at "
                              f"frame {start}); delete it and fill the cache again")
            return out.T  # a 2-D entry is never float16 pairs (those are (2, F, T)): nothing to convert
        return np.array(from_stored(np.load(at.entry, mmap_mode="r")[..., start:stop], at.kind))

    def _store(self, entry: Path, features: np.ndarray, kind: Kind) -> None:
        entry.parent.mkdir(parents=True, exist_ok=True)
        settings = entry.parent / "settings.json"
        if not settings.exists():
            settings.write_text(json.dumps(cache_settings(self.cfg, kind), indent=1))
        fd, tmp = tempfile.mkstemp(dir=entry.parent, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.save(f, to_stored(features, self.cfg, kind))
            os.replace(tmp, entry)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def warm(self, paths: Iterable[str | Path], kinds: Iterable[Kind] = ("stft",), progress: bool = True,
             workers: int | None = None) -> int:
        """Fill the cache for ``paths``; returns how many entries were computed (0 when all cached).

        Each missing file is decoded once for all its ``kinds``, in ``workers`` processes (default: every
        usable core, ``usable_cpus()``, but no more than one per ``WARM_MIN_PER_WORKER`` files; 1: in this
        process). Entries are written atomically and each depends on its file alone, so the result is the same
        for any number of workers and any order; every entry is computed with one torch thread, so its bytes
        do not depend on the machine either. A file that cannot be decoded raises its ``AudioError`` (the work
        not yet started is cancelled; entries already written stay). ``progress``: a bar with an ETA on a
        terminal, else a line on stderr at every ~10 % with the rate and the ETA.
        """
        kinds = tuple(kinds)
        todo = {}  # path -> kinds missing (a path given twice is filled once)
        for p in paths:
            if str(p) not in todo and (missing := tuple(k for k in kinds if not self.entry(p, k).exists())):
                todo[str(p)] = missing
        if workers is not None and workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        # by default a worker per WARM_MIN_PER_WORKER files at most: each costs a process start
        workers = min(usable_cpus(), len(todo) // WARM_MIN_PER_WORKER) if workers is None else min(workers, len(todo))
        shown = _Progress(len(todo), progress)
        try:
            if workers <= 1:
                with _one_torch_thread():
                    for p, missing in todo.items():
                        _fill(self, p, missing)
                        shown.update(1)
            else:
                self._warm_pool(list(todo.items()), workers, shown)
        finally:
            shown.close()
        return sum(map(len, todo.values()))

    def _warm_pool(self, todo: list[tuple[str, tuple[Kind, ...]]], workers: int, shown: "_Progress") -> None:
        """``warm``'s work in ``workers`` processes, in chunks small enough to spread and to show progress."""
        size = max(1, min(WARM_CHUNK, math.ceil(len(todo) / (4 * workers))))
        chunks = [todo[i:i + size] for i in range(0, len(todo), size)]
        # fork where there is one (as torch's DataLoader workers are started): no re-import of the caller
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else None
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method),
                                   initializer=_pool_worker_init)
        try:
            pending = {pool.submit(_fill_chunk, self.cache_dir, self.cfg, chunk): len(chunk) for chunk in chunks}
            while pending:
                done, _ = wait(pending, return_when=FIRST_EXCEPTION)
                for f in done:
                    f.result()  # a worker's AudioError (naming its file) is raised here
                    shown.update(pending.pop(f))
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)  # the chunks under way finish; no new one starts
            raise
        pool.shutdown(wait=True)

    def size_bytes(self) -> int:
        return sum(f.stat().st_size for f in self.cache_dir.rglob("*.npy")) if self.cache_dir.exists() else 0


WARM_CHUNK = 32  # files per task of warm's pool, at most
WARM_MIN_PER_WORKER = 8  # by default, warm starts one worker process per this many files to fill at most


def usable_cpus() -> int:
    """The cores this process may run on (its affinity mask), else the machine's count."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


@contextmanager
def _one_torch_thread() -> Iterator[None]:
    """One intra-op torch thread inside: the per-clip normalisation's reductions then sum in one order, so an
    entry's bytes do not depend on the thread count (they do, in the last bit, with several)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _pool_worker_init() -> None:
    """A ``warm`` pool worker: one torch thread (as ``_one_torch_thread``; the pool is the parallelism), and
    Ctrl-C left to the parent, which cancels the work."""
    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _fill(cache: FeatureCache, path: str, missing: tuple[Kind, ...]) -> None:
    wave = decode(path, cache.cfg)
    for k in missing:
        cache._store(cache.entry(path, k), compute(wave, cache.cfg, k), k)


def _fill_chunk(cache_dir: Path, cfg: FeatureConfig, chunk: list[tuple[str, tuple[Kind, ...]]]) -> int:
    """One task of ``warm``'s pool, in a worker process."""
    cache = FeatureCache(cache_dir, cfg)
    for path, missing in chunk:
        _fill(cache, path, missing)
    return len(chunk)


class _Progress:
    """``warm``'s progress: a tqdm bar (with its ETA) on a terminal; elsewhere (a log, a pipe) one line on
    stderr at every ~10 % with the rate and the ETA; nothing when ``enabled`` is false or there is no work."""

    def __init__(self, total: int, enabled: bool, desc: str = "features"):
        self.total, self.done, self.desc = total, 0, desc
        self.on = bool(enabled and total)
        self.bar = tqdm(total=total, desc=desc, unit="clip") if self.on and sys.stderr.isatty() else None
        self.start, self.next_line = time.perf_counter(), 1

    def update(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.on and self.done * 10 >= self.next_line * self.total:
            elapsed = time.perf_counter() - self.start
            rate = self.done / elapsed if elapsed > 0 else float("inf")
            eta = (self.total - self.done) / rate if rate > 0 else float("inf")
            print(f"{self.desc}: {self.done}/{self.total} clips ({100 * self.done / self.total:.0f} %), "
                  f"{rate:.1f} clips/s, ETA {_duration(eta)}", file=sys.stderr, flush=True)
            self.next_line = self.done * 10 // self.total + 1

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _duration(seconds: float) -> str:
    """An ETA in words.

    >>> _duration(3725.0), _duration(42.4), _duration(float("inf"))
    ('1 h 02 min', '42 s', '?')
    """
    if not math.isfinite(seconds):
        return "?"
    s = round(seconds)
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{s // 60} min {s % 60:02d} s" if s >= 60 else f"{s} s"
