"""The search state: ``<storage>/<name>/mimimi_search.json``, what ``--resume`` reads back beside Tune's
experiments (the tracking store, the search's MLflow run, and per machine type its parent run and whether it
finished); ``open_state`` starts a new search (its MLflow run, its state saved) or opens the one to resume.
"""
from __future__ import annotations

import json
import time

from mimimi import tracking
from tuning.interrupts import SearchError
from tuning.plan import Plan
from tuning.storage import storage_fs

STATE_FILE = "mimimi_search.json"


class SearchState:
    """``<storage>/<name>/mimimi_search.json`` (local or on the cloud store, so ``--resume`` works from any
    machine that reaches it): the tracking store, the search's MLflow run, and per machine type its parent
    run and whether it finished. Written whole each time, never half."""

    def __init__(self, storage: str, data: dict):
        self.storage, self.data = storage, data

    @property
    def name(self) -> str:
        return self.data["name"]

    @classmethod
    def load(cls, storage: str, name: str) -> SearchState | None:
        from pyarrow.fs import FileType

        fs, root = storage_fs(storage)
        path = f"{root}/{name}/{STATE_FILE}"
        if fs.get_file_info(path).type != FileType.File:
            return None
        with fs.open_input_stream(path) as f:
            return cls(storage, json.loads(f.read().decode()))

    @staticmethod
    def latest(storage: str) -> str | None:
        """The name of the newest search under ``storage`` that has a state file."""
        from pyarrow.fs import FileSelector, FileType

        fs, root = storage_fs(storage)
        dirs = [i.base_name for i in fs.get_file_info(FileSelector(root, allow_not_found=True))
                if i.type == FileType.Directory]
        found = [d for d in dirs if fs.get_file_info(f"{root}/{d}/{STATE_FILE}").type == FileType.File]
        return max(found) if found else None

    def save(self) -> None:
        fs, root = storage_fs(self.storage)
        fs.create_dir(f"{root}/{self.name}", recursive=True)
        tmp = f"{root}/{self.name}/{STATE_FILE}.tmp"
        with fs.open_output_stream(tmp) as f:
            f.write(json.dumps(self.data, indent=1).encode())
        fs.move(tmp, f"{root}/{self.name}/{STATE_FILE}")

    def type(self, machine_type: str) -> dict:
        return self.data["types"].get(machine_type, {})

    def set_type(self, machine_type: str, parent_run_id: str, finished: bool) -> None:
        self.data["types"][machine_type] = {"parent_run_id": parent_run_id, "finished": finished}
        self.save()


def open_state(plan: Plan, types: tuple[str, ...]) -> tuple[SearchState, tracking.Tracker]:
    """The resumed search's state and tracker, or a new search (its MLflow run started, its state saved)."""
    if plan.resume:
        name = plan.name or SearchState.latest(plan.storage)
        state = SearchState.load(plan.storage, name) if name else None
        if state is None:
            raise SearchError(f"nothing to resume under {plan.storage}" + (f" named {plan.name!r}" if plan.name else ""))
        tracker = tracking.Tracker(plan.tracking_uri or state.data["tracking_uri"])
        return state, tracker
    name = plan.name or time.strftime("search-%Y%m%d-%H%M%S")
    tracker = tracking.Tracker(plan.tracking_uri)
    experiment_id = tracker.ensure_experiment(plan.experiment)
    search_run = tracker.start_run(experiment_id, name, tags={"mimimi.role": "search", "mimimi.storage": plan.storage})
    tracker.log_params(search_run, {"machine_types": ",".join(types), "data_root": plan.data_root,
                                    "smoke_test": plan.smoke_test, "storage_path": plan.storage})
    state = SearchState(plan.storage, {"name": name, "tracking_uri": tracker.uri, "experiment_id": experiment_id,
                                       "search_run_id": search_run, "data_root": plan.data_root, "types": {}})
    state.save()
    return state, tracker
