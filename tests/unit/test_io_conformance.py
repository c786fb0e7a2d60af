"""FCS conformance: each preprocessing step of ``nkflow.fcs.io`` against the FCS 3.1 / 3.2 text.

One test (or a few) per row of docs/fcs-conformance.md; each names the clause it pins. Files are
written byte by byte by ``tests.unit.conftest_io.build_fcs`` (not by FlowIO), so the expected
values follow from the clause and how the file was built, not from a reader's output.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from nkflow.errors import FcsError
from nkflow.fcs.io import read_fcs
from tests.unit.conftest_io import build_fcs
from tests.unit.conftest_io import write_file as _write

# ----------------------------------------------------------------------------- $TIMESTEP


@pytest.mark.parametrize(("value", "why"), [("0", None), ("-0.01", None), (" ", "empty")])
def test_timestep_not_positive_or_empty_leaves_time_raw_and_is_recorded(tmp_path, value, why):
    """FCS 3.1 $TIMESTEP: the time step in seconds per unit of the Time parameter (FCS 3.2
    §3.3.64: to be given with a Time parameter). Multiplying by 0 would erase the clock and by a
    negative value reverse it (FlowIO does both); a blank value (FCS values cannot be empty) was silently taken as 1.
    """
    ev = np.array([[10.0, 100.0], [20.0, 300.0]])
    p = _write(tmp_path, build_fcs(["Time", "FL1-A"], ev, extra={"$TIMESTEP": value}))
    s = read_fcs(p)
    np.testing.assert_array_equal(s.events, ev)
    if why:
        expected = f"$TIMESTEP is ' ' ({why}); the time channel 'Time' is left in raw units"
    else:
        expected = (
            f"$TIMESTEP is '{value}'; a time step must be > 0 seconds per unit (FCS 3.1 "
            "$TIMESTEP), so the time channel 'Time' is left in raw units"
        )
    assert s.warnings == (expected,)


def test_timestep_scales_only_the_channel_named_time(tmp_path):
    """FCS 3.1 $TIMESTEP applies to the Time parameter ($PnN 'Time', any case as in FCS 3.2
    §3.3.64); another column is not touched, and the Time channel's own $PnG is not a gain
    (FCS 3.2 §3.3.46: the time parameter shall not have $PnG; BD files write $PnG = $TIMESTEP).
    """
    ev = np.array([[10.0, 7.0, 100.0], [20.0, 9.0, 300.0]])
    blob = build_fcs(
        ["TIME", "HDR-T", "FL1-A"], ev, png=[0.01, 1.0, 1.0], extra={"$TIMESTEP": "0.01"}
    )
    s = read_fcs(_write(tmp_path, blob))
    np.testing.assert_allclose(s.events, [[0.1, 7.0, 100.0], [0.2, 9.0, 300.0]], rtol=1e-15)
    assert s.warnings == ()


# ----------------------------------------------------------------------------- $PnG


@pytest.mark.parametrize("datatype", ["I", "F"])
def test_gain_divides_linear_channels_of_integer_and_float_data(tmp_path, datatype):
    """FCS 3.1 $PnG: the amplifier gain of a linear parameter; the scale value is the stored
    value divided by it. Float parameters are linear by definition ($PnE 0,0), so the gain
    applies to them too.
    """
    ev = np.array([[10.0, 100.0], [20.0, 300.0]])
    blob = build_fcs(["FSC-H", "SSC-H"], ev, datatype=datatype, pnr=[1024, 1024], png=[4.0, 8.0])
    s = read_fcs(_write(tmp_path, blob))
    np.testing.assert_array_equal(s.events, ev / [4.0, 8.0])
    assert s.warnings == ()


@pytest.mark.parametrize("gain", [0.0, -2.0])
def test_gain_zero_or_negative_is_not_applied_and_is_recorded(tmp_path, gain):
    """FCS 3.1 $PnG is an amplifier gain, > 0. FlowIO skips 0 silently and divides by a
    negative gain (every event changes sign); nkflow applies neither and says so.
    """
    ev = np.array([[10.0, 100.0], [20.0, 300.0]])
    blob = build_fcs(["FSC-H", "SSC-H"], ev, datatype="I", pnr=[1024, 1024], png=[gain, 1.0])
    s = read_fcs(_write(tmp_path, blob))
    np.testing.assert_array_equal(s.events, ev)
    assert s.warnings == (
        f"$P1G={gain:g} (FSC-H): an amplifier gain must be > 0 (FCS 3.1 $PnG); no gain was "
        "applied to these channels (FlowIO skips a gain of 0 and divides by a negative one)",
    )


def test_gain_on_a_log_channel_is_read_as_flowkit_and_recorded(tmp_path):
    """FCS 3.2 §3.3.46: $PnG shall not be used when $PnE declares log amplification. The scale
    of such a channel is not defined; nkflow reads it as FlowIO/FlowKit (log, then / gain) so
    the numbers stay comparable, and records ``log_with_gain``.
    """
    ev = np.array([[0.0], [512.0]])
    blob = build_fcs(["FL1-H"], ev, datatype="I", pnr=[1024], pne=["4,1"], png=[2.0])
    s = read_fcs(_write(tmp_path, blob))
    np.testing.assert_allclose(s.events[:, 0], [0.5, 50.0], rtol=1e-14)
    assert s.warnings == (
        "log_with_gain: $P1E=4,1 with $P1G=2 (FL1-H); FCS 3.2 §3.3.46: $PnG shall not be used "
        "with logarithmic $PnE, so the scale of these channels is uncertain. Read as "
        "FlowIO/FlowKit do: 10 ** (decades x value / $PnR) x log0, then divided by the gain",
    )


# ----------------------------------------------------------------------------- $PnE


def test_integer_log_amplification_follows_the_spec_formula(tmp_path):
    """FCS 3.1 $PnE/f1,f2/: f1 log decades, f2 the linear value of channel 0; a stored value x
    of a parameter with range r ($PnR) is 10 ** (f1 * x / r) * f2. Beckman writes '4.0,0.1024'.
    Integer values are masked to $PnR first (0xFFFF & 1023 = 1023).
    """
    ev = np.array([[0.0, 0.0], [256.0, 512.0], [0xFFFF, 1023.0]])
    blob = build_fcs(
        ["FL1 Log", "FL2 Log"], ev, datatype="I", pnr=[1024, 1024], pne=["4,1", " 4.0,0.1024"]
    )
    s = read_fcs(_write(tmp_path, blob))
    x = np.array([[0.0, 0.0], [256.0, 512.0], [1023.0, 1023.0]])
    expected = 10.0 ** (4 * x / 1024) * [1.0, 0.1024]
    np.testing.assert_allclose(s.events, expected, rtol=1e-14)
    assert s.channels[1].pne == (4.0, 0.1024)
    assert s.warnings == ()


def test_pne_0_0_is_linear_whatever_the_range_display_or_name(tmp_path):
    """FCS 3.1 $PnE/0,0/ is linear amplification. A 1024-channel range, a channel called
    'FL1 Log' or a $PnD 'Logarithmic' display hint (FCS 3.1 $PnD: visualisation only) do not
    make it log: nkflow never guesses an amplification the file does not declare.
    """
    ev = np.array([[0.0], [256.0], [1023.0]])
    blob = build_fcs(
        ["FL1 Log"], ev, datatype="I", pnr=[1024], pne=["0,0"],
        extra={"$P1D": "Logarithmic,4,0.1", "$P1DISPLAY": "LOG"},
    )  # fmt: skip
    s = read_fcs(_write(tmp_path, blob))
    np.testing.assert_array_equal(s.events, ev)
    assert s.warnings == ()


def test_missing_pne_in_fcs3_is_read_linear_and_recorded(tmp_path):
    """$PnE is optional in FCS 2.0 and required from FCS 3.0 on (FCS 3.1 required keywords)."""
    ev = np.array([[10.0, 100.0], [20.0, 300.0]])
    blob = build_fcs(["FL1-H", "FL2-H"], ev, datatype="I", pnr=[1024, 1024], version="FCS3.0")
    blob = blob.replace(b"/$P2E/0,0/", b"/XP2E/0,0/")  # same length: offsets stay valid
    s = read_fcs(_write(tmp_path, blob))
    np.testing.assert_array_equal(s.events, ev)
    assert s.warnings == (
        "required keyword $PnE is missing for 'FL2-H' (FCS3.0 requires it for every "
        "parameter); read as linear ($PnE 0,0)",
    )
    fcs2 = build_fcs(["FL1-H", "FL2-H"], ev, datatype="I", pnr=[1024, 1024], version="FCS2.0")
    fcs2 = fcs2.replace(b"/$P2E/0,0/", b"/XP2E/0,0/")
    assert read_fcs(_write(tmp_path, fcs2)).warnings == ()


@pytest.mark.parametrize("pne", ["-4,1", "4,-1"])
def test_negative_pne_is_refused(tmp_path, pne):
    """FCS 3.1 $PnE/f1,f2/: f1 and f2 are >= 0 (linear is 0,0)."""
    blob = build_fcs(["FL1-H"], np.zeros((2, 1)), datatype="I", pnr=[1024], pne=[pne])
    with pytest.raises(
        FcsError,
        match=re.escape(
            f"t.fcs: $P1E (amplification of channel 'FL1-H') is '{pne}'; FCS 3.1 $PnE/f1,f2/ "
            "has f1 (log decades) >= 0 and f2 (log0) >= 0"
        ),
    ):
        read_fcs(_write(tmp_path, blob))


# ----------------------------------------------------------------------------- $PnR


def test_integer_range_zero_is_refused(tmp_path):
    """FCS 3.1 $PnR: integer values lie in 0 .. $PnR - 1 and the reader masks them with
    (next power of 2 of $PnR) - 1; a range of 0 would mask every event to 0.
    """
    blob = build_fcs(["FL1-H"], np.ones((2, 1)), datatype="I", pnr=[0])
    with pytest.raises(
        FcsError,
        match=re.escape(
            "t.fcs: $P1R (range of channel 'FL1-H') is '0'; expected a whole number >= 1 for "
            "integer data"
        ),
    ):
        read_fcs(_write(tmp_path, blob))


@pytest.mark.parametrize(
    ("bits", "pnr", "stored", "expected"),
    [
        (16, 1024, [0xFFFF, 1024 + 7], [1023, 7]),  # power of 2: the 6 high bits dropped
        (16, 1000, [0xFFFF, 1000, 1023], [1023, 1000, 1023]),  # mask of next power 2 (1024)
        (32, 262144, [0xFFFFFFFF, 262143], [262143, 262143]),
        (8, 256, [255, 7], [255, 7]),  # full width: nothing to mask
    ],
)
def test_integer_values_are_masked_to_the_next_power_of_two_of_pnr(
    tmp_path, bits, pnr, stored, expected
):
    """FCS 3.1 $PnR / $PnB: bits above those needed for $PnR are not data and are masked off;
    when $PnR is not a power of 2 the next power of 2 sets the mask (so 1000 keeps values up to
    1023). Float data is never masked (next test).
    """
    ev = np.array(stored, dtype=np.float64)[:, None]
    blob = build_fcs(["FL1-H"], ev, datatype="I", bits=bits, pnr=[pnr])
    np.testing.assert_array_equal(read_fcs(_write(tmp_path, blob)).events[:, 0], expected)


def test_float_values_above_pnr_are_kept(tmp_path):
    """FCS 3.1 $PnR on float data is the range, not a mask: values beyond it (and negatives,
    from compensation or baseline restoration) are stored values and are kept.
    """
    ev = np.array([[-150.5], [300000.25], [1e7]])
    s = read_fcs(_write(tmp_path, build_fcs(["FL1-A"], ev, pnr=[262144])))
    np.testing.assert_array_equal(s.events, ev.astype(np.float32))


# ----------------------------------------------------------------------------- $PnB, $BYTEORD


@pytest.mark.parametrize(
    ("version", "datatype", "bits", "byteord", "order"),
    [
        ("FCS3.1", "I", 16, "1,2,3,4", "<"),  # FCS 3.1: $BYTEORD only tells the endianness
        ("FCS3.1", "I", 32, "4,3,2,1", ">"),
        ("FCS3.0", "I", 16, "1,2", "<"),  # FCS 2.0/3.0: the byte order of one $PnB value
        ("FCS2.0", "I", 16, "2,1", ">"),
        ("FCS3.0", "F", 32, "1,2", "<"),  # a 2-byte order on 4-byte floats: still little endian
        ("FCS3.1", "D", 64, "4,3,2,1", ">"),
    ],
)
def test_byteord_gives_the_endianness_of_every_value(
    tmp_path, version, datatype, bits, byteord, order
):
    """FCS 3.1 $BYTEORD is 1,2,3,4 (little endian) or 4,3,2,1 (big endian) whatever $PnB; FCS
    2.0/3.0 wrote the order of the bytes of one value (1,2 / 2,1 for 16 bits). The bytes are
    written here in the named order, independently of the reader.
    """
    ev = np.array([[1.0, 258.0], [65535.0 if datatype == "I" else 0.5, 3.0]])
    blob = build_fcs(["A", "B"], ev, version=version, datatype=datatype, bits=bits,
                     byteord=byteord, pnr=[65536, 65536])  # fmt: skip
    code = {"I": f"u{bits // 8}", "F": "f4", "D": "f8"}[datatype]
    assert ev.astype(order + code).tobytes() in blob  # the layout is what the clause says
    s = read_fcs(_write(tmp_path, blob))
    np.testing.assert_array_equal(s.events, ev)
    assert s.byte_order == ("little" if order == "<" else "big")


def test_byteord_other_than_little_or_big_endian_is_refused(tmp_path):
    """FCS 3.1 allows only 1,2,3,4 and 4,3,2,1; mixed orders (3,4,1,2, PDP-11) are refused."""
    blob = build_fcs(["A"], np.ones((2, 1)), byteord="1,2,3,4").replace(
        b"$BYTEORD/1,2,3,4/", b"$BYTEORD/2,1,4,3/"
    )
    with pytest.raises(FcsError, match=re.escape("$BYTEORD is '2,1,4,3'; expected '1,2,3,4'")):
        read_fcs(_write(tmp_path, blob))


def test_mixed_integer_widths_are_read_per_channel(tmp_path):
    """FCS 3.1 $PnB: bits of parameter n; since $BYTEORD only gives the endianness, integer
    parameters may have different widths (8, 16 and 32 here), each masked to its own $PnR.
    """
    ev = np.array([[255.0, 65535.0, 70000.0], [3.0, 1025.0, 5.0]])
    blob = build_fcs(["A", "B", "C"], ev, datatype="I", bits=[8, 16, 32], pnr=[256, 1024, 262144])
    assert int(blob[34:42]) - int(blob[26:34]) + 1 == 2 * (1 + 2 + 4)  # 7 bytes per event
    s = read_fcs(_write(tmp_path, blob))
    np.testing.assert_array_equal(s.events, [[255.0, 1023.0, 70000.0], [3.0, 1.0, 5.0]])
    assert [c.pnb for c in s.channels] == [8, 16, 32]


def test_float_pnb_other_than_the_type_width_is_read_at_the_type_width(tmp_path):
    """FCS 3.1: $DATATYPE F values are 32-bit; a $PnB of 16 on float data is a writer's slip.
    The DATA length (checked against $TOT x $PAR x 4) decides, and the slip is recorded.
    """
    ev = np.array([[1.5, 2.5], [3.5, 4.5]])
    blob = build_fcs(["A", "B"], ev).replace(b"$P2B/32/", b"$P2B/16/")
    s = read_fcs(_write(tmp_path, blob))
    np.testing.assert_array_equal(s.events, ev)
    assert s.warnings == ("$DATATYPE F needs 32-bit values but $PnB is [16]; read as 32-bit",)


# ----------------------------------------------------------------------------- $SPILLOVER

SPILL_NAMES = ["FSC-A", "FITC-A", "PE-A", "APC-A", "Time"]
SPILL_EVENTS = np.array([[100.0, 1000.0, 100.0, 5.0, 1.0], [200.0, 100.0, 500.0, 6.0, 2.0]])


def _spill_sample(tmp_path, value, pns=None):
    blob = build_fcs(SPILL_NAMES, SPILL_EVENTS, datatype="D", pns=pns, extra={"$SPILLOVER": value})
    return read_fcs(_write(tmp_path, blob, "spill.fcs"))


def test_spillover_values_keep_every_digit_written(tmp_path):
    """FCS 3.1 $SPILLOVER/n,[param 1],...,[param n],[val 1,1],...,[val n,n]/: values are
    floating-point numbers as written; they are parsed to the nearest double, with exponent
    notation, not rounded to a display precision.
    """
    from nkflow.fcs.compensation import spillover_for

    s = _spill_sample(tmp_path, "2,FITC-A,PE-A,1,0.12345678901234567,1.5E-3,1.0")
    spill = spillover_for(s)
    assert spill.matrix[0, 1] == float("0.12345678901234567") == 0.12345678901234566
    assert spill.matrix[1, 0] == 0.0015


def test_spillover_names_parameters_by_pnn_and_may_list_a_subset(tmp_path):
    """FCS 3.1 $SPILLOVER lists the parameters it applies to by $PnN, in any order and any
    subset. nkflow compensates exactly those (APC-A, FSC-A and Time untouched). FlowKit instead
    expects the matrix to list every channel not named FSC-/SSC-/Time and refuses this one.
    """
    import flowkit

    from nkflow.fcs.compensation import compensate, spillover_for

    s = _spill_sample(tmp_path, "2,PE-A,FITC-A,1,0.2,0.1,1")
    comp = compensate(s.events, s.channel_names, spillover_for(s))
    # FITC 1000 spills 10 % into PE (100), PE 500 spills 20 % into FITC (100): true signals
    np.testing.assert_allclose(comp[:, 1:3], [[1000.0, 0.0], [0.0, 500.0]], rtol=0, atol=1e-9)
    np.testing.assert_array_equal(comp[:, [0, 3, 4]], SPILL_EVENTS[:, [0, 3, 4]])
    fk = flowkit.Sample(str(tmp_path / "spill.fcs"))
    with pytest.raises(ValueError, match="APC-A"):
        flowkit.Matrix(fk.metadata["spillover"], [fk.pnn_labels[i] for i in fk.fluoro_indices])


def test_spillover_naming_pns_labels_is_refused(tmp_path):
    """FCS 3.1 $SPILLOVER parameter names are $PnN; a matrix written with the stain names
    ($PnS) does not say which detector is which and is refused, naming the file's $PnN.
    """
    from nkflow.errors import CompensationError
    from nkflow.fcs.compensation import spillover_for

    s = _spill_sample(
        tmp_path, "2,CD3 FITC,CD8 PE,1,0.1,0.2,1", pns=["", "CD3 FITC", "CD8 PE", "", ""]
    )
    with pytest.raises(CompensationError, match=r"names channel\(s\) \['CD3 FITC', 'CD8 PE'\]"):
        spillover_for(s)


# ----------------------------------------------------------------------------- $PnD, $PnL, $PnO


def test_display_and_informational_keywords_change_no_value(tmp_path):
    """FCS 3.1 $PnD (suggested visualisation scale), $PnL (excitation wavelength), $PnO
    (excitation power), $PnV (detector voltage), $PnF (optical filter) and $PnCALIBRATION
    describe the acquisition or its display; none changes a stored value. Events equal those of
    the same file without them, and the keywords are kept as written.
    """
    ev = np.array([[10.0, 100.0], [20.0, 300.0]])
    extra = {
        "$P1D": "Logarithmic,4,0.1", "$P2D": "Linear,0,1000", "$P1L": "488", "$P2L": "405,488",
        "$P1O": "50", "$P2O": "100", "$P1V": "450", "$P2F": "530/30",
        "$P2CALIBRATION": "1.234,MESF",
    }  # fmt: skip
    plain = read_fcs(_write(tmp_path, build_fcs(["FL1-A", "FL2-A"], ev), "plain.fcs"))
    s = read_fcs(_write(tmp_path, build_fcs(["FL1-A", "FL2-A"], ev, extra=extra)))
    np.testing.assert_array_equal(s.events, plain.events)
    assert s.warnings == ()
    assert {k: s.keywords[k] for k in extra} == extra


# ----------------------------------------------------------------------------- $LOST, $ABRT


def test_lost_and_aborted_events_reach_tube_qc_and_provenance(tmp_path):
    """FCS 3.1 $LOST (events lost, computer busy) and $ABRT (events lost to electronic
    coincidence) are reported: in provenance as written, and as the ``acquisition`` QC row
    (``events_lost``, WARN above qc.acquisition.max_lost_frac).
    """
    import json

    from nkflow.tube import TubeOutputs, run_tube

    root = Path(__file__).resolve().parents[2]
    ev = np.array([[50_000.0, 20_000.0, 3490.0], [60_000.0, 30_000.0, 9910.0]] * 50)
    blob = build_fcs(
        ["FSC-A", "SSC-A", "CD56"], ev, extra={"$LOST": "20", "$ABRT": "5"}
    )  # 25 lost of 125 detected: 20 %
    fcs = _write(tmp_path, blob, "nk.fcs")
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
    rows = [r.split("\t") for r in out.qc.read_text().splitlines()]
    got = [dict(zip(rows[0], r, strict=True)) for r in rows[1:]]
    lost = [r for r in got if r["check"] == "acquisition"]
    assert [(r["status"], r["reason_code"], r["value"]) for r in lost] == [
        ("WARN", "events_lost", "0.2")
    ]
    prov = json.loads(out.provenance.read_text())
    assert prov["acquisition_losses"] == {"$TOT": "100", "$LOST": "20", "$ABRT": "5"}
