"""The DCASE 2021-2025 Task 2 layouts of mimimi.data.index: names as the official sets spell them
(as the official baselines' READMEs (nttcslab/dcase2023_task2_baseline_ae and earlier) and the evaluators'
ground-truth files show them), files created empty."""
import pytest

from mimimi.data.index import (ATTRIBUTE_KEYS, COLUMNS, DatasetError, DatasetIndex, counts, index_dataset,
                               machine_id_from_path, select)
from mimimi.index import main


def touch(root, *rels):
    for rel in rels:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.touch()  # the index never decodes audio: empty files are enough


def write(root, rel, text):
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p


def rows(df, *cols):
    return [tuple(r) for r in df[list(cols)].itertuples(index=False)]


def one_line_error(match, *args, **kwargs):
    with pytest.raises(DatasetError) as e:
        index_dataset(*args, **kwargs)
    msg = str(e.value)
    assert "\n" not in msg, msg
    for part in match:
        assert part in msg, msg
    return msg


# ----------------------------------------------------------------------------------------- 2021
def test_2021_dev_and_additional_training_set(tmp_path):
    touch(tmp_path,
          "dev_data/fan/train/section_00_source_train_normal_0000_strength_1_ambient.wav",
          "dev_data/fan/train/section_00_target_train_normal_0002_strength_2_ambient.wav",
          "dev_data/fan/source_test/section_00_source_test_normal_0000.wav",
          "dev_data/fan/source_test/section_00_source_test_anomaly_0099.wav",
          "dev_data/fan/target_test/section_01_target_test_normal_0000.wav",
          "dev_data/fan/target_test/section_00_source_test_normal_0001.wav",  # wrong domain folder
          "eval_data/fan/train/section_03_source_train_normal_0000_strength_1_ambient.wav")
    idx = index_dataset(tmp_path)
    df = idx.clips
    assert list(df.columns) == COLUMNS and idx.id_role == "section"
    assert set(df.layout) == {"dcase2021"}  # the eval train-only folder takes its sibling's layout
    assert rows(df, "machine_id", "section", "split", "label", "domain", "attributes") == [
        ("00", "00", "test", "anomaly", "source", ""),
        ("00", "00", "test", "normal", "source", ""),
        ("00", "00", "train", "normal", "source", "strength_1_ambient"),
        ("00", "00", "train", "normal", "target", "strength_2_ambient"),
        ("01", "01", "test", "normal", "target", ""),
        ("03", "03", "train", "normal", "source", "strength_1_ambient")]
    assert [p.name for p in idx.unmatched] == ["section_00_source_test_normal_0001.wav"]
    assert df.snr.isna().all()


def test_2021_eval_set_and_ground_truth(tmp_path):
    root, gt = tmp_path / "data", tmp_path / "gt"
    touch(root, "eval_data/pump/source_test/section_03_source_test_0000.wav",
          "eval_data/pump/source_test/section_03_source_test_0001.wav",
          "eval_data/pump/target_test/section_03_target_test_0000.wav")
    df = index_dataset(root).clips
    assert set(df.layout) == {"dcase2021"}
    assert rows(df, "section", "label", "domain") == [("03", "unknown", "source")] * 2 + [("03", "unknown", "target")]
    write(gt, "ground_truth_pump_section_03_source_test.csv",
          "section_03_source_test_0000.wav,1\nsection_03_source_test_0001.wav,0\n")
    write(gt, "ground_truth_data/ground_truth_pump_section_03_target_test.csv", "section_03_target_test_0000.wav,1\n")
    write(gt, "ground_truth_fan_section_03_source_test.csv", "section_03_source_test_0000.wav,1\n")  # not indexed
    df = index_dataset(root, ground_truth=gt).clips
    assert rows(df, "path", "label", "domain") == [
        (str(root / "eval_data/pump/source_test/section_03_source_test_0000.wav"), "anomaly", "source"),
        (str(root / "eval_data/pump/target_test/section_03_target_test_0000.wav"), "anomaly", "target"),
        (str(root / "eval_data/pump/source_test/section_03_source_test_0001.wav"), "normal", "source")]


# ----------------------------------------------------------------------------------------- 2022
def test_2022_dev_with_attribute_files(tmp_path):
    touch(tmp_path,
          "dev_data/fan/train/section_00_source_train_normal_0000_m-n_W.wav",
          "dev_data/fan/train/section_02_target_train_normal_0009_m-n_X.wav",
          "dev_data/fan/test/section_00_source_test_normal_0000_m-n_W.wav",
          "dev_data/fan/test/section_00_target_test_anomaly_0049_m-n_X.wav",
          "dev_data/gearbox/train/section_01_source_train_normal_0000_volt_1.3_wt_30.wav")  # train only
    write(tmp_path, "dev_data/fan/attributes_00.csv",
          "file_name,d1p,d1v\nfan/train/section_00_source_train_normal_0000_m-n_W.wav,m-n,W\n"
          "fan/test/section_00_source_test_normal_0000_m-n_W.wav,m-n,W\n")
    write(tmp_path, "dev_data/fan/attributes_02.csv",
          "file_name,d1p,d1v,d2p,d2v\nfan/train/section_02_target_train_normal_0009_m-n_X.wav,m-n,X,snr,6\n")
    idx = index_dataset(tmp_path)
    df = idx.clips
    assert set(df.layout) == {"dcase2022"} and idx.unmatched == [] and idx.id_role == "section"
    fan = select(df, machine_type="fan")
    assert rows(fan, "machine_id", "split", "label", "domain", "attributes") == [
        ("00", "test", "anomaly", "target", "m-n_X"), ("00", "test", "normal", "source", "m-n_W"),
        ("00", "train", "normal", "source", "m-n_W"), ("02", "train", "normal", "target", "m-n_X")]
    assert select(df, machine_type="gearbox").attributes.tolist() == ["volt_1.3_wt_30"]
    assert list(idx.attributes.columns) == ATTRIBUTE_KEYS + ["d1p", "d1v", "d2p", "d2v"]
    assert idx.attributes.values.tolist() == [
        ["fan", "00", "fan/train/section_00_source_train_normal_0000_m-n_W.wav", "m-n", "W", "", ""],
        ["fan", "00", "fan/test/section_00_source_test_normal_0000_m-n_W.wav", "m-n", "W", "", ""],
        ["fan", "02", "fan/train/section_02_target_train_normal_0009_m-n_X.wav", "m-n", "X", "snr", "6"]]


def test_2022_eval_set_is_hidden_and_ground_truth_fills_it(tmp_path):
    root, gt = tmp_path / "data", tmp_path / "gt"
    touch(root, "eval_data/bearing/train/section_03_source_train_normal_0000_vel_6_loc_A.wav",
          *[f"eval_data/bearing/test/section_03_test_{n:04d}.wav" for n in range(3)])
    write(root, "eval_data/bearing/attributes_03.csv",
          "file_name,d1p,d1v\nbearing/train/section_03_source_train_normal_0000_vel_6_loc_A.wav,vel,6\n")
    test = select(index_dataset(root).clips, split="test")
    assert rows(test, "machine_id", "label", "domain", "attributes") == [("03", "unknown", "unknown", "")] * 3
    write(gt, "ground_truth_data/ground_truth_bearing_section_03_test.csv",
          "section_03_0000.wav,0\nsection_03_0001.wav,1\nsection_03_0002.wav,0\n")
    write(gt, "ground_truth_domain/ground_truth_bearing_section_03_test.csv",
          "section_03_0000.wav,1\nsection_03_0001.wav,0\nsection_03_0002.wav,0\n")
    test = select(index_dataset(root, ground_truth=gt).clips, split="test")
    assert rows(test, "path", "label", "domain") == [
        (str(root / "eval_data/bearing/test/section_03_test_0001.wav"), "anomaly", "source"),
        (str(root / "eval_data/bearing/test/section_03_test_0000.wav"), "normal", "target"),
        (str(root / "eval_data/bearing/test/section_03_test_0002.wav"), "normal", "source")]


# ----------------------------------------------------------------------------------------- 2023
def test_2023_dev_and_eval_with_attribute_ground_truth(tmp_path):
    root, gt = tmp_path / "dcase2023t2", tmp_path / "dcase2023_task2_evaluator"
    touch(root, "dev_data/raw/ToyCar/train/section_00_source_train_normal_0000_car_A1_spd_28V_mic_1.wav",
          "dev_data/raw/ToyCar/test/section_00_target_test_anomaly_0049_car_B2_spd_31V_mic_1.wav",
          "eval_data/raw/Vacuum/train/section_00_source_train_normal_0989_v_0.wav",
          "eval_data/raw/Vacuum/test/section_00_test_0000.wav", "eval_data/raw/Vacuum/test/section_00_test_0199.wav")
    write(root, "eval_data/raw/Vacuum/attributes_00.csv",
          "file_name,d1p,d1v\nVacuum/train/section_00_source_train_normal_0989_v_0.wav,v,0\n")
    name = "ground_truth_Vacuum_section_00_test.csv"
    write(gt, f"ground_truth_data/{name}", "section_00_0000.wav,0\nsection_00_0199.wav,1\n")
    write(gt, f"ground_truth_domain/{name}", "section_00_0000.wav,1\nsection_00_0199.wav,0\n")
    write(gt, f"ground_truth_attributes/{name}", "section_00_0000.wav,section_00_target_test_normal_0000_v_12\n"
          "section_00_0199.wav,section_00_source_test_anomaly_0099_v_3\n")
    idx = index_dataset(root, ground_truth=gt)
    assert set(idx.clips.layout) == {"dcase2022"} and idx.id_role == "section" and idx.unmatched == []
    assert rows(idx.clips, "machine_type", "section", "split", "label", "domain", "attributes") == [
        ("ToyCar", "00", "test", "anomaly", "target", "car_B2_spd_31V_mic_1"),
        ("ToyCar", "00", "train", "normal", "source", "car_A1_spd_28V_mic_1"),
        ("Vacuum", "00", "test", "anomaly", "source", "v_3"),
        ("Vacuum", "00", "test", "normal", "target", "v_12"),
        ("Vacuum", "00", "train", "normal", "source", "v_0")]
    assert idx.attributes.values.tolist() == [
        ["Vacuum", "00", "Vacuum/train/section_00_source_train_normal_0989_v_0.wav", "v", "0"]]


def test_ground_truth_folder_inside_the_root_is_not_dataset_content(tmp_path):
    touch(tmp_path, "ToyTank/test/section_00_test_0000.wav")
    write(tmp_path, "gt/ground_truth_data/ground_truth_ToyTank_section_00_test.csv", "section_00_0000.wav,1\n")
    write(tmp_path, "gt/ground_truth_domain/ground_truth_ToyTank_section_00_test.csv", "section_00_0000.wav,1\n")
    idx = index_dataset(tmp_path, ground_truth=tmp_path / "gt")
    assert idx.unmatched == [] and rows(idx.clips, "label", "domain") == [("anomaly", "target")]


# ----------------------------------------------------------------------------------------- 2024
def test_2024_one_based_numbering_and_no_attribute(tmp_path):
    touch(tmp_path, "dev_data/raw/gearbox/train/section_00_source_train_normal_0001_noAttribute.wav",
          "dev_data/raw/gearbox/train/section_00_target_train_normal_0010_noAttribute.wav",
          "dev_data/raw/gearbox/test/section_00_source_test_anomaly_0001_noAttribute.wav",
          "dev_data/raw/gearbox/test/section_00_target_test_normal_0050_noAttribute.wav",
          "eval_data/raw/3DPrinter/test/section_00_test_0001.wav",
          "eval_data/raw/3DPrinter/test/section_00_test_0200.wav")
    df = index_dataset(tmp_path).clips
    assert set(df.layout) == {"dcase2022"}
    assert rows(select(df, machine_type="gearbox"), "split", "label", "domain", "attributes") == [
        ("test", "anomaly", "source", "noAttribute"), ("test", "normal", "target", "noAttribute"),
        ("train", "normal", "source", "noAttribute"), ("train", "normal", "target", "noAttribute")]
    gt = tmp_path.parent / (tmp_path.name + "_gt")
    name = "ground_truth_3DPrinter_section_00_test.csv"
    write(gt, f"ground_truth_data/{name}", "section_00_0001.wav,1\nsection_00_0200.wav,0\n")
    write(gt, f"ground_truth_domain/{name}", "section_00_0001.wav,1\nsection_00_0200.wav,0\n")
    write(gt, f"ground_truth_attributes/{name}", "section_00_0001.wav,section_00_target_test_anomaly_0001_mdl_B_spd_2\n"
          "section_00_0200.wav,section_00_source_test_normal_0050_noAttribute\n")
    printer = select(index_dataset(tmp_path, ground_truth=gt).clips, machine_type="3DPrinter")
    assert rows(printer, "path", "label", "domain", "attributes") == [
        (str(tmp_path / "eval_data/raw/3DPrinter/test/section_00_test_0001.wav"), "anomaly", "target", "mdl_B_spd_2"),
        (str(tmp_path / "eval_data/raw/3DPrinter/test/section_00_test_0200.wav"), "normal", "source", "noAttribute")]


# ----------------------------------------------------------------------------------------- 2025
def test_2025_supplemental_folder_is_its_own_split(tmp_path):
    touch(tmp_path, "eval_data/raw/AutoTrash/train/section_00_source_train_normal_0000_.wav",
          "eval_data/raw/AutoTrash/train/section_00_target_train_normal_0009_.wav",
          "eval_data/raw/AutoTrash/supplemental/section_00_machine_0001_.wav",
          "eval_data/raw/AutoTrash/supplemental/section_00_machine_0100_.wav",
          "eval_data/raw/AutoTrash/supplemental/section_00_noise_0001_.wav",
          "dev_data/raw/ToyCar/train/section_00_source_train_normal_0001_car_B2_spd_7_mic_1.wav",
          "dev_data/raw/ToyCar/test/section_00_source_test_normal_0000_car_A2_spd_28V_mic_1_noise_1.wav")
    df = index_dataset(tmp_path).clips
    assert set(df.layout) == {"dcase2022"}
    auto = select(df, machine_type="AutoTrash")
    assert rows(auto, "split", "label", "domain", "attributes") == [
        ("supplemental", "normal", "unknown", ""), ("supplemental", "normal", "unknown", ""),
        ("supplemental", "unknown", "unknown", ""), ("train", "normal", "source", ""),
        ("train", "normal", "target", "")]
    # the callers' filters see only train and test, as before
    assert sorted(select(df, split="train").path.str.rsplit("/", n=1).str[1]) == [
        "section_00_source_train_normal_0000_.wav", "section_00_source_train_normal_0001_car_B2_spd_7_mic_1.wav",
        "section_00_target_train_normal_0009_.wav"]
    assert select(df, split="test").attributes.tolist() == ["car_A2_spd_28V_mic_1_noise_1"]
    assert counts(auto).loc[("AutoTrash", "00")].to_dict() == {
        "supplemental/unknown/normal": 2, "supplemental/unknown/unknown": 1,
        "train/source/normal": 1, "train/target/normal": 1}


def test_train_only_folder_takes_the_layout_of_its_own_year(tmp_path):
    touch(tmp_path, "2021/dev_data/fan/train/section_00_source_train_normal_0000_strength_1_ambient.wav",
          "2021/dev_data/fan/source_test/section_00_source_test_normal_0000.wav",
          "2021/eval_data/fan/train/section_03_source_train_normal_0000_strength_1_ambient.wav",
          "2022/dev_data/fan/test/section_00_source_test_normal_0000_m-n_W.wav",
          "2022/eval_data/fan/train/section_03_source_train_normal_0000_m-n_W.wav",
          "other/fan/train/section_03_source_train_normal_0000_m-n_W.wav")  # 2021 and 2022 equally near
    df = index_dataset(tmp_path).clips
    assert sorted((p.split("/")[-5], p.split("/")[-4], layout) for p, layout in zip(df.path, df.layout)) == [
        ("2021", "dev_data", "dcase2021"), ("2021", "dev_data", "dcase2021"), ("2021", "eval_data", "dcase2021"),
        ("2022", "dev_data", "dcase2022"), ("2022", "eval_data", "dcase2022"), (tmp_path.name, "other", "dcase2022")]


def test_a_folder_with_2021_proof_is_dcase2021_whatever_else_it_holds(tmp_path):
    touch(tmp_path, "dev_data/valve/source_test/section_00_source_test_normal_0000.wav",
          "dev_data/valve/test/section_00_source_test_normal_0000.wav",  # the 2021 baseline's merged copy
          "eval_data/valve/test/section_03_source_test_0000.wav",  # a 2021 evaluation name
          "eval_data/valve/test/section_03_source_test_normal_0000.wav")
    df = index_dataset(tmp_path).clips
    assert set(df.layout) == {"dcase2021"} and len(df) == 4


def test_supplemental_folder_proves_dcase2022(tmp_path):
    touch(tmp_path, "2021/dev_data/fan/source_test/section_00_source_test_normal_0000.wav",
          "2025/eval_data/AutoTrash/supplemental/section_00_machine_0001_.wav",
          "2025/eval_data/AutoTrash/train/section_00_source_train_normal_0000_.wav")
    df = index_dataset(tmp_path).clips
    assert rows(df, "machine_type", "split", "layout") == [
        ("AutoTrash", "supplemental", "dcase2022"), ("AutoTrash", "train", "dcase2022"), ("fan", "test", "dcase2021")]


def test_train_only_folder_without_any_proof_is_dcase2022(tmp_path):
    touch(tmp_path, "slider/train/section_00_source_train_normal_0000_vel_1.wav")
    df = index_dataset(tmp_path / "slider").clips  # the root can be the type folder
    assert rows(df, "machine_type", "machine_id", "layout") == [("slider", "00", "dcase2022")]


# ----------------------------------------------------------------------------------------- roles, IDs
def test_id_role_of_an_index_mixing_machine_ids_and_sections_is_an_error(tmp_path):
    touch(tmp_path, "a/fan/train/normal_id_00_00000000.wav", "b/fan/train/section_00_source_train_normal_0000_x.wav",
          "b/fan/test/section_00_source_test_normal_0000_x.wav")
    idx = index_dataset(tmp_path)
    assert sorted(set(idx.clips.layout)) == ["dcase2020", "dcase2022"]
    with pytest.raises(DatasetError) as e:
        idx.id_role
    assert str(e.value) == (f"{tmp_path}: the index mixes dcase2020 clips (machine_id is a machine ID) and "
                            "dcase2022 clips (machine_id is a section); index them separately")
    assert DatasetIndex(tmp_path, idx.clips[idx.clips.layout == "dcase2022"]).id_role == "section"


@pytest.mark.parametrize("path, expected", [
    ("ToyCar/test/section_01_source_test_normal_0003_vel_8.wav", "01"),
    ("section_00_test_0199.wav", "00"),
    ("AutoTrash/test/section_00_target_test_anomaly_0012_id_C1_spd_2_mic_2.wav", "00"),
    ("section_02_target_train_normal_0009_id_07.wav", "02"),  # the section, not an id_ attribute
    ("fan/test/anomaly_id_02_00000007.wav", "02"),
    ("6_dB_fan/fan/id_04/normal/00000001.wav", "04"),
    ("fan/test/section_1_test_0000.wav", None),
])
def test_machine_id_from_path(path, expected):
    assert machine_id_from_path(path) == expected


def test_cli_prints_sections_and_domains(tmp_path, capsys):
    touch(tmp_path, *[f"fan/test/section_00_{d}_test_{lab}_{n:04d}_m-n_W.wav"
                      for d in ("source", "target") for lab in ("normal", "anomaly") for n in range(2)],
          "fan/train/section_00_source_train_normal_0000_m-n_W.wav")
    main([str(tmp_path)])
    out = capsys.readouterr().out
    assert "9 clips" in out and "(dcase2022)" in out and "section" in out and "test/target/anomaly" in out
    table = counts(index_dataset(tmp_path).clips)
    assert table.index.names == ["machine_type", "section"]
    assert table.loc[("fan", "00")].to_dict() == {"test/source/anomaly": 2, "test/source/normal": 2,
                                                  "test/target/anomaly": 2, "test/target/normal": 2,
                                                  "train/source/normal": 1}


# ----------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("text, problem", [
    ("", "attribute file is empty"),
    ("fan/train/section_00_source_train_normal_0000_m-n_W.wav,m-n,W\n", "attribute file has no header row"),
    ("name,d1p,d1v\nfan/train/x.wav,m-n,W\n", "attribute file has no file_name column"),
    ("file_name,d1p,d1v\nfan/train/x.wav,m-n,W\nfan/train/y.wav,m-n\n", "line 3 has 2 field(s), the header has 3"),
])
def test_malformed_attribute_file(tmp_path, text, problem):
    touch(tmp_path, "fan/train/section_00_source_train_normal_0000_m-n_W.wav")
    csv = write(tmp_path, "fan/attributes_00.csv", text)
    msg = one_line_error([str(csv), problem], tmp_path)
    assert msg.startswith(f"{csv}: ")


def _eval_2022(tmp_path, labels, domains="section_03_0000.wav,0\nsection_03_0001.wav,1\n"):
    root, gt = tmp_path / "data", tmp_path / "gt"
    touch(root, "eval_data/valve/test/section_03_test_0000.wav", "eval_data/valve/test/section_03_test_0001.wav")
    if labels is not None:
        write(gt, "ground_truth_data/ground_truth_valve_section_03_test.csv", labels)
    write(gt, "ground_truth_domain/ground_truth_valve_section_03_test.csv", domains)
    return root, gt


def test_ground_truth_missing_a_hidden_clip(tmp_path):
    root, gt = _eval_2022(tmp_path, "section_03_0000.wav,1\n")
    msg = one_line_error([], root, ground_truth=gt)
    assert msg == (f"{gt}/ground_truth_data/ground_truth_valve_section_03_test.csv: no row for 1 hidden clip(s) of "
                   "the index, e.g. section_03_test_0001.wav (row section_03_0001.wav)")


def test_ground_truth_row_naming_no_clip(tmp_path):
    root, gt = _eval_2022(tmp_path, "section_03_0000.wav,1\nsection_03_0001.wav,0\nsection_03_0002.wav,0\n"
                          "section_03_0003.wav,1\n")
    msg = one_line_error([], root, ground_truth=gt)
    assert msg == (f"{gt}/ground_truth_data/ground_truth_valve_section_03_test.csv: 2 row(s) name no hidden clip "
                   "of the index, e.g. section_03_0002.wav")


def test_ground_truth_file_missing(tmp_path):
    root, gt = _eval_2022(tmp_path, None)
    msg = one_line_error([], root, ground_truth=gt)
    assert msg == (f"{gt}/ground_truth_data/ground_truth_valve_section_03_test.csv: no such ground-truth file, "
                   "needed for the label of 2 hidden clip(s), e.g. section_03_test_0000.wav")


@pytest.mark.parametrize("labels, domains, problem", [
    ("section_03_0000.wav,2\nsection_03_0001.wav,0\n", None,
     "ground_truth_data/ground_truth_valve_section_03_test.csv: line 1 has label '2', expected one of ['0', '1']"),
    ("section_03_0000.wav,1,x\n", None,
     "ground_truth_data/ground_truth_valve_section_03_test.csv: line 1 has 3 field(s), expected 2 (clip name, label)"),
    ("section_03_0000.wav,1\nsection_03_0000.wav,1\n", None,
     "ground_truth_data/ground_truth_valve_section_03_test.csv: line 2 repeats the clip section_03_0000.wav"),
    ("section_03_0000.wav,1\nsection_03_0001.wav,0\n", "section_03_0000.wav,0\n",
     "ground_truth_domain/ground_truth_valve_section_03_test.csv: no row for 1 hidden clip(s)"),
])
def test_malformed_ground_truth(tmp_path, labels, domains, problem):
    root, gt = _eval_2022(tmp_path, labels, *(() if domains is None else (domains,)))
    msg = one_line_error([], root, ground_truth=gt)
    assert msg.startswith(f"{gt}/{problem}"), msg


def test_bad_attribute_ground_truth_and_folder(tmp_path):
    root, gt = _eval_2022(tmp_path, "section_03_0000.wav,1\nsection_03_0001.wav,0\n")
    bad = write(gt, "ground_truth_attributes/ground_truth_valve_section_03_test.csv",
                "section_03_0000.wav,section_03_0000\nsection_03_0001.wav,section_03_source_test_normal_0001_v1pat_A\n")
    msg = one_line_error([], root, ground_truth=gt)
    assert msg == (f"{bad}: line 1 has 'section_03_0000', not a full clip name "
                   "section_XX_<domain>_test_<label>_NNNN_<attributes>")
    msg = one_line_error([], root, ground_truth=tmp_path / "nope")
    assert msg == f"{tmp_path / 'nope'}: ground-truth folder does not exist or is not a directory"


def test_2021_ground_truth_file_missing(tmp_path):
    root, gt = tmp_path / "data", tmp_path / "gt"
    touch(root, "eval_data/ToyTrain/target_test/section_04_target_test_0000.wav")
    gt.mkdir()
    msg = one_line_error([], root, ground_truth=gt)
    assert msg == (f"{gt}/ground_truth_ToyTrain_section_04_target_test.csv: no such ground-truth file, needed for "
                   "the label of 1 hidden clip(s), e.g. section_04_target_test_0000.wav")
