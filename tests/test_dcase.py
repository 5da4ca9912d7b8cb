"""mimimi.data.dcase, the one table of the DCASE years: every reader (index, synthesiser, metrics, report,
downloader) speaks its vocabulary, and the data modules stay library code below their commands."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from mimimi import metrics as M
from mimimi import synth as synth_command
from mimimi.config import ConfigError
from mimimi.data import dcase
from mimimi.data import download as dl
from mimimi.data import synth as S
from mimimi.data.index import DatasetError, DatasetIndex, index_dataset
from tuning.space import SyntheticData

REPO = Path(__file__).resolve().parents[1]

ONE_CLIP = {  # layout -> one clip the index files under it
    "dcase2020": "fan/train/normal_id_00_00000000.wav",
    "dcase2021": "fan/source_test/section_00_source_test_normal_0000.wav",
    "dcase2022": "fan/test/section_00_source_test_normal_0000_vel_100.wav",
    "mimii": "6_dB_fan/fan/id_00/normal/00000000.wav",
}


def test_every_layout_the_index_writes_is_in_the_table_with_an_id_role_and_a_protocol(tmp_path):
    assert set(ONE_CLIP) == set(dcase.LAYOUTS)
    for layout, rel in ONE_CLIP.items():
        (tmp_path / layout / rel).parent.mkdir(parents=True)
        (tmp_path / layout / rel).touch()
        idx = index_dataset(tmp_path / layout)
        assert list(idx.clips.layout) == [layout]
        assert idx.id_role == dcase.LAYOUTS[layout].id_role
        assert dcase.protocol_for(idx.clips.layout) == dcase.LAYOUTS[layout].protocol.name
        assert set(idx.clips.domain) <= set(dcase.LAYOUTS[layout].domains)
    both = index_dataset(tmp_path).clips
    assert set(both.layout) == set(dcase.LAYOUTS)
    assert set(dcase.SECTION_LAYOUTS) == {"dcase2021", "dcase2022"}
    with pytest.raises(DatasetError, match="mixes"):
        DatasetIndex(tmp_path, both).id_role


def test_the_synthesisers_layouts_are_the_indexs(tmp_path):
    assert S.LAYOUTS == ("dcase2020", "dcase2021", "dcase2022") and set(S.LAYOUTS) < set(dcase.LAYOUTS)
    assert S.DOMAINS is dcase.DOMAINS
    for layout in S.LAYOUTS:
        sectioned = {} if layout == "dcase2020" else {"n_target_train": 1}
        S.generate(tmp_path / layout, ["valve"], ["00"], 1, 1, 1, seconds=0.05, layout=layout, **sectioned)
        assert set(index_dataset(tmp_path / layout).clips.layout) == {layout}
    # the defaults are those of the newest year with that naming
    assert S.layout_defaults("dcase2021") == (("00", "01", "02"), 3)
    assert S.layout_defaults("dcase2022") == (("00",), 10) == (dcase.YEARS["dcase2025"].dev_sections, 10)


def test_a_year_is_not_a_layout_for_the_library_but_stands_for_its_layout_on_the_command_line(tmp_path, capsys):
    with pytest.raises(ValueError, match=r"^unknown layout 'dcase2023'; .* \(dcase2023 is a year; its layout is "
                                         r"dcase2022\)$"):
        S.generate(tmp_path / "lib", ["valve"], ["00"], 1, 1, 1, seconds=0.05, layout="dcase2023")
    args = ["--machine-types", "valve", "--train", "1", "--target-train", "1", "--test-normal", "1",
            "--test-anomaly", "1", "--seconds", "0.05", "--workers", "1"]
    assert synth_command.main(["--out", str(tmp_path / "year"), "--layout", "dcase2023", *args]) == 0
    assert "(dcase2022 layout)" in capsys.readouterr().out
    assert synth_command.main(["--out", str(tmp_path / "layout"), "--layout", "dcase2022", *args]) == 0
    year, layout = (sorted(p.relative_to(tmp_path / d) for p in (tmp_path / d).rglob("*")) for d in ("year", "layout"))
    assert year == layout and len(year) > 6
    for bad in ("mimii", "dcase2019"):
        with pytest.raises(SystemExit):
            synth_command.main(["--out", str(tmp_path / bad), "--layout", bad, *args])
        assert "--layout" in capsys.readouterr().err and not (tmp_path / bad).exists()
    assert SyntheticData(layout="dcase2024", machine_types=("fan", "valve"), ids=("00",)).layout == "dcase2022"
    with pytest.raises(ConfigError, match="synthetic.layout: unknown layout 'dcase2019'"):
        SyntheticData(layout="dcase2019")


def test_the_metrics_and_report_protocols_are_the_tables():
    assert M.PROTOCOLS is dcase.PROTOCOLS and M.DOMAINS is dcase.DOMAINS
    assert set(M.OFFICIAL_COLUMNS) == set(dcase.PROTOCOLS) == set(M.OFFICIAL_DESCRIPTIONS)
    for name, protocol in dcase.PROTOCOLS.items():
        assert set(protocol.pooled) <= set(M.OFFICIAL_COLUMNS[name]) and protocol.mean in ("arithmetic", "harmonic")
        assert dcase.LAYOUTS[name].protocol is protocol  # each protocol is named after the layout it came with
        assert M.OFFICIAL_DESCRIPTIONS[name] == protocol.description
        assert protocol.per_domain == ("domain" in M.OFFICIAL_COLUMNS[name])  # 2021: its own file per domain
    assert {lay.protocol.name for lay in dcase.LAYOUTS.values()} == set(dcase.PROTOCOLS)


def test_every_year_is_consistent_and_the_downloaders_datasets_are_its_years():
    assert list(dcase.YEARS) == ["dcase2020", "dcase2021", "dcase2022", "dcase2023", "dcase2024", "dcase2025",
                                 "mimii"]
    names = []
    for year in dcase.YEARS.values():
        sectioned = year.layout.id_role == "section"
        assert bool(year.dev_sections) == bool(year.eval_sections) == sectioned
        assert (year.target_train is not None) == sectioned == (year.layout.domains == dcase.DOMAINS)
        assert dcase.layout_of(year.name) == year.layout.name and year in dcase.years_of(year.layout.name)
        assert set(year.md5) <= {r.archive(t) for r in year.records for t in r.machine_types}
        for name, parts in year.downloads or ((year.name, None),):
            names.append(name)
            spec = dl.DATASETS[name]
            assert (spec.root, spec.snrs) == (year.folder, year.snrs)
            assert [p.record for p in spec.parts] == [r for r in year.records if parts is None or r.part in parts]
    assert names == list(dl.DATASETS)
    assert names == ["dcase2020-dev", "dcase2020-eval", "dcase2021", "dcase2022", "dcase2023", "dcase2024",
                     "dcase2025", "mimii"]
    assert sum(len(dcase.years_of(layout)) for layout in dcase.LAYOUTS) == len(dcase.YEARS)
    with pytest.raises(ValueError, match="unknown layout 'dcase2019'"):
        dcase.layout_of("dcase2019")


def imports(path: Path) -> set[str]:
    """The modules a file imports (``from a import b`` gives a and a.b)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return out


@pytest.mark.parametrize("name", ["dcase", "index", "synth", "download"])
def test_the_data_modules_are_library_code_below_their_commands(name):
    used = imports(REPO / "mimimi" / "data" / f"{name}.py")
    assert "argparse" not in used
    mine = {m for m in used if m.startswith("mimimi")}
    assert mine <= ({"mimimi.data", "mimimi.data.dcase"} if name != "dcase" else set()), mine
    command = imports(REPO / "mimimi" / f"{name}.py") if name != "dcase" else set()
    assert name == "dcase" or ("argparse" in command and f"mimimi.data.{name}" in command)
