"""Lab exports read as they are: CSV, the lab's column names, lab date formats, doses per kg,
combined tubes, optional donor ids; and every way of getting one of them wrong, with its message.
"""

import datetime as dt
import re
from pathlib import Path

import pytest

from nkflow.clinical import sheets
from nkflow.clinical.endpoints import UNKNOWN, nk_donor_is_hsct_donor
from nkflow.errors import ConfigError
from nkflow.schemas import check_against_schema, load_schema

PANELS, GATINGS = ["nk_v1", "treg_v1"], ["nk_v1", "treg_v1"]


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def lab_sheet(tmp_path, name, text, key, **fmt):
    return sheets.Sheet(key, write(tmp_path, name, text), **fmt)


# ------------------------------------------------------------------ shapes that are accepted


def test_a_csv_with_the_labs_column_names_reads_as_the_canonical_tsv(tmp_path):
    canon = write(
        tmp_path,
        "cbc.tsv",
        "patient_id\tdate\talc_value\talc_unit\n"
        "P1\t2024-02-06\t1.2\t10^9/L\nP1\t2024-02-20\tQNS\t10^9/L\n",
    )
    lab = lab_sheet(
        tmp_path,
        "cbc_export.csv",
        "patient,sample_date,alc,alc_unit,comment\n"
        "P1,06-Feb-2024,1.2,10^9/L,ok\nP1,20-FEB-2024,QNS,10^9/L,clotted\n",
        "cbc",
        columns={"patient_id": "patient", "date": "sample_date", "alc_value": "alc"},
    )
    a, wa = sheets.load_cbc(canon)
    b, wb = sheets.load_cbc(lab)
    cols = ["row", "patient_id", "date", "alc_per_ul", "alc_status", "alc_source_value"]
    assert a[cols].to_dict(orient="records") == b[cols].to_dict(orient="records")
    assert b.loc[0, "alc_per_ul"] == 1200.0
    assert b.loc[1, "date"] == dt.date(2024, 2, 20)
    # the warning names the file's own column and the nkflow column it stands for
    assert wb == [
        f"{lab.path}: row 2 (patient_id='P1', date='2024-02-20'): column 'alc' (alc_value): "
        "found 'QNS'; missing_alc: not a number; expected a count, read as missing"
    ]
    assert len(wa) == 1


@pytest.mark.parametrize(
    ("text", "order", "expected"),
    [
        ("2024-02-06", None, dt.date(2024, 2, 6)),
        ("2024-02-06 07:45", None, dt.date(2024, 2, 6)),
        ("2024-02-06T07:45:10", None, dt.date(2024, 2, 6)),
        ("06-Feb-2024", None, dt.date(2024, 2, 6)),
        ("6-feb-2024", None, dt.date(2024, 2, 6)),
        ("06/02/2024", "day_first", dt.date(2024, 2, 6)),
        ("06/02/2024", "month_first", dt.date(2024, 6, 2)),
        ("06.02.2024 08:00", "day_first", dt.date(2024, 2, 6)),
    ],
)
def test_dates_as_lab_systems_write_them(text, order, expected):
    assert sheets.parse_date(text, "x.csv", "row 1", "'date'", order=order) == expected


def test_a_day_month_date_without_a_stated_order_is_refused(tmp_path):
    sh = lab_sheet(
        tmp_path, "cbc.csv", "patient_id,date,alc_value,alc_unit\nP1,06/02/2024,1.2,G/L\n", "cbc"
    )
    msg = (
        f"{sh.path}: row 1 (patient_id='P1', date='06/02/2024'): column 'date': found "
        "'06/02/2024'; expected a date whose day/month order is known: 06/02/2024 could be day 6 "
        "of month 2 or month 6 day 2; fix: set sheet_format.cbc.date_order to day_first "
        "(06/02 = day 6) or month_first in config.yaml, or write dates as YYYY-MM-DD"
    )
    with pytest.raises(ConfigError, match=re.escape(msg)):
        sheets.load_cbc(sh)


@pytest.mark.parametrize(
    "bad", ["2024-02-30", "31-Apr-2024", "06-Fev-2024", "2024/02/06", "13/13/2024"]
)
def test_an_impossible_or_unknown_date_names_the_accepted_forms(tmp_path, bad):
    sh = lab_sheet(
        tmp_path,
        "cbc.csv",
        f"patient_id,date,alc_value,alc_unit\nP1,{bad},1.2,G/L\n",
        "cbc",
        date_order="day_first",
    )
    with pytest.raises(
        ConfigError,
        match=re.escape(
            f"column 'date': found {bad!r}; expected a real calendar date: YYYY-MM-DD, "
        ),
    ):
        sheets.load_cbc(sh)


def test_the_same_date_written_two_ways_is_one_key(tmp_path):
    sh = lab_sheet(
        tmp_path,
        "cbc.csv",
        "patient_id,date,alc_value,alc_unit\nP1,2024-02-06,1.2,G/L\nP1,06-Feb-2024,1.3,G/L\n",
        "cbc",
    )
    with pytest.raises(
        ConfigError,
        match=re.escape("rows 1 and 2: duplicate key (patient_id='P1', date='2024-02-06')"),
    ):
        sheets.load_cbc(sh)


def test_semicolon_separated_export(tmp_path):
    sh = lab_sheet(
        tmp_path,
        "cbc.csv",
        "patient_id;date;alc_value;alc_unit\nP1;2024-02-06;1,2;G/L\n",
        "cbc",
        delimiter="semicolon",
    )
    df, warnings = sheets.load_cbc(sh)
    # a decimal comma is not a number nkflow guesses at: the ALC is missing, with a warning
    assert df.loc[0, "alc_status"] == "missing"
    assert "found '1,2'" in warnings[0]


def test_a_comma_file_named_tsv_says_what_is_wrong(tmp_path):
    p = write(tmp_path, "cbc.tsv", "patient_id,date,alc_value,alc_unit\nP1,2024-02-06,1.2,G/L\n")
    with pytest.raises(
        ConfigError,
        match=re.escape(
            "header: required column(s) patient_id, date, alc_value, alc_unit missing (the header "
            "is one column holding separators: the file is not tab-separated; name it .csv for "
            "commas, or set sheet_format.cbc.delimiter)"
        ),
    ):
        sheets.load_cbc(sheets.Sheet("cbc", p))


def test_dose_per_kg_with_weight_gives_the_same_infusion_as_the_total(tmp_path):
    total = write(
        tmp_path,
        "inf.tsv",
        "patient_id\tinfusion_number\tinfusion_date\tcells_infused\tbody_weight_kg\n"
        "P1\t1\t2024-02-06\t216000000\t72\n",
    )
    per_kg = lab_sheet(
        tmp_path,
        "inf.csv",
        "patient,infusion,date,dose_per_kg,weight_kg\nP1,1,06-Feb-2024,3.0e6,72\n",
        "infusions",
        columns={
            "patient_id": "patient",
            "infusion_number": "infusion",
            "infusion_date": "date",
            "cells_per_kg": "dose_per_kg",
            "body_weight_kg": "weight_kg",
        },
    )
    a, _ = sheets.load_infusions(total)
    b, _ = sheets.load_infusions(per_kg)
    for col in ("patient_id", "infusion_number", "infusion_date", "cells_infused", "cells_per_kg"):
        assert a.loc[0, col] == b.loc[0, col], col
    assert b.loc[0, "cells_per_kg"] == 3.0e6
    assert (a.loc[0, "dose_given_as"], b.loc[0, "dose_given_as"]) == ("total", "per_kg")
    # no donor-id columns: kept empty, and the relation is unknown, never "different donors"
    assert b.loc[0, "nk_donor_id"] == b.loc[0, "hsct_donor_id"] == ""


def test_a_per_kg_dose_in_the_total_column_is_refused(tmp_path):
    p = write(
        tmp_path,
        "inf.tsv",
        "patient_id\tinfusion_number\tinfusion_date\tcells_infused\tbody_weight_kg\n"
        "P1\t1\t2024-02-06\t3.0e6\t72\n",
    )
    msg = (
        f"{p}: row 1 (patient_id='P1', infusion_number='1'): column 'cells_infused': found "
        "'3.0e6'; expected a dose within the plausible 1e+05-1e+08 NK cells/kg "
        "(endpoints.dose_plausible_per_kg; the protocol range is endpoints.dose_range_per_kg); "
        "3.0e6 cells / 72 kg = 4.17e+04 cells/kg, below the plausible 1e+05; 3.0e6 looks like a "
        "dose per kg written in the total column; fix: move it to a cells_per_kg column"
    )
    with pytest.raises(ConfigError, match=re.escape(msg)):
        sheets.load_infusions(p)


def test_a_total_in_the_per_kg_column_is_refused(tmp_path):
    p = write(
        tmp_path,
        "inf.tsv",
        "patient_id\tinfusion_number\tinfusion_date\tcells_per_kg\tbody_weight_kg\n"
        "P1\t1\t2024-02-06\t2.16e8\t72\n",
    )
    with pytest.raises(
        ConfigError,
        match=re.escape(
            "column 'cells_per_kg': found '2.16e8'; expected a dose within the plausible "
            "1e+05-1e+08 NK cells/kg (endpoints.dose_plausible_per_kg; the protocol range is "
            "endpoints.dose_range_per_kg); 2.16e8 cells/kg is above the plausible 1e+08; it looks "
            "like a total number of cells written in the per-kg column"
        ),
    ):
        sheets.load_infusions(p)
    # the range is a setting: a trial with very high doses widens it
    df, _ = sheets.load_infusions(p, plausible_per_kg=(1e5, 1e9))
    assert df.loc[0, "cells_infused"] == pytest.approx(2.16e8 * 72)


def test_total_and_per_kg_that_disagree_are_refused_and_neither_is_an_error_too(tmp_path):
    head = (
        "patient_id\tinfusion_number\tinfusion_date\tcells_infused\tcells_per_kg\tbody_weight_kg\n"
    )
    p = write(tmp_path, "inf.tsv", head + "P1\t1\t2024-02-06\t216000000\t3.5e6\t72\n")
    with pytest.raises(ConfigError, match=re.escape("but 216000000 / 72 kg = 3e+06 cells/kg")):
        sheets.load_infusions(p)
    write(tmp_path, "inf.tsv", head + "P1\t1\t2024-02-06\t216000000\t3.0e6\t72\n")
    assert sheets.load_infusions(p)[0].loc[0, "dose_given_as"] == "both"
    write(tmp_path, "inf.tsv", head + "P1\t1\t2024-02-06\t\t\t72\n")
    with pytest.raises(
        ConfigError, match=re.escape("columns 'cells_infused'/'cells_per_kg': both empty")
    ):
        sheets.load_infusions(p)


@pytest.mark.parametrize(
    ("ids", "expected"),
    [
        ([("N1", "H1"), ("N1", "H1")], False),
        ([("N1", "N1")], True),
        ([("", "")], UNKNOWN),
        ([("N1", "H1"), ("", "")], UNKNOWN),
        ([("N1", "N1"), ("", "")], True),  # one known match is enough
        ([("N1", "")], UNKNOWN),
    ],
)
def test_donor_relation_is_unknown_without_ids(ids, expected):
    infs = [{"nk_donor_id": a, "hsct_donor_id": b} for a, b in ids]
    assert nk_donor_is_hsct_donor(infs) == expected


SAMPLES_HEAD = "sample_id\tpatient_id\tcollection_date\ttube\tpanel\tgating\tfcs_file\n"


def test_a_combined_tube_row_feeds_each_gate_tree_and_keeps_its_row_number(tmp_path):
    p = write(
        tmp_path,
        "samples.tsv",
        SAMPLES_HEAD
        + "S0\tP1\t2024-02-06\tnk\tnk_v1\tnk_v1\ta.fcs\n"
        + "S1\tP1\t2024-02-20\tnk;treg\tnk_v1;treg_v1\tnk_v1;treg_v1\tb.fcs\n",
    )
    df = sheets.load_samples(p, PANELS, GATINGS)
    got = df[["row", "sample_id", "tube", "panel", "gating", "fcs_file"]].to_dict(orient="records")
    assert got == [
        {"row": 1, "sample_id": "S0", "tube": "nk", "panel": "nk_v1", "gating": "nk_v1", "fcs_file": "a.fcs"},
        {"row": 2, "sample_id": "S1", "tube": "nk", "panel": "nk_v1", "gating": "nk_v1", "fcs_file": "b.fcs"},
        {"row": 2, "sample_id": "S1", "tube": "treg", "panel": "treg_v1", "gating": "treg_v1", "fcs_file": "b.fcs"},
    ]  # fmt: skip
    assert df.loc[1, "fcs_path"] == df.loc[2, "fcs_path"]


def test_a_combined_row_with_one_panel_for_all_tubes(tmp_path):
    p = write(
        tmp_path,
        "samples.tsv",
        SAMPLES_HEAD + "S1\tP1\t2024-02-20\tnk;treg\tnk_v1\tnk_v1;treg_v1\tb.fcs\n",
    )
    assert list(sheets.load_samples(p, PANELS, GATINGS)["panel"]) == ["nk_v1", "nk_v1"]


@pytest.mark.parametrize(
    ("tube", "gating", "message"),
    [
        (
            "nk;treg",
            "nk_v1",
            "row 1 (sample_id='S1', tube='nk;treg'): column 'gating': found 'nk_v1' (1 name(s)) "
            "for tubes 'nk;treg'; expected one gating per tube, in the same order, separated by "
            "';'; fix: e.g. gating = <gating of nk>;<gating of treg>",
        ),
        (
            "nk;nk",
            "nk_v1;nk_v1",
            "row 1 (sample_id='S1', tube='nk;nk'): column 'tube': found 'nk;nk', a tube listed twice",
        ),
        (
            "nk;tregs",
            "nk_v1;treg_v1",
            "row 1 (sample_id='S1', tube='tregs'): column 'tube': found 'tregs'; expected tube role",
        ),
    ],
)
def test_a_combined_row_that_does_not_add_up_is_refused(tmp_path, tube, gating, message):
    p = write(
        tmp_path,
        "samples.tsv",
        SAMPLES_HEAD + f"S1\tP1\t2024-02-20\t{tube}\tnk_v1\t{gating}\tb.fcs\n",
    )
    with pytest.raises(ConfigError, match=re.escape(message)):
        sheets.load_samples(p, PANELS, GATINGS)


def test_a_combined_row_and_a_separate_row_for_the_same_tube_name_one_row(tmp_path):
    p = write(
        tmp_path,
        "samples.tsv",
        SAMPLES_HEAD
        + "S1\tP1\t2024-02-20\tnk;treg\tnk_v1;treg_v1\tnk_v1;treg_v1\tb.fcs\n"
        + "S1\tP1\t2024-02-20\ttreg\ttreg_v1\ttreg_v1\tc.fcs\n",
    )
    with pytest.raises(
        ConfigError, match=re.escape("rows 1 and 2: duplicate key (sample_id='S1', tube='treg')")
    ):
        sheets.load_samples(p, PANELS, GATINGS)


def test_percent_donor_with_a_percent_sign(tmp_path):
    vocab = sheets.load_fraction_vocab(
        Path(__file__).parents[2] / "config" / "vocab" / "chimerism_fractions.yaml"
    )
    p = write(
        tmp_path,
        "chim.csv",
        "patient_id,date,fraction,donor_pct\nP1,06-Feb-2024,CD56+,93%\nP1,06-Feb-2024,whole blood,"
        "71.5 %\nP1,07-Feb-2024,PB,<5%\n",
    )
    df, warnings = sheets.load_chimerism(sheets.Sheet("chimerism", p), fractions=vocab)
    assert list(df["fraction"]) == ["CD56", "PB", "PB"]
    assert list(df["donor_pct_value"]) == [93.0, 71.5, None]
    assert df.loc[2, "chimerism_status"] == "missing"
    assert "found '<5%'; missing_chimerism" in warnings[0]


# ------------------------------------------------------------------ mappings that are wrong


def test_a_mapping_to_a_column_nkflow_does_not_have_is_refused(tmp_path):
    sh = lab_sheet(
        tmp_path,
        "cbc.csv",
        "patient,date,alc,alc_unit\nP1,2024-02-06,1.2,G/L\n",
        "cbc",
        columns={"patient_id": "patient", "alc": "alc"},
    )
    msg = (
        "config: field 'sheet_format.cbc.columns.alc': found 'alc', which is not a column of the "
        "cbc sheet; expected one of: alc_unit, alc_value, date, patient_id; fix: map each nkflow "
        "column to the column of your file that holds it ({nkflow column: your column})"
    )
    with pytest.raises(ConfigError, match=re.escape(msg)):
        sheets.load_cbc(sh)


def test_a_mapped_column_missing_from_the_file_is_refused(tmp_path):
    sh = lab_sheet(
        tmp_path,
        "cbc.csv",
        "patient,date,alc,alc_unit\nP1,2024-02-06,1.2,G/L\n",
        "cbc",
        columns={"patient_id": "patient", "alc_value": "ALC (10^9/L)"},
    )
    msg = (
        f"{sh.path}: header: column 'ALC (10^9/L)' (mapped to alc_value by "
        "sheet_format.cbc.columns) not found; found columns patient, date, alc, alc_unit; fix: "
        "correct the mapping in config.yaml or the file's header"
    )
    with pytest.raises(ConfigError, match=re.escape(msg)):
        sheets.load_cbc(sh)


def test_a_mapping_that_shadows_a_column_of_the_same_name_is_refused(tmp_path):
    sh = lab_sheet(
        tmp_path,
        "cbc.csv",
        "patient_id,pid,date,alc_value,alc_unit\nP1,P2,2024-02-06,1.2,G/L\n",
        "cbc",
        columns={"patient_id": "pid"},
    )
    with pytest.raises(
        ConfigError, match=re.escape("header: columns 'patient_id' and 'pid' (mapped to patient_id")
    ):
        sheets.load_cbc(sh)


def test_a_mapped_column_failing_its_schema_is_named_as_the_file_spells_it(tmp_path):
    sh = lab_sheet(
        tmp_path,
        "cbc.csv",
        "patient,date,alc,units\nP1,2024-02-06,1.2,mmol/L\n",
        "cbc",
        columns={"patient_id": "patient", "alc_value": "alc", "alc_unit": "units"},
    )
    with pytest.raises(ConfigError, match=re.escape("column 'units' (alc_unit): found 'mmol/L'")):
        sheets.load_cbc(sh)


def test_sheet_format_is_read_from_the_config(tmp_path):
    cfg = {
        "sheets": {"cbc": "lab/cbc.csv"},
        "sheet_format": {"cbc": {"columns": {"patient_id": "patient"}, "date_order": "day_first"}},
    }
    sh = sheets.sheet(cfg, "cbc", tmp_path)
    assert sh == sheets.Sheet(
        "cbc", tmp_path / "lab/cbc.csv", {"patient_id": "patient"}, "", "day_first"
    )
    assert sh.separator == ","
    assert sheets.sheet(cfg, "response", tmp_path) is None


# ------------------------------------------------------------------ schema messages in English


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        (
            {"tubes_per_job": "sixteen"},
            "field 'batching.tubes_per_job': found \"sixteen\"; expected a whole number",
        ),
        (
            {"tubes_per_job": 0},
            "field 'batching.tubes_per_job': found 0; expected a value of at least 1",
        ),
    ],
)
def test_config_schema_messages_read_as_english(block, expected):
    schema = load_schema("config")
    data = {"sheets": {}, "panels": {"a": "a"}, "gating": {"a": "a"}, "batching": block}
    with pytest.raises(ConfigError) as info:
        check_against_schema(data, schema, source="config.yaml")
    assert expected in str(info.value)
    assert "not of type" not in str(info.value)
