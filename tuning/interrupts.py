"""How a search stops before its end: Ctrl-C at any point (exit 130, its state saved, ``--resume`` continues
it) and the errors that end it in one line (``SearchError``, exit 1).

Standard library only: ``tuning.search`` installs the Ctrl-C handler before Ray, Optuna, MLflow and torch
load (seconds on a small machine), so Ctrl-C in the first second exits 130 with one line too.
"""
from __future__ import annotations

import contextlib
import signal

INTERRUPTED = "interrupted: continue the search with --resume (add --name to pick one)"


class SearchError(RuntimeError):
    """The search cannot run or resume (one line)."""


class SearchInterrupted(SearchError):
    """Stopped before every trial settled (Ctrl-C): ``--resume`` continues it."""


class Interrupts:
    """Ctrl-C (SIGINT) at any point of a search: exit 130 with the state saved, ``--resume`` continues.

    Outside Tune, SIGINT raises KeyboardInterrupt (main turns it into exit 130). Inside ``Tuner.fit`` Tune's
    own handler stops the trials and saves the experiment, then ``fit`` returns as if all were well; so once
    Tune has installed that handler (``TrialRuns.setup``), ``watch_tune`` wraps it to note the signal, and
    ``tune_type`` raises ``SearchInterrupted`` instead of evaluating and registering."""

    def __init__(self) -> None:
        self.requested = False

    def _note(self, previous):
        def handler(signum, frame):
            self.requested = True
            if callable(previous):
                previous(signum, frame)
            else:
                raise KeyboardInterrupt
        return handler

    def install(self) -> None:
        with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
            signal.signal(signal.SIGINT, self._note(signal.default_int_handler))

    def watch_tune(self) -> None:
        with contextlib.suppress(ValueError):
            signal.signal(signal.SIGINT, self._note(signal.getsignal(signal.SIGINT)))


interrupts = Interrupts()
