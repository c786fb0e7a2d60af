"""nkflow.fcs.io: reading FCS files, integrity checks, tolerances, and deterministic TSV output.

Synthetic files are written byte by byte by ``tests.unit.conftest_io.build_fcs`` (not by
FlowIO), so every expected value below follows from how the file was built.
"""

from __future__ import annotations

import hashlib
import re
import warnings
from pathlib import Path

import numpy as np
import pytest

from nkflow.errors import FcsError
from nkflow.fcs.io import parse_fcs_date, read_fcs, read_fcs_metadata
from nkflow.provenance import sha256_file
from tests.unit.conftest_io import build_fcs, with_nextdata

DATA = Path(__file__).resolve().parents[1] / "data" / "fcs"
NAMES = ["FSC-A", "SSC-A", "CD56"]
EVENTS = np.array(
    [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0], [10.0, 11.0, 12.5]], dtype=np.float64
)


def _write(tmp_path: Path, blob: bytes, name: str = "t.fcs") -> Path:
    p = tmp_path / name
    p.write_bytes(blob)
    return p


# ----------------------------------------------------------------------------- good files


@pytest.mark.parametrize(
    ("version", "datatype", "byteord"),
    [
        ("FCS3.1", "F", "1,2,3,4"),
        ("FCS3.1", "F", "4,3,2,1"),
        ("FCS3.0", "D", "1,2,3,4"),
        ("FCS3.0", "D", "4,3,2,1"),
        ("FCS2.0", "F", "4,3,2,1"),
        ("FCS3.1", "I", "1,2"),
        ("FCS3.1", "I", "2,1"),
    ],
)
def test_reads_versions_types_and_byte_orders(tmp_path, version, datatype, byteord):
    ev = np.round(EVENTS) if datatype == "I" else EVENTS
    p = _write(tmp_path, build_fcs(NAMES, ev, version=version, datatype=datatype, byteord=byteord))
    s = read_fcs(p)
    assert s.version == version
    assert s.events.dtype == np.float64
    np.testing.assert_array_equal(s.events, ev)
    assert s.channel_names == ("FSC-A", "SSC-A", "CD56")
    assert s.n_events == 4
    assert s.byte_order == ("little" if byteord.startswith("1") else "big")
    assert s.datatype == datatype
    assert s.warnings == ()
    assert s.keywords["$TOT"] == "4"
    assert s.sha256 == hashlib.sha256(p.read_bytes()).hexdigest()


def test_channel_metadata_and_keywords_keep_dollar(tmp_path):
    p = _write(
        tmp_path,
        build_fcs(
            NAMES,
            EVENTS,
            pns=["", " ", "CD56 PE"],
            extra={"$CYT": "LSRFortessa", "$DATE": "05-MAR-2024", "SPILL": "1,CD56,1"},
        ),
    )
    s = read_fcs(p)
    assert [c.pns for c in s.channels] == ["", "", "CD56 PE"]
    assert s.channels[2].index == 2
    assert s.channels[2].pnr == 262144.0
    assert s.channels[2].pne == (0.0, 0.0)
    assert s.channels[2].png == 1.0
    assert s.keywords["SPILL"] == "1,CD56,1"
    assert "$SPILL" not in s.keywords
    assert s.instrument == "LSRFortessa"
    assert s.acquisition_date == "2024-03-05"


def test_float32_dtype_option(tmp_path):
    p = _write(tmp_path, build_fcs(NAMES, EVENTS))
    s = read_fcs(p, dtype=np.float32)
    assert s.events.dtype == np.float32
    np.testing.assert_array_equal(s.events, EVENTS.astype(np.float32))


def test_integer_values_are_masked_to_pnr(tmp_path):
    # 16-bit values with $PnR 1024: the 6 high bits are not data (0xFFFF & 1023 = 1023).
    ev = np.array([[0xFFFF, 5], [1024 + 7, 1023]], dtype=np.float64)
    p = _write(tmp_path, build_fcs(["FL1", "FL2"], ev, datatype="I", pnr=[1024, 1024]))
    np.testing.assert_array_equal(read_fcs(p).events, [[1023, 5], [7, 1023]])


def test_log_amplification_with_noncompliant_4_0(tmp_path):
    # $PnE '4,0' is read as 4 decades with log0 = 1: value = 10 ** (4 * x / 1024)
    ev = np.array([[0, 256], [512, 1024]], dtype=np.float64)
    p = _write(
        tmp_path,
        build_fcs(["FL1", "FL2"], ev, datatype="I", pnr=[1024, 1024], pne=["4,0", "0,0"]),
    )
    s = read_fcs(p)
    np.testing.assert_allclose(s.events[:, 0], [1.0, 100.0], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(s.events[:, 1], [256, 0])  # 1024 & 1023 = 0
    assert s.warnings == (
        "non-compliant log amplification $P1E=4,0 (log0 must be > 0); read as log0=1 as the "
        "FCS standard prescribes",
    )


FLOAT_PNE_SPEC = (
    "FCS 3.1 ($PnE): when $DATATYPE is F or D, all parameters are stored as linear and $PnE "
    "shall be 0,0. No log amplification was applied: the stored values were kept linear"
)


@pytest.mark.parametrize("datatype", ["F", "D"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_float_data_with_log_pne_is_kept_linear_and_recorded(tmp_path, datatype, dtype):
    """FCS 3.1, $PnE: "If the floating point data type is used (either $DATATYPE/F/ or
    $DATATYPE/D/), then all parameters shall be stored as linear with $PnE/0,0/".

    A float channel with $PnE 4,0 is read as stored: applying 10 ** (4 * x / $PnR) would turn
    1e5 into 10 ** 390 (overflow). The $PnG gain of the linear channel FL2 still divides.
    """
    ev = np.array([[1.0, 5.0, 100.0], [3490.5, 9910.25, 200.0], [1e5, 0.5, 300.0]])
    blob = build_fcs(
        ["FL1", "FL2", "FSC-A"],
        ev,
        datatype=datatype,
        pnr=[1024, 1024, 262144],
        pne=["4,0", "4,0.01", "0,0"],
        png=[1.0, 2.0, 1.0],
    )
    p = _write(tmp_path, blob, "float_log.fcs")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a RuntimeWarning (overflow in power) fails the test
        s = read_fcs(p, dtype=dtype)
    expected = ev.astype(np.float32 if datatype == "F" else np.float64).astype(dtype)
    expected[:, 1] /= dtype(2.0)
    np.testing.assert_array_equal(s.events, expected)
    assert s.channels[0].pne == (4.0, 0.0)  # the keyword is reported as written
    assert s.warnings == (
        f"float_pne_ignored: float_log.fcs stores $DATATYPE {datatype} (floating point) data "
        "but declares log amplification $P1E=4,0 (FL1), $P2E=4,0.01 (FL2); " + FLOAT_PNE_SPEC,
    )


def test_float_pne_with_zero_decades_changes_nothing_and_is_not_recorded(tmp_path):
    # '0,1' on float data is not '0,0' either, but no reader changes a value for it
    p = _write(tmp_path, build_fcs(NAMES, EVENTS, pne=["0,1", "0,0", "0,0"]))
    s = read_fcs(p)
    np.testing.assert_array_equal(s.events, EVENTS)
    assert s.warnings == ()


def test_float_pne_reaches_tube_qc_and_provenance(tmp_path):
    import json

    from nkflow.tube import TubeOutputs, run_tube

    root = Path(__file__).resolve().parents[2]
    ev = np.array([[50_000.0, 20_000.0, 3490.0], [60_000.0, 30_000.0, 9910.0]] * 50)
    fcs = _write(
        tmp_path,
        build_fcs(["FSC-A", "SSC-A", "CD56"], ev, pnr=[262144, 262144, 1024],
                  pne=["0,0", "0,0", "4,0"]),
        "nk.fcs",
    )  # fmt: skip
    out = TubeOutputs(*(tmp_path / n for n in ("c.tsv", "qc.tsv", "f.png", "prov.json")))
    run_tube(
        fcs=fcs,
        panel=root / "config/panels/nk_v1.yaml",
        gating=root / "config/gating/nk_v1.yaml",
        sample_id="S1",
        tube="nk",
        settings={},
        outputs=out,
    )
    qc_rows = [r.split("\t") for r in out.qc.read_text().splitlines()]
    header = qc_rows[0]
    tol = [
        dict(zip(header, r, strict=True))
        for r in qc_rows[1:]
        if r[header.index("reason_code")] == "fcs_tolerance"
    ]
    assert [(t["status"], t["message"][:25]) for t in tol] == [
        ("WARN", "float_pne_ignored: nk.fcs")
    ]
    prov = json.loads(out.provenance.read_text())
    assert prov["reader_warnings"] == [tol[0]["message"]]


def test_gain_and_timestep(tmp_path):
    ev = np.array([[10.0, 100.0], [20.0, 300.0]])
    p = _write(
        tmp_path,
        build_fcs(["Time", "FL1-A"], ev, png=[5.0, 2.0], extra={"$TIMESTEP": "0.01"}),
    )
    s = read_fcs(p)
    # time: x timestep, its gain ignored; FL1-A: / gain
    np.testing.assert_allclose(s.events, [[0.1, 50.0], [0.2, 150.0]], rtol=1e-15)
    assert s.timestep == 0.01


def test_anonymised_timestep_is_a_warning_not_a_crash(tmp_path):
    ev = np.array([[10.0, 100.0]])
    p = _write(tmp_path, build_fcs(["Time", "FL1-A"], ev, extra={"$TIMESTEP": "xxxxxxxxx"}))
    s = read_fcs(p)
    np.testing.assert_array_equal(s.events, ev)
    assert s.timestep is None
    assert s.warnings == (
        "$TIMESTEP is 'xxxxxxxxx' (not a number, possibly anonymised); the time channel "
        "'Time' is left in raw units",
    )


def test_illegal_utf8_in_text_is_decoded_as_latin1_with_warning(tmp_path):
    blob = build_fcs(NAMES, EVENTS, pns=["", "", "CD56 \u00b5"])
    bad = blob.replace("\u00b5".encode(), b"\xb5 ")  # same length, invalid UTF-8 byte
    pos = bad.index(b"\xb5")
    p = _write(tmp_path, bad)
    s = read_fcs(p)
    assert s.channels[2].pns == "CD56 \u00b5 "
    assert s.warnings == (
        f"TEXT segment is not valid UTF-8 (byte 0xB5 at file offset {pos}); decoded as Latin-1",
    )


def test_data1_equals_flowkit_raw_events():
    import flowkit

    path = DATA / "data1.fcs"
    s = read_fcs(path)
    expected = flowkit.Sample(str(path)).get_events(source="raw")
    assert s.events.shape == (13367, 8)
    assert np.array_equal(s.events, expected)


def test_sha256_file(tmp_path):
    p = _write(tmp_path, b"abc")
    assert sha256_file(p) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


@pytest.mark.parametrize(
    ("text", "iso"),
    [("05-MAR-2024", "2024-03-05"), ("2024-03-05", "2024-03-05"), ("21 Dec 2010", "2010-12-21")],
)
def test_parse_fcs_date(text, iso):
    assert parse_fcs_date(text).isoformat() == iso


def test_parse_fcs_date_unknown_is_none():
    assert parse_fcs_date("yesterday") is None


@pytest.mark.parametrize(
    ("text", "iso"),
    [
        ("03/02/2024", None),  # 3 February day-first, 2 March month-first: not guessed
        ("13/02/2024", "2024-02-13"),  # only day-first is a date
        ("02/13/2024", "2024-02-13"),  # only month-first is a date
        ("05/05/2024", "2024-05-05"),  # both readings agree
        ("19-May-15", "2015-05-19"),  # FCS 2.0 two-digit year (Data001.fcs, FlowCal)
    ],
)
def test_parse_fcs_date_never_guesses_the_day_month_order(text, iso):
    got = parse_fcs_date(text)
    assert (got.isoformat() if got else None) == iso


# ----------------------------------------------------------------------------- tolerances


def test_off_by_one_data_end_is_read_and_recorded(tmp_path):
    blob = build_fcs(NAMES, EVENTS, end_data_shift=1) + b"\x00"
    p = _write(tmp_path, blob)
    s = read_fcs(p)
    np.testing.assert_array_equal(s.events, EVENTS)
    d1 = int(blob[34:42])
    assert s.warnings == (
        f"DATA end offset {d1} is one byte past the last data byte (49 bytes for 48 expected); "
        "read with reader option ignore_offset_error",
    )


def test_header_text_discrepancy_text_offsets_used(tmp_path):
    good = build_fcs(NAMES, EVENTS)
    d0, d1 = int(good[26:34]), int(good[34:42])
    blob = build_fcs(NAMES, EVENTS, header_data=(d0, d1 + 500))  # HEADER end beyond the file
    s = read_fcs(_write(tmp_path, blob))
    np.testing.assert_array_equal(s.events, EVENTS)
    assert s.warnings == (
        f"DATA offsets disagree: HEADER {d0}-{d1 + 500} vs TEXT {d0}-{d1}; the TEXT offsets were "
        "used because they alone lie outside TEXT, inside the file and hold $TOT x bytes per "
        "event (reader option ignore_offset_discrepancy)",
    )


def test_header_text_discrepancy_header_offsets_used_when_text_is_shifted(tmp_path):
    # Both offset pairs hold 48 bytes; only HEADER's start right after TEXT (Beckman Cyan case).
    good = build_fcs(NAMES, EVENTS)
    d0, d1 = int(good[26:34]), int(good[34:42])
    blob = build_fcs(NAMES, EVENTS, text_data=(d0 + 12, d1 + 12)) + b"\x00" * 12
    s = read_fcs(_write(tmp_path, blob))
    np.testing.assert_array_equal(s.events, EVENTS)
    assert s.warnings == (
        f"DATA offsets disagree: HEADER {d0}-{d1} vs TEXT {d0 + 12}-{d1 + 12}; the HEADER "
        "offsets were used because both hold 48 bytes; only these start right after TEXT "
        "(reader option use_header_offsets)",
    )


def test_header_text_discrepancy_both_plausible_is_refused(tmp_path):
    good = build_fcs(NAMES, EVENTS)
    d0, d1 = int(good[26:34]), int(good[34:42])
    blob = build_fcs(NAMES, EVENTS, header_data=(d0 + 4, d1 + 4), text_data=(d0 + 8, d1 + 8)) + (
        b"\x00" * 8
    )
    with pytest.raises(
        FcsError,
        match=re.escape(
            f"t.fcs: DATA offsets disagree (HEADER {d0 + 4}-{d1 + 4}, TEXT {d0 + 8}-{d1 + 8}) and "
            "both hold the expected bytes, so nkflow cannot tell which is right"
        ),
    ):
        read_fcs(_write(tmp_path, blob))


def test_two_data_sets_first_read_and_recorded(tmp_path):
    first = build_fcs(NAMES, EVENTS, extra={"$NEXTDATA": "0000000"}, version="FCS2.0")
    second = build_fcs(NAMES, EVENTS * 2)
    blob = with_nextdata(first, len(first)) + second
    p = _write(tmp_path, blob)
    s = read_fcs(p)
    np.testing.assert_array_equal(s.events, EVENTS)
    assert s.n_datasets == 2
    assert s.warnings == (
        f"file holds 2 data sets (1: FCS2.0 at byte 0, 4 events, 2: FCS3.1 at byte "
        f"{len(first)}, 4 events); data set 1 was read (reader option nextdata_offset=0)",
    )
    s2 = read_fcs(p, dataset=1)
    np.testing.assert_array_equal(s2.events, EVENTS * 2)
    assert s2.version == "FCS3.1"


# ----------------------------------------------------------------------------- refused files


def test_truncated_file_is_refused(tmp_path):
    blob = build_fcs(NAMES, EVENTS)
    d0, d1 = int(blob[26:34]), int(blob[34:42])
    p = _write(tmp_path, blob[:-10])
    with pytest.raises(FcsError) as err:
        read_fcs(p)
    assert str(err.value) == (
        f"t.fcs: file is truncated: DATA segment should span bytes {d0}-{d1} (48 bytes; "
        f"$TOT x $PAR x bytes per value = 4 x 3 x 4 = 48) but the file has {len(blob) - 10} "
        "bytes, so only 38 bytes (3 whole events of 4) are present"
    )


@pytest.mark.parametrize(("tot", "events_word"), [(5, "5 x 3 x 4 = 60"), (3, "3 x 3 x 4 = 36")])
def test_tot_too_large_or_too_small_is_refused(tmp_path, tot, events_word):
    blob = build_fcs(NAMES, EVENTS, tot=tot)
    d0, d1 = int(blob[26:34]), int(blob[34:42])
    with pytest.raises(FcsError) as err:
        read_fcs(_write(tmp_path, blob))
    assert str(err.value) == (
        f"t.fcs: DATA segment length mismatch: bytes {d0}-{d1} hold 48 bytes but $TOT x $PAR x "
        f"bytes per value = {events_word} bytes (the segment holds 4 events, $TOT says {tot}); "
        "the file is corrupt or $TOT is wrong, refusing partial data"
    )


def test_24_bit_integers_are_refused_with_reason(tmp_path):
    blob = build_fcs(["TIME", "FSC"], np.zeros((2, 2)), datatype="I", bits=16)
    blob = blob.replace(b"$P1B/16/", b"$P1B/24/").replace(b"$P2B/16/", b"$P2B/24/")
    with pytest.raises(
        FcsError,
        match=re.escape(
            "t.fcs: integer data with 24-bit values ($P1B=24, channel 'TIME'); the FCS reader "
            "(FlowIO) decodes only 8, 16 and 32-bit integers. Re-export the file from the "
            "acquisition software as FCS 3.1 float data"
        ),
    ):
        read_fcs(_write(tmp_path, blob))


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (b"", "t.fcs: file has 0 bytes; an FCS file has at least a 58-byte HEADER"),
        (
            b"PK\x03\x04" + b" " * 60,
            "t.fcs: does not start with an FCS version (found b'PK\\x03\\x04  ' at byte 0); "
            "expected 'FCS2.0', 'FCS3.0', 'FCS3.1' or 'FCS3.2'",
        ),
        (
            b"FCS4.0" + b" " * 60,
            "t.fcs: FCS version 'FCS4.0' is not supported; expected one of FCS2.0, FCS3.0, FCS3.1, "
            "FCS3.2",
        ),
    ],
)
def test_not_fcs_files_are_refused(tmp_path, blob, message):
    with pytest.raises(FcsError) as err:
        read_fcs(_write(tmp_path, blob))
    assert str(err.value) == message


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(FcsError, match=r"missing\.fcs: cannot open FCS file \(No such file"):
        read_fcs(tmp_path / "missing.fcs")


def test_bad_datatype_and_byteorder_are_refused(tmp_path):
    blob = build_fcs(NAMES, EVENTS).replace(b"$DATATYPE/F/", b"$DATATYPE/A/")
    with pytest.raises(FcsError, match=r"\$DATATYPE is 'A'; nkflow reads I \(integer\)"):
        read_fcs(_write(tmp_path, blob))
    blob = build_fcs(NAMES, EVENTS).replace(b"$BYTEORD/1,2,3,4/", b"$BYTEORD/3,4,1,2/")
    with pytest.raises(FcsError, match=r"\$BYTEORD is '3,4,1,2'; expected '1,2,3,4'"):
        read_fcs(_write(tmp_path, blob))


def test_metadata_only_read_reports_layout(tmp_path):
    blob = build_fcs(NAMES, EVENTS)
    h = read_fcs_metadata(_write(tmp_path, blob))
    assert h.bytes_per_event == 12
    assert (h.data_start, h.data_stop) == (int(blob[26:34]), int(blob[34:42]))
    assert h.reader_options == {
        "ignore_offset_error": False,
        "ignore_offset_discrepancy": False,
        "use_header_offsets": False,
        "nextdata_offset": 0,
    }


# ----------------------------------------------------------------------------- inspect


def _inspect_files(tmp_path):
    good = _write(
        tmp_path,
        build_fcs(
            NAMES,
            EVENTS,
            pns=["", "", "CD56 PE"],
            extra={"$CYT": "LSRFortessa", "$DATE": "05-MAR-2024", "SPILL": "1,CD56,1"},
        ),
        "good.fcs",
    )
    bad = _write(tmp_path, build_fcs(NAMES, EVENTS, tot=5), "bad.fcs")
    panel = tmp_path / "p.yaml"
    panel.write_text("name: p\nmarkers: {CD56: {}, CD3: {}, FSC-A: {scatter: true}}\n")
    return good, bad, panel


def test_inspect_text_names_markers_and_exits_1_on_unreadable(tmp_path):
    from nkflow.fcs.inspect import inspect_files

    good, bad, panel = _inspect_files(tmp_path)
    text, status = inspect_files([good, bad], panel=panel)
    assert status == 1
    lines = text.splitlines()
    assert lines[0] == f"== {good}"
    assert lines[1] == "version FCS3.1  instrument LSRFortessa  date 2024-03-05"
    assert lines[2] == ("events 4  channels 3  datatype F  byte order little  data sets 1")
    assert lines[3].startswith("spillover SPILL  sha256 ")
    assert lines[4] == "panel p: missing markers CD3"
    assert lines[5:9] == [
        "  n  $PnN   $PnS     marker",
        "  1  FSC-A           FSC-A",
        "  2  SSC-A",
        "  3  CD56   CD56 PE  CD56",
    ]
    assert f"== {bad}" in lines
    assert lines[lines.index(f"== {bad}") + 1].startswith(
        "ERROR: bad.fcs: DATA segment length mismatch"
    )


def test_inspect_tsv_and_json(tmp_path):
    import json

    from nkflow.fcs.inspect import inspect_files

    good, _bad, panel = _inspect_files(tmp_path)
    tsv, status = inspect_files([good], panel=panel, fmt="tsv")
    assert status == 0
    rows = [ln.split("\t") for ln in tsv.splitlines()]
    assert rows[0] == [
        "file", "status", "version", "instrument", "n_events", "channel", "pnn", "pns", "pnb",
        "pnr", "pne", "marker", "message",
    ]  # fmt: skip
    assert rows[3] == [
        str(good), "ok", "FCS3.1", "LSRFortessa", "4", "3", "CD56", "CD56 PE", "32", "262144",
        "0,0", "CD56", "",
    ]  # fmt: skip
    doc, status = inspect_files([good], fmt="json")
    info = json.loads(doc)[0]
    assert status == 0
    assert (info["n_events"], info["spillover"], info["channels"][2]["pns"]) == (
        4,
        "SPILL",
        "CD56 PE",
    )


def test_inspect_unknown_format_is_config_error(tmp_path):
    from nkflow.errors import ConfigError
    from nkflow.fcs.inspect import inspect_files

    with pytest.raises(ConfigError, match="inspect: format 'xml' is not known"):
        inspect_files([], fmt="xml")


def test_byteorder_with_spaces_and_empty_tot_are_refused(tmp_path):
    blob = build_fcs(NAMES, EVENTS, byteord="4,3,2,1").replace(
        b"$BYTEORD/4,3,2,1/", b"$BYTEORD/4,3,2,1 /"
    )
    blob = blob[:18] + str(int(blob[18:26]) + 1).rjust(8).encode() + blob[26:]
    p = tmp_path / "t.fcs"
    p.write_bytes(blob)
    with pytest.raises(
        FcsError,
        match=re.escape(
            "t.fcs: $BYTEORD is '4,3,2,1 ' (extra spaces); the FCS reader would decode it in "
            "the machine's byte order, so the file is refused; rewrite the keyword as '4,3,2,1'"
        ),
    ):
        read_fcs(p)
    p.write_bytes(build_fcs(NAMES, EVENTS[:0], tot=0))
    with pytest.raises(FcsError, match=re.escape("t.fcs: $TOT is 0: the file holds no events")):
        read_fcs(p)


def test_broken_second_data_set_is_recorded_not_fatal(tmp_path):
    first = build_fcs(NAMES, EVENTS, extra={"$NEXTDATA": "0000000"})
    blob = with_nextdata(first, len(first)) + b"FCS3.1    garbage" + b" " * 60
    s = read_fcs(_write(tmp_path, blob))
    np.testing.assert_array_equal(s.events, EVENTS)
    assert s.n_datasets == 1
    assert s.warnings == (
        f"data set 2 at byte {len(first)} is unreadable and was ignored (t.fcs: HEADER TEXT "
        "start offset (bytes 10-17) is b'garbage '; expected a right-justified ASCII number "
        "(FCS 3.x allows 0 when TEXT gives $BEGINDATA/$ENDDATA); re-export the file from the "
        "acquisition software, or correct these HEADER bytes in a copy of it)",
    )


@pytest.mark.parametrize("k", [2, 3])
def test_blank_header_data_offset_is_refused_with_its_bytes_and_fix(tmp_path, k):
    """FlowIO reads int() of the HEADER DATA offsets of every file, so a blank one used to fail
    as a raw "invalid literal for int()"; nkflow names the bytes, what it expects and the fix."""
    blob = build_fcs(NAMES, EVENTS)
    blob = blob[: 10 + 8 * k] + b" " * 8 + blob[18 + 8 * k :]
    label = ("DATA start", "DATA end")[k - 2]
    with pytest.raises(FcsError) as err:
        read_fcs(_write(tmp_path, blob))
    assert str(err.value).startswith(
        f"t.fcs: HEADER {label} offset (bytes {10 + 8 * k}-{17 + 8 * k}) is b'        '; "
        "expected a right-justified ASCII number"
    )
    assert "re-export the file" in str(err.value)


@pytest.mark.parametrize("bits", [8, 32])
def test_8_and_32_bit_integers(tmp_path, bits):
    ev = np.array([[255.0, 1.0], [7.0, 200.0]])
    p = _write(tmp_path, build_fcs(["A", "B"], ev, datatype="I", bits=bits, pnr=[256, 256]))
    np.testing.assert_array_equal(read_fcs(p).events, ev)


def test_bundled_mixed_width_integer_file():
    # FlowIO's variable_int_example.fcs: $PnB differs per channel, $TIMESTEP anonymised.
    s = read_fcs(DATA / "variable_int_example.fcs")
    assert s.events.shape == (2, 26)
    assert sorted({c.pnb for c in s.channels}) == [16, 32]
    assert s.warnings == (
        "$TIMESTEP is 'xxxxxxxxx' (not a number, possibly anonymised); the time channel "
        "'Time' is left in raw units",
    )


@pytest.mark.parametrize(
    ("name", "header"),
    [("data_start_offset_discrepancy_example.fcs", "5555-6188"),
     ("data_stop_offset_discrepancy_example.fcs", "6081-6944")],
)  # fmt: skip
def test_bundled_offset_discrepancy_files_use_text_offsets(name, header):
    s = read_fcs(DATA / name)
    ref = read_fcs(DATA / "variable_int_example.fcs")  # same events, consistent offsets
    np.testing.assert_array_equal(s.events, ref.events)
    assert s.warnings[0] == (
        f"DATA offsets disagree: HEADER {header} vs TEXT 6081-6188; the TEXT offsets were used "
        "because they alone lie outside TEXT, inside the file and hold $TOT x bytes per event "
        "(reader option ignore_offset_discrepancy)"
    )


def test_bundled_flowkit_line_file():
    s = read_fcs(DATA / "data_set_simple_line_100.fcs")
    assert s.events.shape == (100, 2)
    assert s.channel_names == ("channel_A", "channel_B")
    assert s.warnings == ()
