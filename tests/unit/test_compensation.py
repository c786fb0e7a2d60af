"""nkflow.fcs.compensation: spillover sources, checks, and compensation by channel name."""

from __future__ import annotations

import re

import numpy as np
import pytest

from nkflow.errors import CompensationError
from nkflow.fcs.compensation import (
    Spillover,
    compensate,
    load_spillover_csv,
    parse_spill_keyword,
    spillover_for,
)
from nkflow.fcs.io import read_fcs
from tests.unit.conftest_io import build_fcs

NAMES = ["FSC-A", "FITC-A", "PE-A", "Time"]
# true signals of two dyes; S[i, j] = spill of dye i into detector j
TRUE = np.array([[100.0, 1000.0, 0.0, 1.0], [200.0, 0.0, 500.0, 2.0]])
S = np.array([[1.0, 0.1], [0.2, 1.0]])
OBSERVED = TRUE.copy()
OBSERVED[:, 1:3] = TRUE[:, 1:3] @ S  # [[1000, 100], [100, 500]]


def _sample(tmp_path, extra, events=OBSERVED, name="t.fcs"):
    p = tmp_path / name
    p.write_bytes(build_fcs(NAMES, events, datatype="D", extra=extra))
    return read_fcs(p)


def test_observed_fixture_is_what_the_matrix_says():
    np.testing.assert_array_equal(OBSERVED[:, 1:3], [[1000.0, 100.0], [100.0, 500.0]])


@pytest.mark.parametrize("key", ["$SPILLOVER", "$SPILL", "SPILL"])
def test_keyword_sources_and_exact_compensation(tmp_path, key):
    s = _sample(tmp_path, {key: "2,FITC-A,PE-A,1,0.1,0.2,1"})
    spill = spillover_for(s)
    assert spill.source == key
    assert spill.channels == ("FITC-A", "PE-A")
    before = s.events.copy()
    comp = compensate(s.events, s.channel_names, spill)
    np.testing.assert_allclose(comp, TRUE, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(s.events, before)  # input untouched
    np.testing.assert_array_equal(comp[:, [0, 3]], before[:, [0, 3]])  # other columns untouched


def test_spillover_precedence_is_spillover_then_spill_then_SPILL(tmp_path):
    s = _sample(
        tmp_path,
        {"SPILL": "1,PE-A,1", "$SPILL": "1,FITC-A,1", "$SPILLOVER": "2,FITC-A,PE-A,1,0.1,0.2,1"},
    )
    assert spillover_for(s).source == "$SPILLOVER"


def test_no_spillover_is_none(tmp_path):
    assert spillover_for(_sample(tmp_path, {})) is None


def test_matrix_in_other_channel_order_is_matched_by_name(tmp_path):
    # same matrix, channels listed PE-A first: rows and columns permuted
    s = _sample(tmp_path, {"$SPILLOVER": "2,PE-A,FITC-A,1,0.2,0.1,1"})
    comp = compensate(s.events, s.channel_names, spillover_for(s))
    np.testing.assert_allclose(comp, TRUE, rtol=0, atol=1e-9)


def test_csv_override_replaces_file_matrix_and_rows_are_matched_by_label(tmp_path):
    csv = tmp_path / "m.csv"
    csv.write_text(",FITC-A,PE-A\nPE-A,0.2,1\nFITC-A,1,0.1\n")
    s = _sample(tmp_path, {"$SPILLOVER": "2,FITC-A,PE-A,1,0,0,1"})
    spill = spillover_for(s, override=csv)
    assert spill.source == f"csv:{csv}"
    np.testing.assert_array_equal(spill.matrix, S)
    np.testing.assert_allclose(compensate(s.events, s.channel_names, spill), TRUE, atol=1e-9)


def test_flowjo_export_with_title_and_comp_prefix(tmp_path):
    mtx = tmp_path / "flowjo.txt"
    mtx.write_text("Acquisition-defined\nComp-PE-A\tComp-FITC-A\n1\t0.2\n0.1\t1\n")
    spill = load_spillover_csv(mtx)
    assert spill.source == f"flowjo:{mtx}"
    assert spill.channels == ("PE-A", "FITC-A")
    s = _sample(tmp_path, {})
    got = compensate(s.events, s.channel_names, spillover_for(s, override=mtx))
    np.testing.assert_allclose(got, TRUE, atol=1e-9)


def test_wrong_channel_names_are_refused(tmp_path):
    s = _sample(tmp_path, {"SPILL": "2,FITC-A,APC-A,1,0.1,0.2,1"})
    with pytest.raises(CompensationError) as err:
        spillover_for(s)
    assert str(err.value) == (
        "t.fcs: spillover from SPILL names channel(s) ['APC-A'] that the file does not have; "
        "file channels ($PnN): FSC-A, FITC-A, PE-A, Time. Fix the matrix channel names or "
        "configure the right matrix for this panel"
    )


def test_singular_matrix_is_refused(tmp_path):
    s = _sample(tmp_path, {"SPILL": "2,FITC-A,PE-A,1,1,1,1"})
    with pytest.raises(
        CompensationError,
        match=r"^t\.fcs: spillover from SPILL is singular \(condition number .*\); it cannot be "
        r"inverted",
    ):
        spillover_for(s)


def test_diagonal_not_one_is_refused(tmp_path):
    s = _sample(tmp_path, {"SPILL": "2,FITC-A,PE-A,1,0.1,0.2,0.5"})
    with pytest.raises(
        CompensationError,
        match=re.escape(
            "t.fcs: spillover from SPILL: diagonal entry for 'PE-A' is 0.5; expected 1"
        ),
    ):
        spillover_for(s)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            "2,FITC-A,PE-A,1,0.1,0.2",
            "t.fcs: SPILL declares n=2 channels, so it needs 1 + n + n x n = 7 comma-separated "
            "fields, but has 6; the matrix is not square or the keyword is cut",
        ),
        (
            "x,FITC-A",
            "t.fcs: SPILL starts with 'x'; expected the channel count n followed by n names and "
            "n x n values",
        ),
        ("1,FITC-A,abc", "t.fcs: SPILL holds a non-numeric value"),
        ("2,FITC-A,FITC-A,1,0,0,1", "t.fcs: spillover from SPILL lists channels twice: ['FITC-A']"),
    ],
)
def test_malformed_keywords_are_refused(tmp_path, value, message):
    s = _sample(tmp_path, {"SPILL": value})
    with pytest.raises(CompensationError) as err:
        spillover_for(s)
    assert str(err.value).startswith(message)


def test_non_square_csv_is_refused(tmp_path):
    csv = tmp_path / "m.csv"
    csv.write_text("FITC-A,PE-A\n1,0.1\n")
    with pytest.raises(CompensationError) as err:
        load_spillover_csv(csv)
    assert str(err.value) == (
        f"{csv}: the header names 2 channels but 1 rows follow; a spillover matrix must be "
        "square (one row per channel)"
    )


def test_compensate_subset_columns_by_name_float32():
    ev = OBSERVED[:, [2, 1]].astype(np.float32)  # PE-A, FITC-A
    spill = Spillover(channels=("FITC-A", "PE-A"), matrix=S, source="test")
    got = compensate(ev, ["PE-A", "FITC-A"], spill)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, TRUE[:, [2, 1]], rtol=1e-6, atol=1e-4)  # float32 rounding


def test_compensate_unknown_channel_is_refused():
    spill = Spillover(channels=("FITC-A", "PE-A"), matrix=S, source="test")
    with pytest.raises(
        CompensationError,
        match=re.escape("compensate: spillover (test) channels ['PE-A'] are not among"),
    ):
        compensate(np.zeros((1, 1)), ["FITC-A"], spill)


def test_parse_keyword_roundtrip():
    sp = parse_spill_keyword("2, a ,b,1,0.5,0,1", where="f", source="SPILL")
    assert sp.channels == ("a", "b")
    np.testing.assert_array_equal(sp.matrix, [[1, 0.5], [0, 1]])


FLOWJO_MTX = """<?xml version="1.0" encoding="UTF-8"?>
<gating:gatingML>
  <transforms:spilloverMatrix prefix="Comp-" name="Acquisition-defined" editable="1"
      status="FINALIZED" transforms:id="" suffix="">
    <data-type:parameters>
      <data-type:parameter data-type:name="PE-A"/>
      <data-type:parameter data-type:name="FITC-A"/>
    </data-type:parameters>
    <transforms:spillover data-type:parameter="PE-A" userProvidedCompInfix="Comp-PE-A">
      <transforms:coefficient data-type:parameter="FITC-A" transforms:value="0.2"/>
      <transforms:coefficient data-type:parameter="PE-A" transforms:value="1"/>
    </transforms:spillover>
    <transforms:spillover data-type:parameter="FITC-A">
      <transforms:coefficient data-type:parameter="FITC-A" transforms:value="1"/>
      <transforms:coefficient data-type:parameter="PE-A" transforms:value="0.1"/>
    </transforms:spillover>
  </transforms:spilloverMatrix>
</gating:gatingML>
"""


def test_flowjo_xml_mtx_rows_and_columns_by_name(tmp_path):
    mtx = tmp_path / "comp.mtx"
    mtx.write_text(FLOWJO_MTX)
    spill = load_spillover_csv(mtx)
    assert spill.source == f"flowjo:{mtx}"
    assert spill.channels == ("PE-A", "FITC-A")
    np.testing.assert_array_equal(spill.matrix, [[1.0, 0.2], [0.1, 1.0]])
    s = _sample(tmp_path, {})
    got = compensate(s.events, s.channel_names, spillover_for(s, override=mtx))
    np.testing.assert_allclose(got, TRUE, atol=1e-9)


def test_flowjo_xml_spectral_and_ragged_are_refused(tmp_path):
    mtx = tmp_path / "comp.mtx"
    mtx.write_text(FLOWJO_MTX.replace('prefix="Comp-"', 'spectral="1" prefix="Comp-"'))
    with pytest.raises(CompensationError, match="spectral \\(unmixing\\) matrices are not"):
        load_spillover_csv(mtx)
    line = '<transforms:coefficient data-type:parameter="FITC-A" transforms:value="0.2"/>'
    mtx.write_text(FLOWJO_MTX.replace(line, ""))
    with pytest.raises(
        CompensationError,
        match=re.escape(
            "FlowJo matrix row 'PE-A' has coefficients for ['PE-A']; expected one for each of "
            "['PE-A', 'FITC-A'] (the matrix must be square)"
        ),
    ):
        load_spillover_csv(mtx)
