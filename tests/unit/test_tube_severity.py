"""The pipeline's own reason codes take their severity from qc.severity like QC's: a tube
without a spillover matrix, run through :func:`nkflow.tube.run_tube` as the workflow runs it."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nkflow.errors import ConfigError
from nkflow.tables import read_tsv
from nkflow.tube import TubeOutputs, run_tube
from tests.generated import ROOT, generator


@pytest.fixture(scope="module")
def uncompensated(tmp_path_factory) -> Path:
    """A generated nk tube written without $SPILLOVER (and none configured).

    Its detectors see no spillover (``spill_base`` 0), so the tube gates as a compensated one
    would: the only finding is the missing matrix. (With real spillover left in, the
    uncompensated NK gate keeps none of the CD3- CD16+ cells and the tube fails on
    ``gate_drops_reference``, which is right but not what these tests are about.)
    """
    gen = generator()
    style = dataclasses.replace(gen.STYLES["bd_fortessa"], spill_base=(0.0, 0.0, 0.0))
    visit = gen.Visit(day=0, alc="500", nk_pct=12.0, bright_frac=0.1, treg_pct_cd4=5.0,
                      chimerism={})  # fmt: skip
    res = gen.make_tube(np.random.default_rng(3), style, "nk", visit)
    path = tmp_path_factory.mktemp("spill") / "S1_nk.fcs"
    kw = {"$CYT": style.cytometer, "$TIMESTEP": f"{style.timestep:g}"}
    gen.write_fcs(
        path, res.events, res.pnn, res.pns, kw, style.version,
        style.byteorder, style.datatype, style.range,
    )  # fmt: skip
    return path


def _run(fcs: Path, out: Path, severity: dict[str, str] | None = None) -> tuple[str, Any]:
    """The tube's status and its no_spillover row (None when it has none)."""
    outputs = TubeOutputs(out / "c.tsv", out / "qc.tsv", out / "g.png", out / "p.json")
    status = run_tube(
        fcs=fcs,
        panel=ROOT / "config/panels/nk_v1.yaml",
        gating=ROOT / "config/gating/nk_v1.yaml",
        sample_id="S1",
        tube="nk",
        settings={"qc": {"severity": severity}} if severity else {},
        outputs=outputs,
    )
    qc = read_tsv(outputs.qc)
    rows = qc[qc["reason_code"] == "no_spillover"]
    return status, rows.iloc[0] if len(rows) else None


def test_no_spillover_is_a_warning_by_default(uncompensated, tmp_path):
    status, row = _run(uncompensated, tmp_path, None)
    assert (row["check"], row["status"]) == ("compensation", "WARN")
    assert row["message"] == (
        "S1_nk.fcs has no spillover matrix ($SPILLOVER/$SPILL/SPILL) and none is configured"
    )
    assert status == "WARN"


def test_a_configured_severity_of_no_spillover_takes_effect(uncompensated, tmp_path):
    status, row = _run(uncompensated, tmp_path / "fail", {"no_spillover": "FAIL"})
    assert (row["status"], status) == ("FAIL", "FAIL")
    assert set(read_tsv(tmp_path / "fail" / "qc.tsv")["tube_status"]) == {"FAIL"}
    # PASS: recorded only (the uncompensated CD56 subsets still warn through gate_subset)
    _, row = _run(uncompensated, tmp_path / "pass", {"no_spillover": "PASS"})
    assert row["status"] == "PASS"


def test_an_unknown_code_in_qc_severity_stops_the_tube(uncompensated, tmp_path):
    with pytest.raises(ConfigError, match=r"field 'qc\.severity': found \"spillover_missing\""):
        _run(uncompensated, tmp_path, {"spillover_missing": "PASS"})


def test_an_unreadable_file_hands_on_its_code_and_message_apart(uncompensated, tmp_path):
    """counts.tsv carries the code alone (the merge reads it, test_endpoints' fcs_unreadable
    case); the message is in qc.tsv."""
    cut = tmp_path / "S1_nk.fcs"
    cut.write_bytes(uncompensated.read_bytes()[:-1000])
    status, _ = _run(cut, tmp_path)
    assert status == "FAIL"
    counts = read_tsv(tmp_path / "c.tsv")
    assert set(counts["status"]) == {"not_computed"}
    assert set(counts["reason"]) == {"fcs_unreadable"}
    qc = read_tsv(tmp_path / "qc.tsv")
    row = qc[qc["check"] == "input"].iloc[0]
    assert row["reason_code"] == "fcs_unreadable" and row["status"] == "FAIL"
    assert "S1_nk.fcs" in row["message"]
