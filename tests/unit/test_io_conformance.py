"""FCS conformance: each preprocessing step of ``nkflow.io`` against the FCS 3.1 / 3.2 text.

One test (or a few) per row of docs/fcs-conformance.md; each names the clause it pins. Files are
written byte by byte by ``tests.unit.conftest_io.build_fcs`` (not by FlowIO), so the expected
values follow from the clause and how the file was built, not from a reader's output.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from nkflow.io import read_fcs
from tests.unit.conftest_io import build_fcs


def _write(tmp_path: Path, blob: bytes, name: str = "t.fcs") -> Path:
    p = tmp_path / name
    p.write_bytes(blob)
    return p


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
