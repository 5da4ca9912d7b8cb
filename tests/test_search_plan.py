"""The search driver's pure parts (fast, no Ray started): the plan built from the arguments and the search
YAMLs, and the search state that --resume reads back."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tuning import search as S
from tuning.space import SEARCH_CONFIGS


@pytest.fixture
def empty_cwd(tmp_path, monkeypatch) -> Path:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return cwd


def plan(*argv: str) -> S.Plan:
    return S.make_plan(S.parse_args(list(argv)))


def test_the_smoke_plan_generates_its_data_under_the_storage_path(empty_cwd):
    p = plan("--smoke-test", "--storage-path", "store", "--num-samples", "3")
    assert p.storage == str(empty_cwd / "store") and p.data_root == str(empty_cwd / "store" / "smoke-data")
    assert p.search_configs[0] == str(SEARCH_CONFIGS / "smoke.yaml") and p.synthetic is not None
    assert not p.regenerate  # a smoke set is made once per storage path
    scfg, base = p.type_config("valve")
    assert scfg.search.num_samples == 3  # the command line over the YAML
    assert base.train.machine_type == "valve" and base.data.root == p.data_root and not base.train.progress
    assert base.data.cache_dir == str(empty_cwd / "store" / "cache")
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
    assert S.SearchState.load(storage, "search-1") is None and S.SearchState.latest(storage) is None
    for name in ("search-20261201-120000", "search-20261203-090000"):
        S.SearchState(storage, {"name": name, "tracking_uri": "sqlite:///x.db", "types": {}}).save()
    assert S.SearchState.latest(storage) == "search-20261203-090000"
    state = S.SearchState.load(storage, "search-20261201-120000")
    state.set_type("valve", "run-1", finished=False)
    state.set_type("fan", "run-2", finished=True)
    again = S.SearchState.load(storage, "search-20261201-120000")
    assert again.type("valve") == {"parent_run_id": "run-1", "finished": False}
    assert again.type("fan")["finished"] and again.type("pump") == {}
    folder = Path(storage) / "search-20261201-120000"
    assert sorted(p.name for p in folder.iterdir()) == [S.STATE_FILE]  # no half-written .tmp left behind


def test_a_first_shot_plan_tunes_nothing_per_type(empty_cwd):
    """DCASE 2023+ rules: the per-type search YAMLs (fan.yaml, valve.yaml) are not read, so every type gets
    the same space and settings; without --data-root, a synthetic set in the 2023 layout."""
    p = plan("--first-shot", "--smoke-test", "--storage-path", "store")
    assert p.search_configs[:2] == (str(SEARCH_CONFIGS / "smoke.yaml"), str(SEARCH_CONFIGS / "first_shot.yaml"))
    assert p.synthetic.layout == "dcase2023" and p.data_root == str(empty_cwd / "store" / "smoke-data-first-shot")
    (fan, fan_base), (valve, valve_base) = p.type_config("fan"), p.type_config("valve")
    per_type = S.make_plan(S.parse_args(["--smoke-test"])).type_config("valve")[0]
    assert fan.space == valve.space != per_type.space  # valve.yaml narrows a dimension; first-shot does not read it
    assert fan_base.train.classes == valve_base.train.classes == "all"  # one section per type: (type, section) classes
    fixed = plan("--first-shot", "--fixed", "--smoke-test", "--storage-path", "store").type_config("fan")[0]
    assert fixed.space == {} and fixed.search.num_samples == 1  # the train mode: the configuration as given
