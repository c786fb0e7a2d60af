"""A panel marker the file lacks: a WARN when a gate reads it, a recorded PASS when none does.

Tubes are made with the sample generator (BD style), with one marker's ``$PnS`` renamed to a
name no alias matches, and run through :func:`nkflow.tube.run_tube` as the workflow runs them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from nkflow.tables import read_tsv
from nkflow.tube import TubeOutputs, run_tube
from tests.generated import ROOT, generator, write_tube


def _run(tmp_path: Path, drop: str | None) -> tuple[object, object, dict]:
    gen = generator()
    style = gen.STYLES["bd_fortessa"]
    visit = gen.Visit(day=0, alc="500", nk_pct=12.0, bright_frac=0.1, treg_pct_cd4=5.0,
                      chimerism={})  # fmt: skip
    res = gen.make_tube(np.random.default_rng(3), style, "nk", visit)
    if drop is not None:
        assert drop in res.pns
        res.pns = [("CD99" if s == drop else s) for s in res.pns]
    fcs = write_tube(style, "nk", res, tmp_path / f"S1_{drop or 'all'}.fcs")
    d = tmp_path / (drop or "all")
    out = TubeOutputs(d / "counts.tsv", d / "qc.tsv", d / "gating.png", d / "provenance.json")
    status = run_tube(
        fcs=fcs,
        panel=ROOT / "config/panels/nk_v1.yaml",
        gating=ROOT / "config/gating/nk_v1.yaml",
        sample_id="S1",
        tube="nk",
        settings={},
        outputs=out,
    )
    prov = json.loads(out.provenance.read_text(encoding="utf-8"))
    assert prov["qc_status"] == status
    return read_tsv(out.qc), read_tsv(out.counts).set_index("population"), prov


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("markers")
    return {drop: _run(root, drop) for drop in (None, "CD19", "CD56")}


def test_a_marker_no_gate_reads_is_recorded_not_warned(runs):
    qc, counts, prov = runs["CD19"]
    panel_rows = qc[qc["check"] == "panel"]
    assert panel_rows["reason_code"].tolist() == ["unused_marker_missing"]
    row = panel_rows.iloc[0]
    assert row["status"] == "PASS"
    assert row["message"] == (
        "marker CD19 of panel nk_v1 not found in S1_CD19.fcs; no gate of tree nk_v1 reads it, "
        "so no population is affected"
    )
    assert prov["missing_markers"] == {"CD19": []}
    # the tube passes, as it does with the marker: nothing else changed
    clean_qc, clean_counts, _ = runs[None]
    assert set(qc["tube_status"]) == set(clean_qc["tube_status"]) == {"PASS"}
    assert "missing_marker" not in set(qc["reason_code"])
    assert counts["events"].tolist() == clean_counts["events"].tolist()


def test_a_marker_a_gate_reads_is_a_warning_and_its_populations_are_not_computed(runs):
    qc, counts, prov = runs["CD56"]
    panel_rows = qc[qc["check"] == "panel"]
    assert panel_rows["reason_code"].tolist() == ["missing_marker"]
    assert panel_rows.iloc[0]["status"] == "WARN"
    assert panel_rows.iloc[0]["message"] == (
        "marker CD56 not found in S1_CD56.fcs (gate(s) nk, nk_cd56bright, nk_cd56dim, nkt_like "
        "of tree nk_v1 read it; panel nk_v1 declares it required); populations that need it "
        "are not computed"
    )
    assert set(qc["tube_status"]) == {"WARN"}
    assert prov["missing_markers"] == {
        "CD56": ["nk", "nk_cd56bright", "nk_cd56dim", "nkt_like", "required"]
    }
    assert counts.loc["nk", "status"] == "not_computed"
    assert counts.loc["nk", "reason"] == "missing_marker:CD56"
    assert counts.loc["live", "status"] == "ok"


def test_severity_of_an_unused_missing_marker_is_configurable(tmp_path):
    """A lab that wants every missing panel marker to warn says so in qc.severity."""
    from nkflow import qc as qcmod
    from nkflow.tube import _missing_marker_check

    cfg = qcmod.QcConfig.from_dict({"severity": {"unused_marker_missing": "WARN"}})
    tree = type("T", (), {"name": "nk_v1"})()
    pnl = type("P", (), {"name": "nk_v1"})()
    check = _missing_marker_check(cfg, "CD19", [], "x.fcs", tree, pnl)
    assert (check.status, check.reason_code) == ("WARN", "unused_marker_missing")
    assert qcmod.tube_status([check], cfg)[0] == "WARN"
