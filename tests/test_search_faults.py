"""Faults of the search driver injected in-process (fast): ASHA stopping a trial between Train deleting a
checkpoint and Tune logging it, a tracking call that fails inside a Tune callback, a retrained trial repeating
its epochs, and Ctrl-C while Tune runs; and Ctrl-C in the command's first second (a subprocess, stopped while
its libraries load). The end-to-end ones (a crashing worker, SIGINT and resume) are in test_search.py."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from tuning.callbacks import CHECKPOINT_PATH_KEY, TrialRuns
from tuning.finish import best_trial, pick_notes, promote, rank_trials
from tuning.interrupts import INTERRUPTED, Interrupts
from tuning.storage import resolve_checkpoint
from tuning.study import StudySearch
from tuning.worker import CHECKPOINT_FILE


def make_ckpt(run_dir: Path, n: int, with_file: bool = True) -> str:
    d = run_dir / f"checkpoint_{n:06d}"
    d.mkdir(parents=True)
    if with_file:
        (d / CHECKPOINT_FILE).write_bytes(b"weights")
    return str(d)


def test_resolve_checkpoint_after_train_deleted_the_reported_one(tmp_path):
    run = tmp_path / "train-trial_1"
    old = make_ckpt(run, 0, with_file=False)  # what Tune last saw: Train removed its file when it kept #1
    kept = make_ckpt(run, 1)
    assert resolve_checkpoint([old], str(tmp_path)) == kept
    assert resolve_checkpoint([old, kept], str(tmp_path)) == kept  # the newest reported that exists
    empty = tmp_path / "train-trial_2"
    assert resolve_checkpoint([make_ckpt(empty, 0, with_file=False)], str(tmp_path)) is None


class FakeTracking:
    """A tracker recording the calls TrialRuns makes; ``fail`` names one that raises. ``stored`` is what the
    store already holds: {trial id: (run id, logged epoch steps, run tags)} (a driver killed earlier logged it)."""

    def __init__(self, fail: str | None = None, stored: dict | None = None):
        self.calls, self.fail, self.stored = [], fail, stored or {}

    def __getattr__(self, name):
        def call(*args, **kwargs):
            self.calls.append((name, args, kwargs))
            if name == "log_model":  # the fetched file lives in a temporary folder: read it now
                self.logged_bytes = Path(args[1]).read_bytes()
            if name == self.fail:
                raise FileNotFoundError(f"{name}: no such file")
            by_run = {run: (steps, tags) for run, steps, tags in self.stored.values()}
            if name == "child_runs":
                return [SimpleNamespace(run_id=run, tags={"mimimi.trial_id": t}) for t, (run, _, _) in self.stored.items()]
            if name == "metric_history":
                return [(step, 1.0) for step in by_run.get(args[0], ([], {}))[0]]
            if name == "get_run":
                return SimpleNamespace(tags=by_run.get(args[0], ([], {}))[1])
            return f"run-{len(self.calls)}" if name == "start_run" else None
        return call

    def named(self, name):
        return [c for c in self.calls if c[0] == name]


def trial(trial_id="t1", last=None, experiment_tag=""):
    return SimpleNamespace(trial_id=trial_id, experiment_tag=experiment_tag, config={"train.lr": 1e-3},
                           last_result=last or {"training_iteration": 2},
                           run_metadata=SimpleNamespace(num_failures=1), __str__=lambda self: trial_id)


@pytest.fixture
def callbacks(tmp_path):
    def make(fail=None, stored=None):
        fake = FakeTracking(fail, stored)
        cb = TrialRuns(fake, "1", "parent", str(tmp_path), "valve", "val_proxy_auc", "max", 2)
        return cb, fake
    return make


def test_asha_stop_racing_checkpoint_deletion_logs_the_kept_checkpoint(callbacks, tmp_path):
    cb, fake = callbacks()
    run = tmp_path / "train-t1"
    gone = make_ckpt(run, 0, with_file=False)
    make_ckpt(run, 1)  # the one Train kept
    t = trial()
    cb.on_trial_start(0, [], t)
    cb.on_trial_result(0, [], t, {"epoch": 0, "val_proxy_auc": 0.6, CHECKPOINT_PATH_KEY: gone})
    cb.on_trial_complete(0, [], t)
    (_, (run_id, _path), _), = fake.named("log_model")
    assert fake.logged_bytes == b"weights" and run_id == cb.runs["t1"]
    assert fake.named("end_run")[-1][1] == (cb.runs["t1"], "FINISHED")
    # every checkpoint gone: no model, said so on the run, and the search goes on
    cb2, fake2 = callbacks()
    t2 = trial("t2")
    cb2.on_trial_result(0, [], t2, {"epoch": 0, CHECKPOINT_PATH_KEY: make_ckpt(tmp_path / "train-t2", 0, False)})
    cb2.on_trial_complete(0, [], t2)
    assert not fake2.named("log_model") and fake2.named("end_run")[-1][1][1] == "FINISHED"
    assert any("mimimi.model" in c[1][1] for c in fake2.named("set_tags"))


def test_a_failing_tracking_call_never_fails_the_trial(callbacks, tmp_path, capsys):
    cb, fake = callbacks(fail="log_model")
    t = trial()
    cb.on_trial_result(0, [], t, {"epoch": 0, CHECKPOINT_PATH_KEY: make_ckpt(tmp_path / "train-t1", 0)})
    cb.on_trial_complete(0, [], t)  # log_model raises inside: Tune must not see it
    err = capsys.readouterr().err
    assert "warning: MLflow callback on_trial_complete: FileNotFoundError" in err and len(err.splitlines()) == 1
    assert any("mimimi.callback_error" in c[1][1] for c in fake.named("set_tags"))


def test_a_retrained_trial_logs_each_epoch_once(callbacks):
    cb, fake = callbacks()
    t = trial()
    for epoch in (0, 1, 0, 1, 2):  # trained again after a resume: epochs 0 and 1 come a second time
        cb.on_trial_result(0, [], t, {"epoch": epoch, "val_loss": 1.0 - epoch / 10})
    assert [c[2]["step"] for c in fake.named("log_metrics")] == [0, 1, 2]
    state = cb.get_state()  # and across a resume (Tune saves the callback's state with the experiment)
    again, fake2 = callbacks()
    again.set_state(state)
    again.on_trial_result(0, [], t, {"epoch": 1, "val_loss": 0.9})
    assert not fake2.named("log_metrics")
    old_style = {"runs": {"t1": "r"}, "best_ckpt": {"t1": "/x/checkpoint_000000"}}  # a state saved before
    again.set_state(old_style)
    assert again.ckpts == {"t1": ["/x/checkpoint_000000"]} and again.logged_step == {}


def test_a_trial_retrained_after_a_fault_says_how_many_epochs_it_repeated(callbacks):
    cb, fake = callbacks()
    t = trial()
    for epoch in (0, 1, 0, 1):  # a worker killed after epoch 1, trained again from the start
        cb.on_trial_result(0, [], t, {"epoch": epoch})
    assert [c[1][1] for c in fake.named("set_tags")][-1] == {"mimimi.epochs_repeated": "2"}


def test_a_driver_killed_after_a_trial_finished_is_read_back_from_mlflow(callbacks, tmp_path):
    """Tune's saved state predates the kill: it has neither the trial's run nor its last epochs. The resumed
    driver finds the run by its trial id, logs no epoch twice and no second model, and records the restore."""
    from mimimi.tracking import MODEL_URI_TAG

    cb, fake = callbacks(stored={"t1": ("r1", [0, 1], {MODEL_URI_TAG: "models:/m-1"})})
    t = trial()
    cb.on_trial_start(0, [], t)
    assert not fake.named("start_run") and cb.runs == {"t1": "r1"}
    final = {"epoch": 1, "val_proxy_auc": 0.7, "restored": 1, "training_iteration": 1,
             CHECKPOINT_PATH_KEY: make_ckpt(tmp_path / "train-t1", 2)}
    cb.on_trial_result(0, [], t, final)  # the worker found its finished Train run and reported it again
    assert not fake.named("log_metrics")
    cb.on_trial_complete(0, [SimpleNamespace(trial_id="t0", status="TERMINATED")], trial(last=final))
    assert not fake.named("log_model")
    tags = {k: v for c in fake.named("set_tags") for k, v in c[1][1].items()}
    assert "not trained again" in tags["mimimi.restored"] and tags["mimimi.epochs_run"] == "2"
    assert "mimimi.epochs_repeated" not in tags
    t2 = trial("t2")
    cb.on_trial_start(0, [], t2)  # a new trial after the resume: a new run, numbered after the first
    assert fake.named("start_run")[0][1][1] == "valve · trial 02"


def test_a_tracking_failure_during_promotion_keeps_the_champion_and_is_recorded(capsys):
    from mimimi.tracking import TrackingError

    class Failing(FakeTracking):
        def update_champion(self, *args):
            raise TrackingError("registered model 'mimimi-valve': cannot read the champion's run r0 (server busy); "
                                "the champion stays")

    fake = Failing()
    update = promote(fake, "mimimi-valve", 3, "test/valve/mean_pauc", "parent")
    assert not update.promoted and update.version is None and "server busy" in update.reason
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("warning: mimimi-valve version 3: not decided") and "server busy" in err
    (_, (run, tags), _), = fake.named("set_tags")
    assert run == "parent" and tags["mimimi.champion.promoted"] == "false" and "server busy" in tags["mimimi.champion.reason"]


def test_ctrl_c_inside_tune_is_noted_and_tune_still_stops_gracefully():
    previous = signal.getsignal(signal.SIGINT)
    seen = []
    try:
        watch = Interrupts()
        watch.install()
        signal.signal(signal.SIGINT, lambda s, f: seen.append(s))  # Tune's handler, installed inside fit()
        watch.watch_tune()
        os.kill(os.getpid(), signal.SIGINT)
        assert watch.requested and seen == [signal.SIGINT]  # noted, and Tune's handler still ran
        fresh = Interrupts()
        fresh.install()  # outside Tune: Ctrl-C raises KeyboardInterrupt (exit 130 in main)
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
        assert fresh.requested
    finally:
        signal.signal(signal.SIGINT, previous)


def test_the_command_loads_no_heavy_library_before_main():
    """What lets main install its Ctrl-C handler, and Ray's console filter, before Ray, Optuna, MLflow and
    torch load: importing the command loads none of them."""
    code = "import sys, tuning.search; print(sorted({m.split('.')[0] for m in sys.modules} & {'ray', 'optuna', " \
           "'mlflow', 'torch', 'numpy', 'mimimi'}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "[]"


def _started(pid: int, wall: float = 1.0, cpu: float = 0.2, limit: float = 30.0) -> None:
    """Wait until the process has run for ``wall`` seconds and used ``cpu`` seconds of CPU: past the
    interpreter's own start-up (a SIGINT inside ``site`` is a fatal error of CPython, not the command's), and
    long before Ray, Optuna, MLflow and torch have loaded (seconds of CPU), however loaded the machine is."""
    start = time.monotonic()
    tick = os.sysconf("SC_CLK_TCK")
    while time.monotonic() - start < limit:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        used = (int(fields[11]) + int(fields[12])) / tick  # utime + stime
        if time.monotonic() - start >= wall and used >= cpu:
            return
        time.sleep(0.02)


@pytest.mark.parametrize("entry", ["script", "mimimi search"])
def test_ctrl_c_in_the_first_second_exits_130_with_one_line(tmp_path, entry):
    """Ctrl-C a second after start (the libraries still loading, before the search starts anything): exit
    status 130 and the one-line message, no KeyboardInterrupt traceback."""
    repo = Path(__file__).resolve().parents[1]
    cmd = ([sys.executable, str(repo / "tuning" / "search.py")] if entry == "script"
           else [sys.executable, "-m", "mimimi.cli", "search"])
    cmd += ["--smoke-test", "--storage-path", str(tmp_path / "storage"),
            "--tracking-uri", f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}", "--num-cpus", "2"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        _started(proc.pid)
        os.kill(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    # 130, or death by SIGINT, which a shell reports as 130 too: when the KeyboardInterrupt was raised inside
    # code that a C extension ran through PyRun_String while loading, CPython flags it "unhandled" and, though
    # main caught it and called sys.exit(130), ends the process with SIGINT
    assert proc.returncode in (130, -signal.SIGINT), (out, err)
    assert "Traceback" not in err and err.strip().splitlines()[-1] == INTERRUPTED, err
    assert not (tmp_path / "storage").exists()  # stopped before it wrote anything


def test_the_best_trial_does_not_depend_on_the_order_tune_lists_them():
    """Tied trials go to the lower tie-break figure (val_loss at their best epoch), then to the one Tune created
    first — never to a folder name: a resumed search, whose ResultGrid may list the trials in another order,
    evaluates and registers the same one, and the console says how the tie was broken."""
    import pandas as pd

    def result(number, value, loss=None):
        frame = {"m": [0.5, value], **({"val_loss": [1.0, loss]} if loss is not None else {})}
        return SimpleNamespace(error=None, path=f"/s/valve/run_trial_zz{number}", metrics={"trial_id": f"e1_{number:05d}",
                               "experiment_tag": f"{number + 1}_m={value}"},
                               metrics_dataframe=pd.DataFrame(frame))

    by_loss = [result(1, 0.875, 0.6), result(0, 0.875, 0.7), result(2, 0.5, 0.1)]
    for order in (by_loss, by_loss[::-1]):
        assert best_trial(order, "m", "max", "val_loss").metrics["trial_id"] == "e1_00001"
    ranked = rank_trials(by_loss, "m", "max", "val_loss")
    line = pick_notes(ranked, "m", "val_loss")["line"]
    assert "chose trial 02" in line and "tied with trial(s) 01, broken by val_loss (0.6 against 0.7)" in line
    no_loss = [result(1, 0.875), result(0, 0.875), result(2, 0.5)]
    for order in (no_loss, no_loss[::-1]):
        assert best_trial(order, "m", "max").metrics["trial_id"] == "e1_00000"  # the first created
    assert "broken by creation order" in pick_notes(rank_trials(no_loss, "m", "max"), "m", "val_loss")["line"]
    assert best_trial(no_loss, "m", "min").metrics["trial_id"] == "e1_00000"  # 0.5 in every trial's history


def test_the_console_the_mlflow_runs_and_the_pick_number_trials_alike():
    """A trial started second but created first is "trial 01" in its MLflow run and in the pick: the number is
    the search generator's counter that starts the experiment tag, never read from the trial id (Optuna's
    are random hex, at times all digits: CI once printed "trial 42619068")."""
    from tuning.callbacks import trial_number
    from tuning.finish import _number

    assert trial_number("1_lr=0.002", 2) == 1 and trial_number("2_lr=0.01", 1) == 2
    assert _number(SimpleNamespace(metrics={"trial_id": "42619067", "experiment_tag": "1_lr=0.002"}), 2) == 1
    assert _number(SimpleNamespace(metrics={"trial_id": "42619067"}), 2) == 2  # no tag: its place in the grid


def test_the_summary_shows_the_chosen_back_end_every_other_and_its_gain_over_stats_knn():
    import pandas as pd

    from tuning.search import baseline_markdown

    def outcome(mt, chosen, aucs):
        rows = [{"machine_type": mt, "machine_id": "mean", "key": k, "auc": a, "pauc": a - 0.1} for k, a in aucs.items()]
        return {"machine_type": mt, "backend": chosen, "comparison": pd.DataFrame(rows)}

    md = baseline_markdown([outcome("fan", "stats-knn", {"knn": 0.6, "stats-knn": 0.9}),
                            outcome("pump", "knn", {"knn": 0.8, "stats-knn": 0.7})])
    lines = md.splitlines()
    assert "| machine type | back-end (chosen on validation) | tuned model, chosen back-end | tuned model, knn | " \
           "stats-knn (no training) | chosen − stats-knn (AUC points) |" in lines
    assert "| fan | stats-knn | 90.00 / 80.00 | 60.00 / 50.00 | 90.00 / 80.00 | +0.00 |" in lines
    assert "| pump | knn | 80.00 / 70.00 | 80.00 / 70.00 | 70.00 / 60.00 | +10.00 |" in lines
    assert "| mean | — | 85.00 / 75.00 | 70.00 / 60.00 | 80.00 / 70.00 | +5.00 |" in lines
    assert "fan: the training-free baseline won on validation." in md


def test_a_report_of_a_trial_the_optuna_study_already_finished_is_skipped(tmp_path):
    """The study lives in an RDB file and commits at once, so after a driver crash it can be ahead of Tune's
    snapshot (the searcher's saved state): the resumed trial reports again to an Optuna trial that is
    finished. Plain OptunaSearch fails the search there; StudySearch skips the report."""
    import optuna
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    for cls in (OptunaSearch, StudySearch):
        def make():
            storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / cls.__name__}.db")  # as tune_type keeps it
            return cls(space={"x": tune.uniform(0.0, 1.0)}, metric="m", mode="max", seed=0, storage=storage,
                       study_name="s/valve")
        search = make()
        search.suggest("t1")
        search.save(str(tmp_path / f"{cls.__name__}.pkl"))  # Tune's last snapshot: t1 still running
        search.on_trial_complete("t1", {"m": 0.5, "training_iteration": 2})  # recorded by Optuna; then the kill
        resumed = make()
        resumed.restore(str(tmp_path / f"{cls.__name__}.pkl"))
        report = lambda: resumed.on_trial_result("t1", {"m": 0.5, "training_iteration": 1})  # noqa: E731
        if cls is OptunaSearch:
            with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
                report()
        else:
            report()  # skipped: Optuna has it
