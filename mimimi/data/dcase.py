"""The facts DCASE Task 2 (2020–2025) and MIMII fix, in one table that the index, the synthesiser, the metrics,
the report and the downloader read.

One vocabulary: ``dcaseYYYY`` always means "as DCASE YYYY did it", and what several years share is named after
the first year that had it.

* a **year** (``YEARS``; the downloader's ``--dataset``, which fetches DCASE 2020 as ``dcase2020-dev`` and
  ``dcase2020-eval``): ``dcase2020`` … ``dcase2025`` and ``mimii``;
* a **layout** (``LAYOUTS``; the index's ``layout`` column, the synthesiser's ``--layout``), a file naming:
  ``dcase2020``, ``dcase2021``, ``dcase2022`` (2022 to 2025 name their files alike) and ``mimii``;
* a **protocol** (``PROTOCOLS``; ``metrics.official_score``), an official score, named after the layout it
  came with: ``dcase2020`` (MIMII's too), ``dcase2021``, ``dcase2022`` (2022 to 2025).

So the year ``dcase2023`` is written in the layout ``dcase2022`` and scored by the protocol ``dcase2022``:

>>> YEARS["dcase2023"].layout.name, YEARS["dcase2023"].protocol.name, layout_of("dcase2023")
('dcase2022', 'dcase2022', 'dcase2022')
>>> LAYOUTS["mimii"].id_role, LAYOUTS["dcase2022"].id_role, LAYOUTS["mimii"].protocol.name
('machine ID', 'section', 'dcase2020')
>>> YEARS["dcase2024"].eval_sections, YEARS["dcase2024"].records[1].archive("RoboticArm")
(('00',), 'eval_data_RoboticArm_train_r2.zip')

Sources: the official baselines' READMEs, ``machine_type_*.yaml`` and ``download_path_*.yaml`` / download
scripts, the evaluators' code (2021–2024), soundata's ``dcase23_task2`` loader (the 2023 MD5s).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

DOMAINS = ("source", "target")  # a clip's domain (2021+); a clip of a naming without domains is a source clip


@dataclass(frozen=True)
class Protocol:
    """An official score: the values each group (machine type and ID, or section[, domain]) gives and how
    they pool, and the file names the evaluator reads."""

    name: str
    pooled: tuple[str, ...]  # the per-group values the score pools
    mean: str  # "arithmetic", or "harmonic" (each value floored at machine epsilon, as the evaluators)
    description: str
    submission: str  # a score / decision file's name: str.format with kind, type, id and (2021) domain

    @property
    def per_domain(self) -> bool:
        """Whether each domain has its own submission file (2021)."""
        return "{domain}" in self.submission


@dataclass(frozen=True)
class Layout:
    """A file naming: what ``machine_id`` holds, which domains its clips are in, and its official score."""

    name: str
    title: str
    id_role: str  # what machine_id holds: "machine ID" (id_XX) or "section" (section_XX)
    domains: tuple[str, ...]  # DOMAINS, or only the source where names carry no domain
    protocol: Protocol


@dataclass(frozen=True)
class Record:
    """One Zenodo record of a year: which part it is, its archive names and where they unpack."""

    part: str  # "dev", "eval-train" (additional training set), "eval-test" (evaluation test set); "" (MIMII)
    record_id: int
    pattern: str  # archive name, str.format with {type} and {snr}
    folder: str  # where its archives unpack, below the year's folder; same fields
    machine_types: tuple[str, ...]
    renamed: tuple[tuple[str, str], ...] = ()  # (type, archive name) where the record breaks the pattern

    def archive(self, machine_type: str, snr: int | None = None) -> str:
        """This record's archive name for one type (and SNR)."""
        return dict(self.renamed).get(machine_type) or self.pattern.format(type=machine_type, snr=snr)


@dataclass(frozen=True)
class Year:
    """One challenge year (or MIMII): its naming, sections, archives and where the downloader puts them."""

    name: str
    title: str
    layout: Layout
    dev_sections: tuple[str, ...]  # (): machine_id is a machine ID
    eval_sections: tuple[str, ...]
    target_train: int | None  # target-domain training clips per development section; None: no domains
    records: tuple[Record, ...]
    md5: Mapping[str, str] = field(default_factory=dict)  # archive -> MD5 known from a second source
    snrs: tuple[int, ...] = ()  # MIMII's noise levels (dB), one archive each
    folder: str = ""  # below the downloader's --out: "" (--out itself) or the year's own folder
    downloads: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (--dataset, parts) where parts download apart

    @property
    def protocol(self) -> Protocol:
        return self.layout.protocol

    @property
    def machine_types(self) -> tuple[str, ...]:
        """Every type of every record, development ones first."""
        return tuple(dict.fromkeys(t for r in self.records for t in r.machine_types))


# ------------------------------------------------------------------------------------------- protocols
PROTOCOLS: dict[str, Protocol] = {p.name: p for p in (
    Protocol("dcase2020", ("auc", "pauc"), "arithmetic",
             "DCASE 2020: arithmetic mean of AUC and pAUC over every machine type and machine ID",
             "{kind}_{type}_id_{id}.csv"),
    Protocol("dcase2021", ("auc", "pauc"), "harmonic",
             "DCASE 2021: harmonic mean of AUC and pAUC over every machine type, section and domain",
             "{kind}_{type}_section_{id}_{domain}_test.csv"),
    Protocol("dcase2022", (*(f"auc_{d}" for d in DOMAINS), "pauc"), "harmonic",
             "DCASE 2022–2025: harmonic mean of AUC (source), AUC (target) and pAUC over every machine type and "
             "section", "{kind}_{type}_section_{id}_test.csv"),
)}

# --------------------------------------------------------------------------------------------- layouts
LAYOUTS: dict[str, Layout] = {lay.name: lay for lay in (
    Layout("dcase2020", "DCASE 2020 Task 2", "machine ID", DOMAINS[:1], PROTOCOLS["dcase2020"]),
    Layout("dcase2021", "DCASE 2021 Task 2", "section", DOMAINS, PROTOCOLS["dcase2021"]),
    Layout("dcase2022", "DCASE 2022–2025 Task 2", "section", DOMAINS, PROTOCOLS["dcase2022"]),
    Layout("mimii", "MIMII", "machine ID", DOMAINS[:1], PROTOCOLS["dcase2020"]),
)}
SECTION_LAYOUTS = tuple(name for name, lay in LAYOUTS.items() if lay.id_role == "section")

# ----------------------------------------------------------------------------------------------- years
# machine types as the baselines' machine_type_*.yaml and download scripts spell them
_TYPES_2020 = ("fan", "pump", "slider", "valve", "ToyCar", "ToyConveyor")  # dev = eval
_TYPES_2021 = ("fan", "gearbox", "pump", "slider", "valve", "ToyCar", "ToyTrain")  # dev = eval
_DEV_2022_ON = ("bearing", "fan", "gearbox", "slider", "ToyCar", "ToyTrain", "valve")  # 2022-2025 dev
_EVAL_2023 = ("bandsaw", "grinder", "shaker", "ToyDrone", "ToyNscale", "ToyTank", "Vacuum")
_EVAL_2024 = ("3DPrinter", "AirCompressor", "Scanner", "ToyCircuit", "HoveringDrone", "HairDryer", "ToothBrush",
              "RoboticArm", "BrushlessMotor")
_EVAL_2025 = ("ToyRCCar", "ToyPet", "HomeCamera", "AutoTrash", "Polisher", "ScrewFeeder", "BandSealer",
              "CoffeeGrinder")

# DCASE 2023 MD5s as soundata's dcase23_task2 loader pins them (REMOTES): a second source beside Zenodo's
# records API, which must agree with it
_MD5_2023 = {
    "dev_bearing.zip": "8a813bc8d8f156b5395bfccdfac7673c",
    "dev_fan.zip": "9348591e96fb0ad499a1e33b082562fc",
    "dev_gearbox.zip": "b6e55f6a31faa0fc8569ec0afdd53ccf",
    "dev_slider.zip": "b3f8dee36b4718c36d659a4fd1c4afe0",
    "dev_ToyCar.zip": "4e3bf15f4101ed4ed4f1fecde2e2b2a3",
    "dev_ToyTrain.zip": "6b02a6c65eebb3b8b1ae59a6b25bb897",
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


def _records(records: tuple[int, int, int], dev_pattern: str, dev_types: tuple[str, ...],
             eval_types: tuple[str, ...], renamed_train: tuple[tuple[str, str], ...] = ()) -> tuple[Record, ...]:
    """A 2021+ year's development set, additional training set and evaluation test set."""
    dev, train, test = records
    return (Record("dev", dev, dev_pattern, "dev_data", dev_types),
            Record("eval-train", train, "eval_data_{type}_train.zip", "eval_data", eval_types, renamed_train),
            Record("eval-test", test, "eval_data_{type}_test.zip", "eval_data", eval_types))


_SECTIONS_2021 = (("00", "01", "02"), ("03", "04", "05"))  # (dev, eval); 2022 too
_ONE_SECTION = (("00",), ("00",))  # 2023-2025: one section per machine type

YEARS: dict[str, Year] = {y.name: y for y in (
    Year("dcase2020", "DCASE 2020 Task 2", LAYOUTS["dcase2020"], (), (), None, (
        Record("dev", 3678171, "dev_data_{type}.zip", "dev_data", _TYPES_2020),
        Record("eval-train", 3727685, "eval_data_train_{type}.zip", "eval_data", _TYPES_2020),  # additional training
        Record("eval-test", 3841772, "eval_data_test_{type}.zip", "eval_data", _TYPES_2020),  # unlabeled
    ), downloads=(("dcase2020-dev", ("dev",)), ("dcase2020-eval", ("eval-train", "eval-test")))),
    # records as the official baselines' download_path_*.yaml name them (2023 dev: 7882613, as in soundata)
    Year("dcase2021", "DCASE 2021 Task 2", LAYOUTS["dcase2021"], *_SECTIONS_2021, 3,
         _records((4562016, 4660992, 4884786), "dev_data_{type}.zip", _TYPES_2021, _TYPES_2021), folder="dcase2021"),
    Year("dcase2022", "DCASE 2022 Task 2", LAYOUTS["dcase2022"], *_SECTIONS_2021, 10,
         _records((6355122, 6462969, 6586456), "dev_{type}.zip", _DEV_2022_ON, _DEV_2022_ON), folder="dcase2022"),
    Year("dcase2023", "DCASE 2023 Task 2", LAYOUTS["dcase2022"], *_ONE_SECTION, 10,
         _records((7882613, 7830345, 7860847), "dev_{type}.zip", _DEV_2022_ON, _EVAL_2023), md5=_MD5_2023,
         folder="dcase2023"),
    # 2024's first 3DPrinter and RoboticArm training archives were replaced by *_r2 (baseline README v3.1.1)
    Year("dcase2024", "DCASE 2024 Task 2", LAYOUTS["dcase2022"], *_ONE_SECTION, 10,
         _records((10902294, 11259435, 11363076), "dev_{type}.zip", _DEV_2022_ON, _EVAL_2024,
                  (("3DPrinter", "eval_data_3DPrinter_train_r2.zip"),
                   ("RoboticArm", "eval_data_RoboticArm_train_r2.zip"))),
         folder="dcase2024"),
    Year("dcase2025", "DCASE 2025 Task 2", LAYOUTS["dcase2022"], *_ONE_SECTION, 10,
         _records((15097779, 15392814, 15519362), "dev_{type}.zip", _DEV_2022_ON, _EVAL_2025), folder="dcase2025"),
    Year("mimii", "MIMII", LAYOUTS["mimii"], (), (), None,
         (Record("", 3384388, "{snr}_dB_{type}.zip", "{snr}_dB_{type}", ("fan", "pump", "slider", "valve")),),
         snrs=(6, 0, -6)),
)}


# ------------------------------------------------------------------------------------------- functions
def layout_of(name: str) -> str:
    """The layout a layout or year name stands for (``dcase2024`` -> ``dcase2022``); ValueError for others.

    >>> layout_of("dcase2021"), layout_of("mimii"), layout_of("dcase2025")
    ('dcase2021', 'mimii', 'dcase2022')
    """
    if name in LAYOUTS:
        return name
    if name in YEARS:
        return YEARS[name].layout.name
    raise ValueError(f"unknown layout {name!r}; layouts: {', '.join(LAYOUTS)} (a year {', '.join(YEARS)} stands "
                     "for its layout)")


def years_of(layout: str) -> tuple[Year, ...]:
    """The years written in ``layout``, oldest first.

    >>> [y.name for y in years_of("dcase2022")]
    ['dcase2022', 'dcase2023', 'dcase2024', 'dcase2025']
    """
    return tuple(y for y in YEARS.values() if y.layout.name == layout)


def protocol_for(layouts: str | Iterable[str]) -> str:
    """The official-score protocol of an index's layouts (one name or several, e.g. a ``layout`` column):
    ``"dcase2020"`` and ``"mimii"`` -> ``"dcase2020"``, ``"dcase2021"`` -> ``"dcase2021"``, ``"dcase2022"``
    (the 2022–2025 naming) -> ``"dcase2022"``. Layouts of different protocols cannot share one score.

    >>> protocol_for(["mimii", "dcase2020"]), protocol_for("dcase2022")
    ('dcase2020', 'dcase2022')
    """
    names = sorted({str(v) for v in ([layouts] if isinstance(layouts, str) else layouts)})
    if not names:
        raise ValueError("no layouts given: cannot pick a scoring protocol")
    unknown = [n for n in names if n not in LAYOUTS]
    if unknown:
        raise ValueError(f"unknown layout(s) {unknown}; known: {sorted(LAYOUTS)}")
    protocols = sorted({LAYOUTS[n].protocol.name for n in names})
    if len(protocols) > 1:
        raise ValueError(f"layouts {names} mix the scoring protocols {', '.join(protocols)}; score each apart")
    return protocols[0]


def submission_file(kind: str, machine_type: str, machine_id: str, protocol: str, domain: str | None = None) -> str:
    """The challenge's name of one score (``kind="anomaly_score"``) or decision (``"decision_result"``) file.

    >>> submission_file("anomaly_score", "fan", "00", "dcase2020")
    'anomaly_score_fan_id_00.csv'
    >>> submission_file("anomaly_score", "fan", "03", "dcase2021", "target")
    'anomaly_score_fan_section_03_target_test.csv'
    >>> submission_file("decision_result", "ToyCar", "00", "dcase2022")
    'decision_result_ToyCar_section_00_test.csv'
    """
    return PROTOCOLS[protocol].submission.format(kind=kind, type=machine_type, id=machine_id, domain=domain)
