"""DCASE 2021-2025 Task 2 downloads: every archive's address against the facts, and one year (2024) end to end
against the local fake Zenodo of ``test_download`` (no internet), plus the 2023 MD5s known from soundata."""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import re
import zipfile

import pytest

from mimimi import download as command
from mimimi.data import dcase, download as dl
from mimimi.data.download import DownloadError
from test_download import corrupted, make_zip, serve_fake_zenodo, tree


@pytest.fixture
def zenodo():
    """The fake Zenodo of ``test_download`` (records API + ranged downloads on 127.0.0.1)."""
    yield from serve_fake_zenodo()


# --------------------------------------------------------------------------------------------------
# The addresses and machine types as the official baselines' download_path_*.yaml / data_download_*.sh give them,
# written out here rather than taken from the module, so that the table test checks one against the other.

DEV_2022_ON = ["bearing", "fan", "gearbox", "slider", "ToyCar", "ToyTrain", "valve"]
TYPES_2021 = ["fan", "gearbox", "pump", "slider", "valve", "ToyCar", "ToyTrain"]
EVAL_2023 = ["bandsaw", "grinder", "shaker", "ToyDrone", "ToyNscale", "ToyTank", "Vacuum"]
EVAL_2024 = ["3DPrinter", "AirCompressor", "Scanner", "ToyCircuit", "HoveringDrone", "HairDryer", "ToothBrush",
             "RoboticArm", "BrushlessMotor"]
EVAL_2025 = ["ToyRCCar", "ToyPet", "HomeCamera", "AutoTrash", "Polisher", "ScrewFeeder", "BandSealer",
             "CoffeeGrinder"]

FACTS = {  # dataset -> part -> (URL with <mt>, machine types)
    "dcase2021": {
        "dev": ("https://zenodo.org/record/4562016/files/dev_data_<mt>.zip", TYPES_2021),
        "eval-train": ("https://zenodo.org/record/4660992/files/eval_data_<mt>_train.zip", TYPES_2021),
        "eval-test": ("https://zenodo.org/record/4884786/files/eval_data_<mt>_test.zip", TYPES_2021),
    },
    "dcase2022": {
        "dev": ("https://zenodo.org/record/6355122/files/dev_<mt>.zip", DEV_2022_ON),
        "eval-train": ("https://zenodo.org/record/6462969/files/eval_data_<mt>_train.zip", DEV_2022_ON),
        "eval-test": ("https://zenodo.org/record/6586456/files/eval_data_<mt>_test.zip", DEV_2022_ON),
    },
    "dcase2023": {
        "dev": ("https://zenodo.org/record/7882613/files/dev_<mt>.zip", DEV_2022_ON),
        "eval-train": ("https://zenodo.org/record/7830345/files/eval_data_<mt>_train.zip", EVAL_2023),
        "eval-test": ("https://zenodo.org/record/7860847/files/eval_data_<mt>_test.zip", EVAL_2023),
    },
    "dcase2024": {
        "dev": ("https://zenodo.org/record/10902294/files/dev_<mt>.zip", DEV_2022_ON),
        "eval-train": ("https://zenodo.org/records/11259435/files/eval_data_<mt>_train.zip", EVAL_2024),
        "eval-test": ("https://zenodo.org/records/11363076/files/eval_data_<mt>_test.zip", EVAL_2024),
    },
    "dcase2025": {
        "dev": ("https://zenodo.org/records/15097779/files/dev_<mt>.zip", DEV_2022_ON),
        "eval-train": ("https://zenodo.org/records/15392814/files/eval_data_<mt>_train.zip", EVAL_2025),
        "eval-test": ("https://zenodo.org/records/15519362/files/eval_data_<mt>_test.zip", EVAL_2025),
    },
}
R2 = {("dcase2024", "eval-train", "3DPrinter"), ("dcase2024", "eval-train", "RoboticArm")}  # *_train_r2.zip

MD5_2023 = {  # soundata's dcase23_task2 loader (REMOTES)
    "dev_bearing.zip": "8a813bc8d8f156b5395bfccdfac7673c", "dev_fan.zip": "9348591e96fb0ad499a1e33b082562fc",
    "dev_gearbox.zip": "b6e55f6a31faa0fc8569ec0afdd53ccf", "dev_slider.zip": "b3f8dee36b4718c36d659a4fd1c4afe0",
    "dev_ToyCar.zip": "4e3bf15f4101ed4ed4f1fecde2e2b2a3", "dev_ToyTrain.zip": "6b02a6c65eebb3b8b1ae59a6b25bb897",
    "dev_valve.zip": "b2051a2022eadb53cd97581120811cae",
    "eval_data_bandsaw_train.zip": "9274dfe63de028743823f1123f8b4b47",
    "eval_data_grinder_train.zip": "17569c1f9df23621a0dbabc430684a35",
    "eval_data_shaker_train.zip": "35f821b5645b731fb5a1750e33b95fc3",
    "eval_data_ToyDrone_train.zip": "7fea367d1384a1521ae24f72203238de",
    "eval_data_ToyNscale_train.zip": "9332822f3e47afd984c01f2ecb5ca3af",
    "eval_data_ToyTank_train.zip": "b1fd3ab7de7561290df2d477de1c9d33",
    "eval_data_Vacuum_train.zip": "1c8de33d9a8c7850a1f7aaddb97d87be",
    "eval_data_bandsaw_test.zip": "2a8e8f39f6584ab366a8f4da52d4d7a6",
    "eval_data_grinder_test.zip": "631b3e1608b6077772829a6e68c82c77",
    "eval_data_shaker_test.zip": "ba98c98caa96051ec80e24e44b8fca56",
    "eval_data_ToyDrone_test.zip": "fdae7b8d1f4cadb2bea88bc93e2367db",
    "eval_data_ToyNscale_test.zip": "62f5f5043d8fb3a305b1c2e1025872de",
    "eval_data_ToyTank_test.zip": "f5639bf58c47169c622751f19c6fc321",
    "eval_data_Vacuum_test.zip": "a32524fd8c45b574a560685b38acc4e1",
}


def facts_url(dataset: str, part: str, machine_type: str) -> str:
    """The facts' address, in Zenodo's current ``/records/`` form (``/record/`` redirects there)."""
    url = FACTS[dataset][part][0].replace("<mt>", machine_type).replace("/record/", "/records/")
    return url.replace("_train.zip", "_train_r2.zip") if (dataset, part, machine_type) in R2 else url


ALL = [(d, p, t) for d, parts in FACTS.items() for p, (_, types) in parts.items() for t in types]


@pytest.mark.parametrize("dataset, part, machine_type", ALL, ids=["/".join(x) for x in ALL])
def test_every_year_part_and_type_resolves_to_the_address_in_the_facts(dataset, part, machine_type):
    (a,) = dl.select(dataset, [machine_type], parts=part)
    assert dl.zenodo_url(a.part.record_id, a.key) == facts_url(dataset, part, machine_type)
    assert a.subdir == f"{dataset}/{'dev_data' if part == 'dev' else 'eval_data'}"
    assert a.machine_type == machine_type
    assert a.known_md5 == (MD5_2023[a.key] if dataset == "dcase2023" else None)


@pytest.mark.parametrize("dataset", list(FACTS))
def test_a_whole_year_is_exactly_the_facts_archives(dataset):
    urls = dl.archive_urls(dataset)
    expected = [facts_url(dataset, p, t) for p, (_, types) in FACTS[dataset].items() for t in types]
    assert urls == expected  # part by part (dev, eval-train, eval-test), types in the facts' order
    assert dl.archive_urls(dataset, parts="eval") == [u for u in expected if "/eval_data_" in u]


def test_the_2023_md5s_are_the_facts_ones():
    assert dcase.YEARS["dcase2023"].md5 == MD5_2023


@pytest.mark.parametrize("dataset, types, parts, message", [
    ("dcase2023", ["fan", "valve", "drill"], ["dev"],
     "unknown machine type 'drill' for dcase2023 dev; valid: bearing, fan, gearbox, slider, ToyCar, ToyTrain, valve"),
    ("dcase2024", ["fan"], ["eval-test"],
     "unknown machine type 'fan' for dcase2024 eval-test; valid: " + ", ".join(EVAL_2024)
     + " ('fan' is in dcase2024 dev)"),
    ("dcase2021", ["bearing"], None, "unknown machine type 'bearing' for dcase2021; valid: " + ", ".join(TYPES_2021)),
    ("dcase2022", ["fan"], ["train"], "unknown part 'train' for dcase2022; valid: dev, eval-train, eval-test, eval"),
    ("dcase2020-eval", ["fan"], ["dev"], "--part applies only to dcase2021, dcase2022, dcase2023, dcase2024, "
                                         "dcase2025, not to dcase2020-eval"),
    ("mimii", ["fan"], ["dev"], "--part applies only to"),
])
def test_bad_part_or_type_for_the_year_is_a_one_line_error(tmp_path, dataset, types, parts, message):
    with pytest.raises(ValueError, match="^" + re.escape(message)) as err:
        dl.download(dataset, types, tmp_path, parts=parts)
    assert "\n" not in str(err.value)
    assert tree(tmp_path) == set()


def test_default_parts_take_each_type_where_the_year_has_it():
    assert [a.key for a in dl.select("dcase2025", "fan,ToyPet")] == [
        "dev_fan.zip", "eval_data_ToyPet_train.zip", "eval_data_ToyPet_test.zip"]
    assert [a.key for a in dl.select("dcase2022", ["FAN"], parts="dev,eval-test")] == [
        "dev_fan.zip", "eval_data_fan_test.zip"]


# --------------------------------------------------------------------------------------------------
# DCASE 2024 end to end, with archives in the official inner layout (one <type>/ folder; 1-based numbering)

DEV_RECORD, TRAIN_RECORD, TEST_RECORD = 10902294, 11259435, 11363076


def dev_2024(machine: str, n: int = 30) -> bytes:
    members = {f"{machine}/train/section_00_source_train_normal_{i:04d}_mdl_A_spd_{i % 7}.wav": bytes([i]) * 701
               for i in range(1, n + 1)}
    members.update({f"{machine}/test/section_00_{d}_test_{lab}_0001_mdl_B_spd_2.wav": f"{d}{lab}".encode() * 50
                    for d in ("source", "target") for lab in ("normal", "anomaly")})
    members[f"{machine}/attributes_00.csv"] = b"file_name,d1p,d1v\n"
    return make_zip(members)


def eval_train_2024(machine: str, n: int = 30) -> bytes:
    members = {f"{machine}/train/section_00_target_train_normal_{i:04d}_noAttribute.wav": bytes([i + 1]) * 503
               for i in range(1, n + 1)}
    members[f"{machine}/attributes_00.csv"] = b"file_name,d1p,d1v\n"
    return make_zip(members)


def eval_test_2024(machine: str) -> bytes:
    return make_zip({f"{machine}/test/section_00_test_{i:04d}.wav": bytes([i]) * 211 for i in range(1, 21)})


@pytest.fixture
def year2024(zenodo):
    files = {
        DEV_RECORD: {"dev_fan.zip": dev_2024("fan"), "dev_valve.zip": dev_2024("valve")},
        TRAIN_RECORD: {"eval_data_3DPrinter_train.zip": eval_train_2024("3DPrinter", 3),  # replaced: never fetched
                       "eval_data_3DPrinter_train_r2.zip": eval_train_2024("3DPrinter")},
        TEST_RECORD: {"eval_data_3DPrinter_test.zip": eval_test_2024("3DPrinter")},
    }
    for record, blobs in files.items():
        zenodo.add_record(record, blobs)
    return {key: data for blobs in files.values() for key, data in blobs.items()}


def get(zenodo, out, machine_types, dataset="dcase2024", **kw):
    kw.setdefault("progress", False)
    return dl.download(dataset, list(machine_types), out, base_url=zenodo.url, **kw)


def members(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return {n: z.read(n) for n in z.namelist()}


def test_2024_downloads_verifies_and_unpacks_into_its_year_folder(zenodo, year2024, tmp_path):
    out = tmp_path / "data"
    paths = get(zenodo, out, ["fan", "3DPrinter"])
    year = out / "dcase2024"
    assert paths == [year / "dev_data" / "fan", year / "eval_data" / "3DPrinter"]
    for key, folder in [("dev_fan.zip", "dev_data"), ("eval_data_3DPrinter_train_r2.zip", "eval_data"),
                        ("eval_data_3DPrinter_test.zip", "eval_data")]:
        for name, data in members(year2024[key]).items():
            assert (year / folder / name).read_bytes() == data
        marker = json.loads((year / ".mimimi-download" / f"{key}.done").read_text())
        assert marker["md5"] == hashlib.md5(year2024[key]).hexdigest()
        assert marker["extracted_to"] == f"dcase2024/{folder}"
    both = {**members(year2024["eval_data_3DPrinter_train_r2.zip"]),
            **members(year2024["eval_data_3DPrinter_test.zip"])}
    assert tree(year / "eval_data") == set(both)  # additional training and evaluation test side by side
    assert {p.split("/", 1)[0] for p in tree(out)} == {"dcase2024"}  # nothing beside the year folder
    assert [p for p, _ in zenodo.log] == [  # the three listings first, then only the wanted archives: neither
        f"/api/records/{DEV_RECORD}", f"/api/records/{TRAIN_RECORD}", f"/api/records/{TEST_RECORD}",  # valve nor
        zenodo.file_path(DEV_RECORD, "dev_fan.zip"),  # the replaced eval_data_3DPrinter_train.zip
        zenodo.file_path(TRAIN_RECORD, "eval_data_3DPrinter_train_r2.zip"),
        zenodo.file_path(TEST_RECORD, "eval_data_3DPrinter_test.zip"),
    ]
    n = len(zenodo.log)
    assert get(zenodo, out, ["fan", "3DPrinter"]) == paths and len(zenodo.log) == n  # rerun: no request


def test_2024_resume_requests_only_the_missing_bytes(zenodo, year2024, tmp_path):
    data = year2024["eval_data_3DPrinter_train_r2.zip"]
    k = len(data) // 3
    state = tmp_path / "dcase2024" / ".mimimi-download"
    state.mkdir(parents=True)
    (state / "eval_data_3DPrinter_train_r2.zip.part").write_bytes(data[:k])
    get(zenodo, tmp_path, ["3DPrinter"], parts="eval-train", keep_archives=True)
    path = zenodo.file_path(TRAIN_RECORD, "eval_data_3DPrinter_train_r2.zip")
    assert zenodo.file_requests() == [(path, f"bytes={k}-")] and zenodo.sent[path] == len(data) - k
    assert (state / "eval_data_3DPrinter_train_r2.zip").read_bytes() == data
    assert (tmp_path / "dcase2024" / "eval_data" / "3DPrinter" / "attributes_00.csv").exists()


def test_2024_checksum_mismatch_is_fetched_again_then_refused(zenodo, year2024, tmp_path):
    path = zenodo.file_path(DEV_RECORD, "dev_fan.zip")
    zenodo.corrupt[path] = 1  # once: deleted and downloaded again
    get(zenodo, tmp_path / "a", ["fan"], parts="dev")
    assert zenodo.file_requests(path) == [(path, None), (path, None)]
    assert (tmp_path / "a" / "dcase2024" / "dev_data" / "fan" / "attributes_00.csv").exists()
    zenodo.corrupt[path] = 99  # always: a one-line error with both checksums, nothing left behind
    data = year2024["dev_fan.zip"]
    with pytest.raises(DownloadError) as err:
        get(zenodo, tmp_path / "b", ["fan"], parts="dev", retries=1)
    msg = str(err.value)
    assert msg.startswith("dev_fan.zip: MD5 mismatch") and "\n" not in msg
    assert hashlib.md5(data).hexdigest() in msg and hashlib.md5(corrupted(data)).hexdigest() in msg
    assert tree(tmp_path / "b") == set()


def test_years_sharing_archive_names_do_not_share_markers(zenodo, tmp_path):
    zenodo.add_record(6355122, {"dev_fan.zip": make_zip({"fan/train/section_00_source_train_normal_0000_a.wav":
                                                         b"22"})})
    zenodo.add_record(15097779, {"dev_fan.zip": make_zip({"fan/train/section_00_source_train_normal_0001_a.wav":
                                                          b"25"})})
    get(zenodo, tmp_path, ["fan"], dataset="dcase2022", parts="dev")
    get(zenodo, tmp_path, ["fan"], dataset="dcase2025", parts="dev")  # dcase2022's dev_fan.zip.done is not it
    assert tree(tmp_path / "dcase2022" / "dev_data") == {"fan/train/section_00_source_train_normal_0000_a.wav"}
    assert tree(tmp_path / "dcase2025" / "dev_data") == {"fan/train/section_00_source_train_normal_0001_a.wav"}


def test_an_archive_without_its_type_folder_is_unpacked_with_a_warning(zenodo, tmp_path, caplog):
    zenodo.add_record(6586456, {"eval_data_fan_test.zip": make_zip({"test/section_03_test_0000.wav": b"x"})})
    with caplog.at_level("WARNING", logger="mimimi.data.download"):
        get(zenodo, tmp_path, ["fan"], dataset="dcase2022", parts="eval-test")
    assert tree(tmp_path / "dcase2022" / "eval_data") == {"test/section_03_test_0000.wav"}
    assert "eval_data_fan_test.zip: unpacked test into" in caplog.text and "not one 'fan' folder" in caplog.text


def test_2024_unpacked_year_is_indexed(zenodo, year2024, tmp_path):
    from mimimi.data import index

    get(zenodo, tmp_path, ["fan", "3DPrinter"])
    clips = index.index_dataset(tmp_path / "dcase2024").clips
    assert set(clips["machine_type"]) == {"fan", "3DPrinter"} and set(clips["layout"]) == {"dcase2022"}
    assert len(clips) == 30 + 4 + 30 + 20 and not index.index_dataset(tmp_path / "dcase2024").unmatched
    hidden = clips[(clips["machine_type"] == "3DPrinter") & (clips["split"] == "test")]
    assert len(hidden) == 20 and set(hidden["label"]) == {"unknown"}  # evaluation test set: labels hidden


# --------------------------------------------------------------------------------------------------
# DCASE 2023: the records API must agree with the known MD5s, and the bytes with both


def add_2023_dev_fan(zenodo, data: bytes, listed_md5: str) -> str:
    zenodo.add_record(7882613, {"dev_fan.zip": data})
    zenodo.records["7882613"]["files"][0]["checksum"] = "md5:" + listed_md5
    return zenodo.file_path(7882613, "dev_fan.zip")


def test_2023_record_listing_another_md5_than_the_known_one_downloads_nothing(zenodo, tmp_path):
    data = dev_2024("fan")
    add_2023_dev_fan(zenodo, data, hashlib.md5(data).hexdigest())  # self-consistent, but not the real file
    with pytest.raises(DownloadError) as err:
        get(zenodo, tmp_path, ["fan"], dataset="dcase2023", parts="dev")
    assert str(err.value) == (
        f"record 7882613 lists dev_fan.zip with MD5 {hashlib.md5(data).hexdigest()}, not the known "
        "9348591e96fb0ad499a1e33b082562fc; the file changed or the mirror serves another one, so nothing was "
        "downloaded")
    assert zenodo.file_requests() == [] and tree(tmp_path) == set()


def test_2023_bytes_not_matching_the_known_md5_are_refused(zenodo, tmp_path):
    data = dev_2024("fan")
    path = add_2023_dev_fan(zenodo, data, MD5_2023["dev_fan.zip"])  # the listing is right, the bytes are not
    with pytest.raises(DownloadError, match=rf"^dev_fan\.zip: MD5 mismatch: expected {MD5_2023['dev_fan.zip']}, "
                                            rf"got {hashlib.md5(data).hexdigest()}"):
        get(zenodo, tmp_path, ["fan"], dataset="dcase2023", parts="dev", retries=1)
    assert len(zenodo.file_requests(path)) == 2 and tree(tmp_path) == set()


def test_2023_bytes_matching_the_known_md5_are_unpacked(zenodo, tmp_path, monkeypatch):
    data = dev_2024("fan")
    md5 = hashlib.md5(data).hexdigest()
    monkeypatch.setitem(dl.DATASETS, "dcase2023", dl.dataset_spec(
        dataclasses.replace(dcase.YEARS["dcase2023"], md5={"dev_fan.zip": md5})))
    add_2023_dev_fan(zenodo, data, md5)
    paths = get(zenodo, tmp_path, ["fan"], dataset="dcase2023", parts="dev")
    assert paths == [tmp_path / "dcase2023" / "dev_data" / "fan"]


# --------------------------------------------------------------------------------------------------
# Command line


def test_cli_dry_run_for_a_year_and_part(zenodo, tmp_path, capsys):
    zenodo.add_record(7882613, {f"dev_{t}.zip": dev_2024(t, 2) for t in ("fan", "valve")})
    for f in zenodo.records["7882613"]["files"]:
        f["checksum"] = "md5:" + MD5_2023[f["key"]]
    argv = ["--dataset", "dcase2023", "--part", "dev", "--machine-types", "fan,valve", "--out", str(tmp_path),
            "--base-url", zenodo.url, "--dry-run"]
    assert command.main(argv) == 0
    printed = capsys.readouterr().out
    assert re.findall(r"^get +(\S+) .* md5 (\S+) ", printed, flags=re.M) == [
        ("dev_fan.zip", MD5_2023["dev_fan.zip"]), ("dev_valve.zip", MD5_2023["dev_valve.zip"])]
    assert f"->  {tmp_path / 'dcase2023' / 'dev_data'}" in printed and zenodo.file_requests() == []


def test_cli_type_the_year_lacks_is_one_error_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        command.main(["--dataset", "dcase2023", "--part", "dev", "--machine-types", "fan,bandsaw", "--out",
                      str(tmp_path)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: unknown machine type 'bandsaw' for dcase2023 dev; valid:")
    assert tree(tmp_path) == set()


def test_cli_urls_need_no_out_and_no_network(capsys):
    from mimimi import cli

    assert cli.main(["download", "--dataset", "dcase2024", "--part", "eval", "--machine-types", "RoboticArm",
                     "--urls"]) == 0
    assert capsys.readouterr().out.split() == [
        "https://zenodo.org/records/11259435/files/eval_data_RoboticArm_train_r2.zip",
        "https://zenodo.org/records/11363076/files/eval_data_RoboticArm_test.zip"]
    with pytest.raises(SystemExit) as exit_:
        command.main(["--dataset", "dcase2024"])
    assert exit_.value.code == 2 and "--out" in capsys.readouterr().err
