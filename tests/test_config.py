from pathlib import Path

import pytest

from mimimi.config import Config, ConfigError, load_config, merge, to_dict

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_shipped_config_loads(path):
    cfg = load_config(path)
    assert merge(Config(), to_dict(cfg)) == cfg  # the resolved dict reproduces the config


def test_base_yaml_equals_the_defaults():
    assert load_config(CONFIGS[0].parent / "base.yaml") == Config()


@pytest.mark.parametrize("override, message", [
    ({"train": {"epochz": 3}}, "unknown key 'train.epochz'"),
    ({"train": {"lr": "fast"}}, "train.lr must be float"),
    ({"train": {"epochs": 2.5}}, "train.epochs must be int"),
    ({"train": {"precision": "fp16"}}, "train.precision must be one of"),
    ({"model": {"name": "resnet"}}, "model.name must be one of"),
    ({"augment": {"mixup_prob": 1.5}}, "augment.mixup_prob must be in [0, 1]"),
    ({"model": {"net": {"n_ids": 1}}}, "model.net: n_ids must be >= 2"),
    ({"features": {"channel": "left"}}, "features.channel"),
    ({"train": []}, "train must be a mapping"),
])
def test_bad_overrides_are_clear_errors(override, message):
    with pytest.raises(ConfigError) as e:
        merge(Config(), override)
    assert message in str(e.value)


def test_values_are_converted_where_lossless():
    cfg = merge(Config(), {"train": {"lr": 1, "loss_weights": [1, 0, 2]}, "features": {"channel": "mean"}})
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)
    assert cfg.train.loss_weights == (1.0, 0.0, 2.0)
    assert cfg.features.channel == "mean"


def test_config_files_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="missing.yaml: config file not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(bad)
    typo = tmp_path / "typo.yaml"
    typo.write_text("features:\n  n_ftt: 512\n")
    with pytest.raises(ConfigError, match="typo.yaml: unknown key 'features.n_ftt'"):
        load_config(typo)
