import math
import random
import subprocess
import sys

import pytest

from mimimi.data.index import COLUMNS, DatasetError, counts, index_dataset, select
from mimimi.index import main


def touch(root, *rels):
    for rel in rels:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.touch()  # the index never decodes audio: empty files are enough


def test_dcase_dev_layout(tmp_path):
    touch(tmp_path, *[f"dev_data/fan/train/normal_id_{i}_{n:08d}.wav" for i in ("00", "02") for n in range(3)],
          "dev_data/fan/test/normal_id_00_00000000.wav", "dev_data/fan/test/anomaly_id_00_00000000.wav",
          "dev_data/ToyCar/test/anomaly_id_01_00000007.wav")
    idx = index_dataset(tmp_path)
    df = idx.clips
    assert list(df.columns) == COLUMNS
    assert len(df) == 9 and idx.unmatched == []
    assert set(df.layout) == {"dcase2020"} and idx.id_role == "machine ID"
    assert df.snr.isna().all()
    assert set(df.section) == {""} and set(df.domain) == {"source"} and set(df.attributes) == {""}
    fan = select(df, machine_type="fan")
    assert (select(fan, split="train").label == "normal").all() and len(select(fan, split="train")) == 6
    assert sorted(select(fan, split="test").label) == ["anomaly", "normal"]
    toy = select(df, machine_type="ToyCar").iloc[0]
    assert (toy.machine_id, toy.split, toy.label) == ("01", "test", "anomaly")


def test_dcase_eval_set_is_unlabeled(tmp_path):
    touch(tmp_path, "eval_data/pump/test/id_01_00000000.wav", "eval_data/pump/train/normal_id_01_00000000.wav")
    df = index_dataset(tmp_path).clips
    test = select(df, split="test").iloc[0]
    assert (test.machine_type, test.machine_id, test.label) == ("pump", "01", "unknown")
    assert select(df, split="train").iloc[0].label == "normal"


def test_mimii_layout_and_baseline_split(tmp_path):
    normals = [f"{n:08d}" for n in (5, 1, 9, 3, 7)]
    rels = [f"-6_dB_valve/valve/id_00/normal/{n}.wav" for n in normals]
    rels += [f"-6_dB_valve/valve/id_00/abnormal/{n:08d}.wav" for n in (0, 2)]
    rels += [f"6_dB_valve/valve/id_00/normal/{n:08d}.wav" for n in range(3)]  # another SNR: its own split
    random.Random(0).shuffle(rels)  # creation order must not matter
    touch(tmp_path, *rels)
    idx = index_dataset(tmp_path)
    df = idx.clips
    low = df[df.snr == -6.0]
    assert set(df.layout) == {"mimii"} and set(df.machine_type) == {"valve"} and idx.id_role == "machine ID"
    assert set(df.section) == {""} and set(df.domain) == {"source"} and set(df.attributes) == {""}
    test = low[low.split == "test"]
    # all abnormal clips + as many normal ones, the first in name order
    assert sorted(test.label) == ["anomaly", "anomaly", "normal", "normal"]
    assert sorted(p.rsplit("/", 1)[1] for p in test[test.label == "normal"].path) == ["00000001.wav", "00000003.wav"]
    assert sorted(p.rsplit("/", 1)[1] for p in low[low.split == "train"].path) == ["00000005.wav", "00000007.wav", "00000009.wav"]
    high = df[df.snr == 6.0]
    assert len(high) == 3 and (high.split == "train").all()


def test_mimii_without_snr_folder(tmp_path):
    touch(tmp_path, "fan/id_04/normal/00000000.wav", "fan/id_04/abnormal/00000000.wav")
    df = index_dataset(tmp_path).clips
    assert df.snr.isna().all() and set(df.machine_id) == {"04"}
    assert set(zip(df.split, df.label)) == {("test", "normal"), ("test", "anomaly")}


def test_root_can_be_the_type_folder(tmp_path):
    touch(tmp_path, "slider/train/normal_id_06_00000000.wav")
    df = index_dataset(tmp_path / "slider").clips
    assert df.iloc[0].machine_type == "slider"


def test_unmatched_files_are_reported(tmp_path, caplog):
    touch(tmp_path, "fan/train/normal_id_00_00000000.wav",
          "fan/train/normal_id_0_00000001.wav",  # one-digit ID
          "fan/val/normal_id_00_00000000.wav",  # unknown split
          "fan/id_00/broken/00000000.wav",  # unknown MIMII label folder
          "fan/readme.txt", ".cache/x.npy")  # hidden folders are not dataset content
    with caplog.at_level("WARNING"):
        idx = index_dataset(tmp_path)
    assert len(idx.clips) == 1
    assert sorted(p.name for p in idx.unmatched) == ["00000000.wav", "normal_id_00_00000000.wav",
                                                     "normal_id_0_00000001.wav", "readme.txt"]
    assert "4 file(s) match neither" in caplog.text


@pytest.mark.parametrize("setup, message", [
    (lambda p: p / "missing", "does not exist"),
    (lambda p: p, "it is empty"),
    (lambda p: (p / "a.txt").write_text("x") and p, "1 other file(s)"),
    (lambda p: (p / "f.wav").write_text("x") and p / "f.wav", "not a directory"),
])
def test_bad_roots_are_one_line_errors(tmp_path, setup, message):
    root = setup(tmp_path)
    with pytest.raises(DatasetError) as e:
        index_dataset(root)
    assert message in str(e.value) and str(root) in str(e.value) and "\n" not in str(e.value)


def test_real_samples(real_samples):
    idx = index_dataset(real_samples)
    df = idx.clips
    assert len(df) == 97
    assert (df.layout == "dcase2020").sum() == 93 and (df.layout == "mimii").sum() == 4
    assert set(df.machine_type) == {"fan", "pump", "slider", "valve", "ToyCar", "ToyConveyor"}
    pump02 = df[(df.machine_type == "pump") & (df.machine_id == "02")]
    assert set(pump02.label) == {"normal"}  # the README: pump id_02 has no anomaly
    mimii = df[df.layout == "mimii"]
    # id_00 has no abnormal clip: both normals train; id_06 has one of each: both test
    assert sorted(zip(mimii.machine_id, mimii.split, mimii.label)) == [
        ("00", "train", "normal"), ("00", "train", "normal"), ("06", "test", "anomaly"), ("06", "test", "normal")]
    assert [p.name for p in idx.unmatched] == ["README.md"]
    assert math.isnan(mimii.snr.iloc[0])


def test_counts_and_cli(tmp_path, capsys):
    touch(tmp_path, *[f"fan/train/normal_id_00_{n:08d}.wav" for n in range(8)],
          *[f"fan/test/{lab}_id_00_{n:08d}.wav" for lab in ("normal", "anomaly") for n in range(4)])
    table = counts(index_dataset(tmp_path).clips)
    assert table.loc[("fan", "00")].to_dict() == {"test/anomaly": 4, "test/normal": 4, "train/normal": 8}
    main([str(tmp_path)])
    out = capsys.readouterr().out
    assert "16 clips" in out and "train/normal" in out
    r = subprocess.run([sys.executable, "-m", "mimimi.index", str(tmp_path / "nope")], capture_output=True, text=True)
    assert r.returncode != 0 and r.stderr.strip().startswith("error:") and len(r.stderr.strip().splitlines()) == 1
