"""The search driver's pure parts (fast, no Ray started): the plan built from the arguments and the search
YAMLs, and the search state that --resume reads back."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tuning.plan import Plan, make_plan
from tuning.search import parse_args
from tuning.space import SEARCH_CONFIGS
from tuning.state import STATE_FILE, SearchState


@pytest.fixture
def empty_cwd(tmp_path, monkeypatch) -> Path:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return cwd


def plan(*argv: str) -> Plan:
    return make_plan(parse_args(list(argv)))


def test_the_smoke_plan_generates_its_data_under_the_storage_path(empty_cwd):
    p = plan("--smoke-test", "--storage-path", "store", "--num-samples", "3")
    assert p.storage == str(empty_cwd / "store") and p.data_root == str(empty_cwd / "store" / "smoke-data")
    assert p.search_configs[0] == str(SEARCH_CONFIGS / "smoke.yaml") and p.synthetic is not None
    assert not p.regenerate  # a smoke set is made once per storage path
    scfg, base = p.type_config("valve")
    assert scfg.search.num_samples == 3  # the command line over the YAML
    assert base.train.machine_type == "valve" and base.data.root == p.data_root and not base.train.progress
    assert base.data.cache_dir == str(empty_cwd / "store" / "smoke-data-mimimi-cache")  # beside the data root
    assert list(empty_cwd.iterdir()) == []  # a plan reads the YAMLs and writes nothing


def test_the_embedded_default_and_a_real_data_root(empty_cwd, tmp_path):
    p = plan()
    assert p.search_configs[0] == str(SEARCH_CONFIGS / "embedded.yaml")
    assert p.data_root == str(empty_cwd / "data" / "synthetic") and p.regenerate and p.synthetic is not None
    real = plan("--data-root", str(tmp_path / "dcase"), "--machine-types", "fan,pump", "--resume", "--name", "s1")
    assert real.synthetic is None and not real.regenerate and real.data_root == str(tmp_path / "dcase")
    assert real.machine_types == ("fan", "pump") and real.resume and real.name == "s1"
    assert str(SEARCH_CONFIGS / "embedded.yaml") not in real.search_configs
    with pytest.raises(dataclasses.FrozenInstanceError):  # what a search does is decided once
        real.resume = False


def test_the_search_state_round_trips_and_is_written_whole(tmp_path):
    storage = str(tmp_path / "storage")
    assert SearchState.load(storage, "search-1") is None and SearchState.latest(storage) is None
    for name in ("search-20261201-120000", "search-20261203-090000"):
        SearchState(storage, {"name": name, "tracking_uri": "sqlite:///x.db", "types": {}}).save()
    assert SearchState.latest(storage) == "search-20261203-090000"
    state = SearchState.load(storage, "search-20261201-120000")
    state.set_type("valve", "run-1", finished=False)
    state.set_type("fan", "run-2", finished=True)
    again = SearchState.load(storage, "search-20261201-120000")
    assert again.type("valve") == {"parent_run_id": "run-1", "finished": False}
    assert again.type("fan")["finished"] and again.type("pump") == {}
    folder = Path(storage) / "search-20261201-120000"
    assert sorted(p.name for p in folder.iterdir()) == [STATE_FILE]  # no half-written .tmp left behind


def test_a_first_shot_plan_tunes_nothing_per_type(empty_cwd):
    """DCASE 2023+ rules: the per-type search YAMLs (fan.yaml, valve.yaml) are not read, so every type gets
    the same space and settings; without --data-root, a synthetic set in the 2023 layout."""
    p = plan("--first-shot", "--smoke-test", "--storage-path", "store")
    assert p.search_configs[:2] == (str(SEARCH_CONFIGS / "smoke.yaml"), str(SEARCH_CONFIGS / "first_shot.yaml"))
    assert p.synthetic.layout == "dcase2022" and p.data_root == str(empty_cwd / "store" / "smoke-data-first-shot")
    (fan, fan_base), (valve, valve_base) = p.type_config("fan"), p.type_config("valve")
    per_type = make_plan(parse_args(["--smoke-test"])).type_config("valve")[0]
    assert fan.space == valve.space != per_type.space  # valve.yaml narrows a dimension; first-shot does not read it
    assert fan_base.train.classes == valve_base.train.classes == "all"  # one section per type: (type, section) classes
    fixed = plan("--first-shot", "--fixed", "--smoke-test", "--storage-path", "store").type_config("fan")[0]
    assert fixed.space == {} and fixed.search.num_samples == 1  # the train mode: the configuration as given


def test_only_as_many_trials_at_once_as_the_resources_hold():
    """Tune reserves a trial's own CPUs, not its Train workers': on 2 CPUs, 2 trials of 0.25 + 1 x 1.0 CPUs
    would leave the second trial's worker waiting until Ray Train gives up. A cluster may grow: not capped."""
    from tuning.concurrency import trials_at_once
    from tuning.interrupts import SearchError
    from tuning.space import Resources

    two_cpus = trials_at_once(2, Resources(), {"CPU": 2.0}, use_gpu=False)
    assert two_cpus == (1, "1 at a time, not 2: a trial takes 1.25 CPUs (0.25 for the trial + 1 worker x 1) "
                           "and Ray has 2 CPUs")
    assert trials_at_once(2, Resources(), {"CPU": 2.5}, use_gpu=False) == (2, "")  # exactly two fit: as asked
    assert trials_at_once(1, Resources(), {"CPU": 64.0}, use_gpu=False) == (1, "")  # never more than asked
    assert trials_at_once(2, Resources(), {"CPU": 1.5}, use_gpu=False, trials=1) == (1, "")  # nor than trials
    tenths = Resources(workers=2, cpus_per_worker=0.1, trial_cpus=0.1)  # 0.30000000000000004 CPUs a trial
    assert trials_at_once(8, tenths, {"CPU": 0.9}, use_gpu=False).trials == 3
    gpus = Resources(workers=2, gpus_per_worker=0.5)  # 2.25 CPUs and 1 GPU a trial
    assert trials_at_once(4, gpus, {"CPU": 16.0, "GPU": 2.0}, use_gpu=True) == (
        2, "2 at a time, not 4: a trial takes 2.25 CPUs and 1 GPU (0.25 for the trial + 2 workers x 1) and Ray has "
           "16 CPUs and 2 GPUs")
    assert trials_at_once(4, gpus, {"CPU": 16.0}, use_gpu=False) == (4, "")  # GPUs only count when used
    with pytest.raises(SearchError, match="a trial takes 1.25 CPUs .* and Ray has 1 CPU:"):
        trials_at_once(2, Resources(), {"CPU": 1.0}, use_gpu=False)  # not even one: it would wait forever
    # --address auto --use-gpu: the autoscaler adds GPU nodes once trials ask for them
    grows = trials_at_once(4, Resources(), {"CPU": 8.0}, use_gpu=True, may_grow=True)
    assert grows == (4, "4 at a time as asked, though the cluster holds 0 now (a trial takes 1.25 CPUs and 1 GPU, "
                        "it has 8 CPUs and 0 GPUs): not capped, as an autoscaler may add nodes")
