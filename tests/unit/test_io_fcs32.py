"""FCS 3.2 files (ISAC, 2020): read, with per-parameter value types and the new descriptors.

FCS 3.2 keywords used here (section numbers of the FCS 3.2 normative text as cited by NIST's
fireflow, STANDARD.md): ``$PnDATATYPE`` (I, F or D: overrides ``$DATATYPE`` for parameter n,
so one data set can mix value types), ``$PnTYPE`` (§3.3.55: Forward_Scatter, Side_Scatter,
Raw_Fluorescence, Unmixed_Fluorescence, Mass, Time, Electronic_Volume, Index,
Classification), ``$PnFEATURE`` (§3.3.45: Area, Height, Width), ``$PnANALYTE`` (the analyte
measured), ``$PnTAG`` (the label), ``$PnDET`` (the detector), ``$BEGINDATETIME`` (ISO 8601;
``$DATE`` deprecated) and a ``$MODE`` that may be absent (deprecated: list mode is the only
mode). Files are written byte by byte by ``tests.unit.conftest_io.build_fcs``.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pytest

from nkflow.errors import FcsError, PanelError
from nkflow.fcs.io import read_fcs
from tests.unit.conftest_io import build_fcs
from tests.unit.conftest_io import write_file as _write

ROOT = Path(__file__).resolve().parents[2]

# An Aurora-style spectral tube: scatter and time typed (values spelled as Cytek SpectroFlo
# writes them), markers in $PnANALYTE, $PnS empty for two markers (the case $PnANALYTE is for).
NAMES = ["Time", "FSC-A", "FSC-H", "SSC-A", "BV785-A", "PE-A", "FITC-A"]
PN = {
    "TYPE": ["Time", "Forward_Scatter", "Forward_Scatter", "Side_Scatter",
             "Unmixed_Fluorescence", "Unmixed_Fluorescence", "Raw_Fluorescence"],
    "FEATURE": [None, "Area", "Height", "Area", "Area", "Area", "Area"],
    "ANALYTE": [None, None, None, None, "CD3", "CD56", "CD16"],
    "TAG": [None, None, None, None, "BV785", "PE", "FITC"],
    "DET": [None, "FSC", "FSC", "SSC", "V15", "YG1", "B2"],
}  # fmt: skip
PNS = ["", "", "", "", "CD3", "", ""]
EVENTS = np.array(
    [
        [12.0, 52_000.5, 41_000.25, 20_000.5, 150.5, 3490.25, -12.5],
        [13.0, 61_000.5, 49_000.25, 30_000.5, 9910.5, 40.25, 800.75],
    ]
)
KW = {"$CYT": "Aurora", "$BEGINDATETIME": "2021-03-05T10:12:01.22+01:00", "$TIMESTEP": "0.1"}


def _fcs32(tmp_path, **kw) -> Path:
    args = {"pns": PNS, "version": "FCS3.2", "pn": PN, "extra": KW} | kw
    blob = build_fcs(NAMES, EVENTS, **args)
    return _write(tmp_path, blob.replace(b"/$MODE/L/", b"/XMODE/L/"), "aurora32.fcs")


def test_fcs32_file_is_read_with_its_descriptors(tmp_path):
    """FCS 3.2 files were refused ('version not supported'). $MODE is absent (deprecated in
    3.2); $PnTYPE, $PnFEATURE and $PnANALYTE are reported per channel; $BEGINDATETIME gives the
    acquisition date when $DATE is absent; events are the stored float32 values (Time scaled
    by $TIMESTEP)."""
    p = _fcs32(tmp_path)
    assert b"$MODE" not in p.read_bytes()
    s = read_fcs(p)
    assert s.version == "FCS3.2"
    expected = EVENTS.astype(np.float32).astype(np.float64)
    expected[:, 0] *= 0.1
    np.testing.assert_array_equal(s.events, expected)
    assert s.warnings == ()
    assert [c.pntype for c in s.channels] == PN["TYPE"]
    assert [c.kind for c in s.channels] == [
        "time", "scatter", "scatter", "scatter", "fluorescence", "fluorescence", "fluorescence",
    ]  # fmt: skip
    assert [c.feature for c in s.channels] == ["", "Area", "Height", "Area", "Area", "Area", "Area"]
    assert [c.analyte for c in s.channels] == ["", "", "", "", "CD3", "CD56", "CD16"]
    assert {c.datatype for c in s.channels} == {"F"}
    assert s.acquisition_date == "2021-03-05"


def test_fcs32_mode_still_required_before_32(tmp_path):
    blob = build_fcs(["A"], np.ones((2, 1)), version="FCS3.1").replace(b"/$MODE/L/", b"/XMODE/L/")
    with pytest.raises(FcsError, match=re.escape("required keyword $MODE is missing")):
        read_fcs(_write(tmp_path, blob))


def test_fcs32_mixed_value_types_are_read_column_by_column(tmp_path):
    """FCS 3.2 $PnDATATYPE: parameter n stores values of that type (I with its $PnB and
    $PnR mask, F 32-bit, D 64-bit) whatever $DATATYPE says. Here a float data set has a
    16-bit integer Time and a double-precision column.

    FlowIO (hence FlowKit) ignores $PnDATATYPE and decodes every value as $DATATYPE: with
    these 4 events (4 x (2 + 4 + 4 + 8) = 72 bytes = 18 float32 values, not 4 x 4) it stops
    with a reshape error; nkflow reads each column as declared.
    """
    ev = np.array([[12.0, 52_000.5, 3490.25, 0.1 + 1e-12]] * 2 + [[70_000.0, 1.5, -2.5, 1e300]] * 2)
    blob = build_fcs(
        ["Time", "FSC-A", "PE-A", "Ratio"],
        ev,
        version="FCS3.2",
        pnr=[65536, 262144, 262144, 1],
        pn={"DATATYPE": ["I", None, None, "D"], "TYPE": ["Time", "Forward_Scatter", None, None]},
    )
    assert int(blob[34:42]) - int(blob[26:34]) + 1 == 4 * (2 + 4 + 4 + 8)
    p = _write(tmp_path, blob)
    s = read_fcs(p)
    assert [(c.datatype, c.pnb) for c in s.channels] == [("I", 16), ("F", 32), ("F", 32), ("D", 64)]
    expected = np.array(
        [[12.0, 52_000.5, 3490.25, 0.1 + 1e-12]] * 2 + [[4464.0, 1.5, -2.5, 1e300]] * 2
    )
    np.testing.assert_array_equal(s.events, expected)  # 70000 & 65535 = 4464 (uint16 mask)
    assert s.warnings == ()

    import flowkit

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="cannot reshape array"):
            flowkit.Sample(str(p)).get_events(source="raw")


def test_fcs32_log_amplification_only_on_integer_parameters(tmp_path):
    """FCS 3.1/3.2 $PnE: log amplification is for integer parameters; a floating-point
    parameter ($PnDATATYPE F here) with $PnE 4,0 is kept linear and recorded, while the integer
    parameter's 4,0 is applied (as 4,1)."""
    ev = np.array([[512.0, 3490.5], [1024.0 + 256.0, 9910.25]])
    blob = build_fcs(
        ["FL1-H", "FL2-A"],
        ev,
        version="FCS3.2",
        datatype="I",
        pnr=[1024, 1024],
        pne=["4,0", "4,0"],
        pn={"DATATYPE": [None, "F"]},
    )
    s = read_fcs(_write(tmp_path, blob, "mixed_log.fcs"))
    np.testing.assert_allclose(s.events[:, 0], 10.0 ** (4 * np.array([512.0, 256.0]) / 1024))
    np.testing.assert_array_equal(s.events[:, 1], ev[:, 1])
    assert s.warnings == (
        "float_pne_ignored: mixed_log.fcs stores floating-point values ($PnDATATYPE F or D) but "
        "declares log amplification $P2E=4,0 (FL2-A); FCS 3.1 ($PnE): when $DATATYPE is F or "
        "D, all parameters are stored as linear and $PnE shall be 0,0. No log amplification was "
        "applied: the stored values were kept linear",
        "non-compliant log amplification $P1E=4,0 (log0 must be > 0); read as log0=1 as the FCS "
        "standard prescribes",
    )


def test_pndatatype_outside_fcs32_is_ignored_and_recorded(tmp_path):
    """$PnDATATYPE does not exist before FCS 3.2: an FCS 3.1 reader decodes $DATATYPE."""
    ev = np.array([[1.5, 2.5], [3.5, 4.5]])
    blob = build_fcs(["A", "B"], ev, version="FCS3.1", extra={"$P2DATATYPE": "I"})
    s = read_fcs(_write(tmp_path, blob))
    np.testing.assert_array_equal(s.events, ev)
    assert s.warnings == (
        "$P2DATATYPE=I ignored: $PnDATATYPE is an FCS 3.2 keyword and this is an FCS3.1 file, "
        "whose values are all $DATATYPE F",
    )


def test_pndatatype_other_than_i_f_d_is_refused(tmp_path):
    blob = build_fcs(["A", "B"], np.ones((2, 2)), version="FCS3.2", pn={"DATATYPE": [None, "F"]})
    blob = blob.replace(b"$P2DATATYPE/F/", b"$P2DATATYPE/A/")
    with pytest.raises(
        FcsError,
        match=re.escape(
            "$P2DATATYPE (value type of channel 'B') is 'A'; expected I (integer), F (float) "
            "or D (double)"
        ),
    ):
        read_fcs(_write(tmp_path, blob))


# ----------------------------------------------------------------------------- panels


def _resolve(path: Path, panel: str = "nk_v1"):
    from nkflow.fcs.panel import load_panel, resolve

    return resolve(load_panel(ROOT / "config" / "panels" / f"{panel}.yaml"), read_fcs(path))


def test_fcs32_markers_from_pnanalyte_where_pns_is_empty(tmp_path):
    """$PnANALYTE names the marker; nkflow reads it after $PnS and before $PnN."""
    r = _resolve(_fcs32(tmp_path))
    assert r.channel_for("CD3").pnn == "BV785-A"
    assert r.how["CD3"] == "$PnS 'CD3'"
    assert r.channel_for("CD56").pnn == "PE-A"
    assert r.how["CD56"] == "$PnANALYTE 'CD56'"
    assert r.channel_for("CD16").pnn == "FITC-A"
    assert (r.channel_for("FSC-A").pnn, r.channel_for("Time").pnn) == ("FSC-A", "Time")


def test_fcs32_scatter_and_time_found_by_type_where_names_say_nothing(tmp_path):
    """Scatter and time channels a vendor names its own way ('FS', 'FS Pk', 'Violet SS',
    'Clock') match no alias; their $PnTYPE and $PnFEATURE say what they are."""
    names = ["Clock", "FS", "FS Pk", "Violet SS", "BV785-A", "PE-A", "FITC-A"]
    blob = build_fcs(names, EVENTS, pns=PNS, version="FCS3.2", pn=PN, extra=KW)
    r = _resolve(_write(tmp_path, blob))
    assert {m: r.channel_for(m).pnn for m in ("FSC-A", "FSC-H", "SSC-A", "Time")} == {
        "FSC-A": "FS",
        "FSC-H": "FS Pk",
        "SSC-A": "Violet SS",
        "Time": "Clock",
    }
    assert r.how["FSC-H"] == "$PnTYPE 'Forward_Scatter' + $PnFEATURE 'Height' ($PnN 'FS Pk')"
    assert r.how["Time"] == "$PnTYPE 'Time' ($PnN 'Clock')"
    # the same file without $PnTYPE: nothing to go on, the markers are missing
    plain = build_fcs(names, EVENTS, pns=PNS, version="FCS3.2", extra=KW)
    assert set(_resolve(_write(tmp_path, plain, "plain.fcs")).missing) >= {
        "FSC-A", "FSC-H", "SSC-A", "Time",
    }  # fmt: skip


def test_fcs32_type_keeps_markers_off_scatter_and_time_channels(tmp_path):
    """A channel typed Forward_Scatter/Side_Scatter/Time carries no marker and a fluorescence
    channel no scatter, whatever its labels say: here a Time channel whose $PnS reads 'CD3'
    and a fluorescence detector named 'SSC-A' (spectral instruments name detectors freely)."""
    names = ["Time", "FSC-A", "FSC-H", "SSC-A", "BV785-A", "PE-A", "FITC-A"]
    pn = {**PN, "TYPE": ["Time", "Forward_Scatter", "Forward_Scatter", "Raw_Fluorescence",
                         "Unmixed_Fluorescence", "Unmixed_Fluorescence", "Side_Scatter"],
          "FEATURE": [None, "Area", "Height", "Area", "Area", "Area", "Area"]}  # fmt: skip
    pns = ["CD3", "", "", "", "CD3", "", ""]
    r = _resolve(_write(tmp_path, build_fcs(names, EVENTS, pns=pns, version="FCS3.2", pn=pn)))
    assert r.channel_for("CD3").pnn == "BV785-A"  # not the Time channel
    assert r.channel_for("SSC-A").pnn == "FITC-A"  # the one Side_Scatter Area channel
    assert r.how["SSC-A"] == "$PnTYPE 'Side_Scatter' + $PnFEATURE 'Area' ($PnN 'FITC-A')"
    # without types the labels decide, and the Time channel's 'CD3' makes CD3 ambiguous
    with pytest.raises(
        PanelError, match=re.escape("CD3 of panel 'nk_v1' matches 2 channels by $PnS")
    ):
        _resolve(_write(tmp_path, build_fcs(names, EVENTS, pns=pns, version="FCS3.1"), "x.fcs"))


def test_pntype_spellings_are_one_kind():
    """Cytek writes Forward_Scatter, NIST fireflow 'Forward Scatter': both are scatter."""
    from nkflow.fcs.io import pntype_kind

    assert [pntype_kind(v) for v in ("Forward_Scatter", "forward scatter", "SIDE_SCATTER",
            "Time", "Unmixed Fluorescence", "Raw_Fluorescence", "Mass", "")] == [
        "scatter", "scatter", "scatter", "time", "fluorescence", "fluorescence", "other", "",
    ]  # fmt: skip


def test_generated_tube_as_fcs32_gates_like_its_fcs31_original(tmp_path):
    """The sample generator's writer, asked for FCS 3.2 (``fcs32_keywords``): the same NK tube
    with vendor scatter/time names and every $PnS blank (markers only in $PnANALYTE) resolves
    every marker to the same column as the FCS 3.1 original and gives the same counts."""
    import dataclasses

    from nkflow.gating import gate_sample, load_tree
    from tests.generated import generator, placed, write_tube

    gen = generator()
    style = gen.STYLES["bd_fortessa"]
    visit = gen.Visit(day=14, nk_pct=7.0, bright_frac=0.1, treg_pct_cd4=6.0, alc="1",
                      chimerism={}, n_nk=8000)  # fmt: skip
    res = gen.make_tube(np.random.default_rng(5), style, "nk", visit)
    vendor = dataclasses.replace(
        res,
        pnn=["FS Int", "FS Pk", "SS Int", *res.pnn[3:-1], "Clock"],
        pns=[""] * len(res.pns),
    )
    orig = placed(write_tube(style, "nk", res, tmp_path / "v31.fcs"), "nk")
    new = placed(write_tube(style, "nk", vendor, tmp_path / "v32.fcs", fcs32=True), "nk")
    assert (orig[0].version, new[0].version) == ("FCS3.1", "FCS3.2")
    assert new[1] == orig[1]  # marker -> column, Time and scatter included
    np.testing.assert_array_equal(new[0].events[:, :-1], orig[0].events[:, :-1])
    # $TIMESTEP scales the parameter named Time (FCS 3.2 §3.3.48 names it so); 'Clock' keeps
    # its ticks in the reader and time QC scales it (nkflow.qc.time_in_seconds)
    np.testing.assert_allclose(new[0].events[:, -1] * style.timestep, orig[0].events[:, -1])
    tree = load_tree(ROOT / "config" / "gating" / "nk_v1.yaml")
    counts = [
        gate_sample(tree, s.events, mi, spill=sp, channel_names=s.channel_names, ranges=rg)
        .counts_table(denominator="live")["events"]
        .tolist()
        for s, mi, sp, rg in (orig, new)
    ]
    assert counts[0] == counts[1] and sum(counts[0]) > 0
