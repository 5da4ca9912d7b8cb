import tempfile
from pathlib import Path

import pytest
import yaml

from mimimi.config import Config, ConfigError
from tuning.space import SEARCH_CONFIGS, load_search_config, trial_config


def test_base_and_per_type_overrides():
    base = load_search_config("pump")  # no pump.yaml: the base alone
    valve = load_search_config("valve")
    assert base.space["augment.mask_max_bins"].high == 65
    assert valve.space["augment.mask_max_bins"].high == 33  # valve.yaml overrides one dimension
    assert valve.space["train.lr"] == base.space["train.lr"]  # and keeps the others
    assert {"train.lr", "augment.mixup_prob", "augment.mixup_alpha", "augment.mask_prob", "augment.noise_prob",
            "augment.shift_prob", "train.batch_size"} <= set(base.space)
    smoke = load_search_config("valve", [SEARCH_CONFIGS / "smoke.yaml"])
    assert smoke.search.num_samples == 2 and smoke.config["train"]["epochs"] == 2
    # the recipe is searched; the small searches leave the costly classes=all out
    assert {"train.sampler", "model.net.head", "train.arcface_margin", "train.classes"} <= set(base.space)
    assert base.space["train.classes"].values == ("type", "all")
    embedded = load_search_config("fan", [SEARCH_CONFIGS / "embedded.yaml"])
    assert "train.classes" not in smoke.space and "train.classes" not in embedded.space


@pytest.mark.parametrize("raw, message", [
    ({"serch": {}}, "unknown key(s) ['serch']"),
    ({"search": {"num_sample": 3}}, "unknown key 'search.num_sample'"),
    ({"space": {"train.learning_rate": {"type": "uniform", "low": 0, "high": 1}}}, "space.train.learning_rate is not a setting"),
    ({"space": {"train.lr": {"type": "loguniform", "low": 0, "high": 1}}}, "loguniform needs low > 0"),
    ({"space": {"train.lr": {"type": "gauss", "low": 0, "high": 1}}}, "type must be one of"),
    ({"space": {"train.lr": {"type": "choice"}}}, "non-empty 'values'"),
    ({"space": {"train.epochs": {"type": "choice", "values": ["many"]}}}, "train.epochs must be int"),
    ({"config": {"train": {"epoch": 3}}}, "unknown key 'train.epoch'"),
])
def test_bad_search_configs_are_errors(raw, message):
    with pytest.raises(ConfigError) as e:
        load_from(raw)
    assert message in str(e.value)


def load_from(raw):
    """``raw`` as the base.yaml of a search-config folder."""
    d = Path(tempfile.mkdtemp())
    (d / "base.yaml").write_text(yaml.safe_dump(raw))
    return load_search_config("fan", directory=d)


def test_trial_config_applies_sampled_values():
    cfg = trial_config(Config(), {"train.lr": 0.01, "model.net.gate": "softmax", "augment.mixup_prob": 0.0})
    assert cfg["train"]["lr"] == 0.01 and cfg["model"]["net"]["gate"] == "softmax"
    assert cfg["augment"]["mixup_prob"] == 0.0 and cfg["train"]["epochs"] == Config().train.epochs


def test_attribute_classes_can_be_searched():
    """train.attributes (section x attribute classes) is a space key like train.classes; a bad value is an error."""
    space = load_from({"space": {"train.attributes": {"type": "choice", "values": [False, True]}}}).space
    assert space["train.attributes"].values == (False, True)
    assert trial_config(Config(), {"train.attributes": True, "train.classes": "all"})["train"]["attributes"] is True
    with pytest.raises(ConfigError, match="train.attributes must be bool"):
        load_from({"space": {"train.attributes": {"type": "choice", "values": ["sections"]}}})


def test_every_shipped_search_config_parses():
    shipped = sorted(SEARCH_CONFIGS.glob("*.yaml"))
    # an empty glob (a moved folder) must fail, not pass having checked nothing
    assert {"base.yaml", "embedded.yaml", "smoke.yaml", "first_shot.yaml"} <= {p.name for p in shipped}, SEARCH_CONFIGS
    for path in shipped:
        load_search_config("valve", [path])


def test_synthetic_data_specs_live_in_the_yaml():
    from tuning.space import SEARCH_CONFIGS, SyntheticData, load_search_config

    embedded = load_search_config("", [SEARCH_CONFIGS / "embedded.yaml"]).synthetic
    smoke = load_search_config("", [SEARCH_CONFIGS / "smoke.yaml"]).synthetic
    assert embedded == SyntheticData()  # 4 types x 4 IDs x (12 + 8 + 8) clips of 5 s
    assert smoke.machine_types == ("valve",) and smoke.seconds == 3.0 and smoke.ids == ("00", "02", "04", "06")
    assert load_search_config("").synthetic is None  # base.yaml: real data, nothing generated


def test_bad_synthetic_spec_is_an_error(tmp_path):
    from mimimi.config import ConfigError
    from tuning.space import load_search_config

    for text, msg in (("synthetic: {ids: ['00']}\n", "at least two classes"),
                      ("synthetic: {n_train: 0}\n", ">= 1"), ("synthetic: {colour: red}\n", "colour")):
        f = tmp_path / "bad.yaml"
        f.write_text(text)
        with pytest.raises(ConfigError, match=msg):
            load_search_config("", [f])
