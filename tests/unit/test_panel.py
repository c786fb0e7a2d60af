"""nkflow.fcs.panel: loading panel files and resolving markers to channels."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from nkflow.errors import ConfigError, PanelError
from nkflow.fcs.io import read_fcs
from nkflow.fcs.panel import load_panel, normalise, panel_from_dict, resolve
from tests.unit.conftest_io import build_fcs

DATA = Path(__file__).resolve().parents[1] / "data" / "fcs"

NK_PANEL = """\
name: nk_v1
description: NK tube
markers:
  FSC-A: {scatter: true, aliases: ["FSC-A", "FS INT"]}
  SSC-A: {scatter: true, aliases: ["SSC-A", "SS INT"]}
  Time:  {time: true, aliases: ["Time", "HDR-T"]}
  CD3:   {aliases: ["CD3"]}
  CD56:  {aliases: ["CD56", "NCAM1"]}
  Ki67:  {aliases: ["Ki-67"]}
  FoxP3: {}
required: [FSC-A, SSC-A, CD3, CD56]
"""


@pytest.fixture
def nk_panel(tmp_path):
    p = tmp_path / "nk_v1.yaml"
    p.write_text(NK_PANEL)
    return load_panel(p)


def _sample(tmp_path, names, pns=None, cyt="LSRFortessa", name="t.fcs"):
    ev = np.zeros((2, len(names)))
    blob = build_fcs(names, ev, pns=pns, extra={"$CYT": cyt})
    p = tmp_path / name
    p.write_bytes(blob)
    return read_fcs(p)


@pytest.mark.parametrize(
    ("label", "key"),
    [
        ("CD56 PE", "CD56"),
        ("CD56-PE", "CD56"),
        ("BV785 - CD3", "CD3"),
        ("CD19;APC-H7;780/60@640/A", "CD19"),
        ("Ki-67", "KI67"),
        ("Ki67 FITC", "KI67"),
        ("KI67", "KI67"),
        ("FoxP3 PE", "FOXP3"),
        ("Comp-PE-Cy7-A", "PECY7A"),
        ("L/D Aqua - Viability", "VIABILITY"),
        ("CD4_APC", "CD4"),
    ],
)
def test_normalise_finds_the_marker_part(label, key):
    assert key in normalise(label)


@pytest.mark.parametrize(("label", "not_key"), [("CD45RA", "CD45"), ("CD8a", "CD8"), ("", "")])
def test_normalise_does_not_invent_markers(label, not_key):
    assert not_key not in normalise(label)


def test_load_panel_fields(nk_panel):
    assert nk_panel.name == "nk_v1"
    assert list(nk_panel.markers) == ["FSC-A", "SSC-A", "Time", "CD3", "CD56", "Ki67", "FoxP3"]
    assert nk_panel.markers["CD56"].aliases == ("CD56", "NCAM1")
    assert nk_panel.markers["FoxP3"].aliases == ("FoxP3",)
    assert nk_panel.markers["FSC-A"].scatter is True
    assert nk_panel.markers["Time"].time is True
    assert nk_panel.required == ("FSC-A", "SSC-A", "CD3", "CD56")


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ("- a\n", "x.yaml: top level: found 'list'; expected a mapping with name, markers"),
        (
            "name: nk\nmarkers: {CD3: {}}\nrequired: [CD56]\n",
            "x.yaml: field 'required': found ['CD56']; expected markers declared under "
            "'markers' (CD3)",
        ),
        (
            "name: nk\nmarkers: {CD3: {alias: [x]}}\n",
            "x.yaml: markers.CD3 keys: found ['alias']; expected only ['aliases', 'channel', "
            "'description', 'scatter', 'time']",
        ),
        (
            "name: nk\nmarkers: {CD3: {aliases: CD3}}\n",
            "x.yaml: markers.CD3.aliases: found 'CD3'; expected a list of non-empty strings",
        ),
        ("name: 'a b'\nmarkers: {CD3: {}}\n", "x.yaml: field 'name': found 'a b'; expected an id"),
        ("name: nk\nmarkers: {}\n", "x.yaml: field 'markers': found {}; expected a non-empty"),
    ],
)
def test_load_panel_errors_name_file_and_field(tmp_path, doc, message):
    p = tmp_path / "x.yaml"
    p.write_text(doc)
    with pytest.raises(ConfigError) as err:
        load_panel(p)
    assert str(err.value).startswith(str(tmp_path / message.split(":", 1)[0]) + ":")
    assert message.split(":", 1)[1] in str(err.value)


def test_resolve_by_pns_then_pnn(tmp_path, nk_panel):
    s = _sample(
        tmp_path,
        ["FSC-A", "SSC-A", "BV785-A", "PE-A", "FITC-A", "Time"],
        pns=["", "", "BV785 - CD3", "CD56 PE", "Ki-67", ""],
    )
    r = resolve(nk_panel, s)
    assert r.index_for("CD3") == 2
    assert r.index_for("CD56") == 3
    assert r.index_for("Ki67") == 4
    assert r.index_for("FSC-A") == 0
    assert r.index_for("Time") == 5
    assert r.channel_for("CD56").pnn == "PE-A"
    assert r.how["CD56"] == "$PnS 'CD56 PE'"
    assert r.how["FSC-A"] == "$PnN 'FSC-A'"
    assert r.missing == ("FoxP3",)
    assert r.missing_required == ()
    assert r.table() == [
        ("FSC-A", "", "FSC-A"),
        ("SSC-A", "", "SSC-A"),
        ("BV785-A", "BV785 - CD3", "CD3"),
        ("PE-A", "CD56 PE", "CD56"),
        ("FITC-A", "Ki-67", "Ki67"),
        ("Time", "", "Time"),
    ]


def test_marker_in_pnn_and_comp_prefix(tmp_path, nk_panel):
    s = _sample(tmp_path, ["FSC-A", "SSC-A", "Comp-CD3", "CD56"])
    r = resolve(nk_panel, s)
    assert (r.index_for("CD3"), r.index_for("CD56")) == (2, 3)


def test_missing_cd56_is_reported_not_substituted(tmp_path, nk_panel):
    s = _sample(tmp_path, ["FSC-A", "SSC-A", "PE-A", "APC-A"], pns=["", "", "CD3 PE", "CD16 APC"])
    r = resolve(nk_panel, s)
    assert r.channel_for("CD56") is None
    assert r.index_for("CD56") is None
    assert r.how["CD56"] == "missing"
    assert r.missing == ("Time", "CD56", "Ki67", "FoxP3")
    assert r.missing_required == ("CD56",)


def test_duplicate_marker_lists_both_candidates_and_the_fix(tmp_path, nk_panel):
    s = _sample(
        tmp_path,
        ["FSC-A", "SSC-A", "PE-A", "BV605-A", "APC-A"],
        pns=["", "", "CD56 PE", "CD56", "CD3"],
    )
    with pytest.raises(PanelError) as err:
        resolve(nk_panel, s)
    assert str(err.value) == (
        "t.fcs: marker CD56 of panel 'nk_v1' matches 2 channels by $PnS: 'PE-A' ($PnS "
        "'CD56 PE') and 'BV605-A' ($PnS 'CD56'); pin one in the panel file, e.g. CD56: "
        '{aliases: [...], channel: {"LSRFortessa": "PE-A"}}, or make the aliases more specific'
    )


def test_pin_disambiguates_per_instrument(tmp_path):
    pnl = panel_from_dict(
        {"name": "p", "markers": {"CD56": {"channel": {"LSRFortessa": "BV605-A"}}}},
        Path("p.yaml"),
    )
    s = _sample(tmp_path, ["PE-A", "BV605-A"], pns=["CD56 PE", "CD56"])
    r = resolve(pnl, s)
    assert r.index_for("CD56") == 1
    assert r.how["CD56"] == "pinned to $PnN 'BV605-A'"
    other = _sample(tmp_path, ["PE-A", "X"], pns=["CD56 PE", ""], cyt="Canto", name="o.fcs")
    assert resolve(pnl, other).index_for("CD56") == 0


def test_pin_to_absent_channel_is_an_error(tmp_path):
    pnl = panel_from_dict({"name": "p", "markers": {"CD56": {"channel": "BV605-A"}}}, Path("p"))
    s = _sample(tmp_path, ["PE-A"], pns=["CD56"])
    with pytest.raises(
        PanelError,
        match=re.escape(
            "panel 'p' pins marker CD56 to channel 'BV605-A' for instrument 'LSRFortessa', but "
            "t.fcs has no such $PnN; channels: PE-A"
        ),
    ):
        resolve(pnl, s)


def test_one_channel_two_markers_is_an_error(tmp_path):
    pnl = panel_from_dict(
        {"name": "p", "markers": {"CD56": {}, "NK": {"aliases": ["CD56"]}}}, Path("p")
    )
    s = _sample(tmp_path, ["PE-A"], pns=["CD56 PE"])
    with pytest.raises(
        PanelError,
        match=re.escape(
            "t.fcs: channel 'PE-A' ($PnS 'CD56 PE') matches two markers of panel 'p': CD56 and NK"
        ),
    ):
        resolve(pnl, s)


def test_undeclared_marker_lookup_is_an_error(tmp_path, nk_panel):
    r = resolve(nk_panel, _sample(tmp_path, ["FSC-A"]))
    with pytest.raises(PanelError, match="marker 'CD19' is not declared"):
        r.index_for("CD19")


def test_real_file_with_two_cd8_channels(tmp_path):
    # data1.fcs (FACSCalibur) labels FL2-H "CD8 B PE" and FL4-H "CD8 APC".
    pnl = panel_from_dict({"name": "t", "markers": {"CD4": {}, "CD8": {}}}, Path("t"))
    s = read_fcs(DATA / "data1.fcs")
    with pytest.raises(
        PanelError,
        match=re.escape(
            "data1.fcs: marker CD8 of panel 't' matches 2 channels by $PnS: 'FL2-H' ($PnS "
            "'CD8 B PE') and 'FL4-H' ($PnS 'CD8 APC')"
        ),
    ):
        resolve(pnl, s)
    pinned = panel_from_dict(
        {"name": "t", "markers": {"CD4": {}, "CD8": {"channel": {"FACSCalibur": "FL4-H"}}}},
        Path("t"),
    )
    r = resolve(pinned, s)
    assert (r.index_for("CD4"), r.index_for("CD8")) == (2, 6)
