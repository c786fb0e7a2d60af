"""The FCS ``$DATE`` against the sample sheet's ``collection_date`` (``qc.dates``).

The check is made by ``nkflow collect`` from the ``$DATE`` each tube records in its
provenance; tubes here are real FCS files (the sample generator's BD style) with the
``$DATE`` of each case, run through :func:`nkflow.tube.run_tube` and collected.
"""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pytest

from nkflow.config import tube_settings, validate_config
from nkflow.errors import ConfigError
from nkflow.qc import QcConfig, acquisition_date_check, add_checks, checks_table, make_check
from nkflow.stages import collect_batches
from nkflow.tables import read_tsv
from nkflow.tube import TubeOutputs, run_tube
from tests.generated import ROOT, generator, write_tube

DRAWN = dt.date(2024, 2, 6)
CFG = QcConfig.from_dict(None)


@pytest.mark.parametrize(
    ("fcs_date", "status", "code", "days"),
    [
        ("06-FEB-2024", "PASS", "ok", 0.0),
        ("07-Feb-2024", "PASS", "ok", 1.0),  # next-day acquisition is normal
        ("09-FEB-2024", "WARN", "date_mismatch", 3.0),
        ("05-FEB-2024", "WARN", "date_mismatch", -1.0),  # before the draw
        ("06-Feb-24", "PASS", "ok", 0.0),  # FCS 2.0 two-digit year
        (None, "NOT_ASSESSED", "date_not_assessed", None),
        ("  ", "NOT_ASSESSED", "date_not_assessed", None),
        ("Tuesday", "NOT_ASSESSED", "date_not_assessed", None),
        ("02/03/2024", "NOT_ASSESSED", "date_not_assessed", None),  # day/month order unknown
    ],
)
def test_acquisition_date_against_collection_date(fcs_date, status, code, days):
    c = acquisition_date_check(fcs_date, DRAWN, CFG, "S1_nk.fcs")
    assert (c.check, c.status, c.reason_code, c.value) == ("acquisition_date", status, code, days)


def test_a_late_acquisition_names_the_file_both_dates_and_the_setting():
    c = acquisition_date_check("09-FEB-2024", DRAWN, CFG, "S1_nk.fcs")
    assert c.message == (
        "S1_nk.fcs: $DATE '09-FEB-2024' (2024-02-09) is 3 day(s) after collection_date "
        "2024-02-06, later than qc.dates.max_days_after_collection = 1; check that the file "
        "belongs to this sample and that the sheet's date is right (collection_date is used as "
        "written; a lab that acquires later raises the setting)"
    )
    assert c.threshold == 1.0


def test_an_acquisition_before_the_draw_names_the_setting():
    c = acquisition_date_check("05-FEB-2024", DRAWN, CFG, "S1_nk.fcs")
    assert c.message.startswith(
        "S1_nk.fcs: $DATE '05-FEB-2024' (2024-02-05) is 1 day(s) before collection_date "
        "2024-02-06, earlier than qc.dates.max_days_before_collection = 0: "
    )
    assert c.threshold == -0.0


def test_absent_and_unreadable_dates_say_why_they_were_not_compared():
    assert acquisition_date_check(None, DRAWN, CFG, "S1_nk.fcs").message == (
        "S1_nk.fcs has no $DATE; the acquisition date was not compared with collection_date "
        "2024-02-06"
    )
    assert acquisition_date_check("02/03/2024", DRAWN, CFG, "S1_nk.fcs").message.startswith(
        "S1_nk.fcs: $DATE '02/03/2024' is not a date nkflow can read unambiguously (expected "
        "dd-mmm-yyyy"
    )
    why = acquisition_date_check("06-FEB-2024", DRAWN, CFG, "x.fcs", unknown="x.fcs unread")
    assert (why.reason_code, why.message[:13]) == ("date_not_assessed", "x.fcs unread;")


def test_the_allowance_is_configurable():
    cfg = QcConfig.from_dict(
        {"dates": {"max_days_after_collection": 3, "max_days_before_collection": 1}}
    )
    assert acquisition_date_check("09-FEB-2024", DRAWN, cfg, "f").reason_code == "ok"
    assert acquisition_date_check("10-FEB-2024", DRAWN, cfg, "f").reason_code == "date_mismatch"
    assert acquisition_date_check("05-FEB-2024", DRAWN, cfg, "f").reason_code == "ok"
    assert acquisition_date_check("04-FEB-2024", DRAWN, cfg, "f").reason_code == "date_mismatch"
    severe = QcConfig.from_dict({"severity": {"date_mismatch": "FAIL"}})
    assert acquisition_date_check("09-FEB-2024", DRAWN, severe, "f").status == "FAIL"


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (
            {"dates": {"max_days_after_collection": -1}},
            r"field 'qc\.dates\.max_days_after_collection': found -1; expected a value of at least 0",
        ),
        (
            {"dates": {"max_days_after_collection": 1.5}},
            r"field 'qc\.dates\.max_days_after_collection': found 1\.5; expected a whole number",
        ),
        ({"dates": {"max_days": 2}}, r"field 'qc\.dates': .*'max_days' was unexpected"),
    ],
)
def test_date_settings_errors_name_the_key(raw, match):
    with pytest.raises(ConfigError, match=match):
        QcConfig.from_dict(raw)


def test_add_checks_raises_the_tube_status_and_keeps_the_rows():
    rows = [make_check(CFG, "viability", "ok", 0.1, 0.25, "fine")]
    table = checks_table("S1", "nk", rows, CFG)
    late = acquisition_date_check("09-FEB-2024", DRAWN, CFG, "f")
    out = add_checks(table, "S1", "nk", [late], CFG)
    assert out["reason_code"].tolist() == ["ok", "date_mismatch"]
    assert set(out["tube_status"]) == {"WARN"}
    absent = acquisition_date_check(None, DRAWN, CFG, "f")
    failed = checks_table("S1", "nk", [make_check(CFG, "x", "low_total_events", 1, 2, "m")], CFG)
    assert set(add_checks(failed, "S1", "nk", [absent], CFG)["tube_status"]) == {"FAIL"}
    assert set(add_checks(table, "S1", "nk", [absent], CFG)["tube_status"]) == {"PASS"}


def test_a_change_of_qc_dates_regates_no_tube():
    import yaml

    base = yaml.safe_load((ROOT / "config/config.yaml").read_text(encoding="utf-8"))
    del base["qc"]["dates"]
    a = validate_config(base, source="test")
    base["qc"]["dates"] = {"max_days_after_collection": 4}
    b = validate_config(base, source="test")
    assert QcConfig.from_dict(a["qc"]).dates.max_days_after_collection == 1
    assert QcConfig.from_dict(b["qc"]).dates.max_days_after_collection == 4
    assert "dates" not in tube_settings(a)["qc"]
    assert tube_settings(a) == tube_settings(b)


# ----------------------------------------------------------------------------- through collect

CASES = {  # sample -> $DATE written in its file (None: no $DATE keyword)
    "S-SAME": "06-FEB-2024",
    "S-NEXT": "07-FEB-2024",
    "S-LATE": "09-FEB-2024",
    "S-EARLY": "05-FEB-2024",
    "S-NONE": None,
}


@pytest.fixture(scope="module")
def collected(tmp_path_factory):
    root = tmp_path_factory.mktemp("dates")
    gen = generator()
    style = gen.STYLES["bd_fortessa"]
    visit = gen.Visit(day=0, alc="500", nk_pct=12.0, bright_frac=0.1, treg_pct_cd4=5.0,
                      chimerism={})  # fmt: skip
    res = gen.make_tube(np.random.default_rng(3), style, "nk", visit)
    batch = root / "nk_v1.nk_v1.001"
    for sid, date in CASES.items():
        extra = {"$DATE": date} if date is not None else None
        fcs = write_tube(style, "nk", res, root / f"{sid}_nk.fcs", extra)
        d = batch / sid / "nk"
        run_tube(
            fcs=fcs,
            panel=ROOT / "config/panels/nk_v1.yaml",
            gating=ROOT / "config/gating/nk_v1.yaml",
            sample_id=sid,
            tube="nk",
            settings={},
            outputs=TubeOutputs(
                d / "counts.tsv", d / "qc.tsv", d / "gating.png", d / "provenance.json"
            ),
        )
    order = [(sid, "nk") for sid in CASES]
    out = root / "out"
    collect_batches(
        [batch],
        order,
        out_counts=out / "counts.tsv",
        out_qc=out / "qc.tsv",
        out_index=out / "tubes.tsv",
        collection_dates=dict.fromkeys(order, DRAWN),
        qc_settings={},
    )
    return batch, out


def test_every_case_reaches_the_cohort_qc_table_and_the_index(collected):
    batch, out = collected
    qc = read_tsv(out / "qc.tsv")
    rows = qc[qc["check"] == "acquisition_date"].set_index("sample_id")
    assert rows["reason_code"].to_dict() == {
        "S-SAME": "ok",
        "S-NEXT": "ok",
        "S-LATE": "date_mismatch",
        "S-EARLY": "date_mismatch",
        "S-NONE": "date_not_assessed",
    }
    assert rows["status"].to_dict() == {
        "S-SAME": "PASS",
        "S-NEXT": "PASS",
        "S-LATE": "WARN",
        "S-EARLY": "WARN",
        "S-NONE": "NOT_ASSESSED",
    }
    assert rows.loc["S-LATE", "message"].startswith(
        "S-LATE_nk.fcs: $DATE '09-FEB-2024' (2024-02-09) is 3 day(s) after collection_date "
        "2024-02-06"
    )
    # the same tube otherwise passes: the status follows the date check alone
    status = qc.groupby("sample_id")["tube_status"].agg(set).to_dict()
    assert status == {
        "S-SAME": {"PASS"},
        "S-NEXT": {"PASS"},
        "S-LATE": {"WARN"},
        "S-EARLY": {"WARN"},
        "S-NONE": {"PASS"},
    }
    index = read_tsv(out / "tubes.tsv").set_index("sample_id")["qc_status"].to_dict()
    assert index == {sid: next(iter(s)) for sid, s in status.items()}
    # the tube's own qc.tsv is the tube job's: collect writes nothing into a batch
    own = read_tsv(batch / "S-LATE" / "nk" / "qc.tsv")
    assert "acquisition_date" not in set(own["check"])
    prov = json.loads((batch / "S-LATE" / "nk" / "provenance.json").read_text())
    assert prov["fcs_date"] == "09-FEB-2024"
    assert json.loads((batch / "S-NONE" / "nk" / "provenance.json").read_text())["fcs_date"] is None


def test_a_tube_whose_file_could_not_be_read_is_not_compared(tmp_path):
    from nkflow.tube import date_check

    prov = {"fcs_file": "data/x.fcs", "error": {"code": "fcs_unreadable", "message": "m"}}
    c = date_check(prov, DRAWN, CFG)
    assert (c.reason_code, c.message) == (
        "date_not_assessed",
        "x.fcs could not be read (fcs_unreadable); the acquisition date was not compared with "
        "collection_date 2024-02-06",
    )
    old = date_check({"fcs_file": "x.fcs", "fcs_version": "FCS3.1"}, DRAWN, CFG)
    assert "records no $DATE" in old.message and "re-run the tube" in old.message
