"""Every FCS file in the public data folder: loaded with the right shape and names, or refused.

Reads ``$NKFLOW_PUBLIC_DATA`` (CI sets it to ``../shared/data/public``); some files there are
GPL and are read in place, never copied. Independent references: FlowIO's own channel labels,
FlowKit 1.3.2 raw events (bit-equal), and FlowIO's expected ``.npy`` arrays where they exist.
Float files that declare log amplification (:data:`FLOAT_PNE`) are the one exception: FlowKit
applies ``$PnE`` to them against FCS 3.1, so they are compared with FlowIO's stored values and
checked to differ from FlowKit by exactly that log.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pytest

from nkflow.errors import CompensationError, FcsError
from nkflow.fcs.compensation import spillover_for
from nkflow.fcs.io import read_fcs
from tests.conftest import PUBLIC_DATA_SKIP, public_data_root

pytestmark = pytest.mark.public

ROOT_ENV = public_data_root()


@pytest.fixture(scope="module")
def root() -> Path:
    if not ROOT_ENV:
        pytest.skip(PUBLIC_DATA_SKIP)
    return Path(ROOT_ENV)


# FlowIO/FlowKit reader options that read the same bytes as nkflow chose (None: FlowKit cannot
# read the file at all, e.g. the multi-data-set .lmd or an anonymised $TIMESTEP).
CYAN = "cytoflow_itn_and_quirks/Beckman Coulter - Cyan.fcs"
NONCOMPLIANT = "flowkit_fcs_misc/noncompliant/data_{}_offset_discrepancy_example.fcs"
LOG40 = "non-compliant log amplification"
LATIN1 = "TEXT segment is not valid UTF-8"
ANON_TS = "$TIMESTEP is 'xxxxxxxxx'"
FLOAT_LOG = "float_pne_ignored: "
# Float ($DATATYPE F/D) files whose $PnE declares log decades, against FCS 3.1 ("If the floating
# point data type is used ... all parameters shall be stored as linear with $PnE/0,0/"). nkflow
# keeps their stored values; FlowKit 1.3.2 (FlowIO's as_array) raises 10 to them, so their
# events are NOT bit-equal to FlowKit. test_float_pne_files_are_all_listed keeps this complete.
FLOAT_PNE = {
    "cytoflow_itn_and_quirks/itn_02.fcs": ("CD8", "CD69", "CD4", "CD3", "HLADr"),
    "cytoflow_itn_and_quirks/itn_03.fcs": ("CD8", "CD69", "CD4", "CD3", "HLADr"),
}

# path, events, channels, version, first $PnN, last $PnN, reader options, warning prefixes,
# spillover source (or 'invalid')
LOADED = [
    (CYAN, 5789, 12, "FCS3.0", "TIME", "Computed Time", {"use_header_offsets": True},
     ("DATA offsets disagree: HEADER 2284-141219 vs TEXT 2330-141265; the HEADER offsets", LOG40),
     None),
    ("cytoflow_itn_and_quirks/itn_02.fcs", 10000, 8, "FCS3.0", "FSC", "Time", {}, (FLOAT_LOG,),
     None),
    ("cytoflow_itn_and_quirks/itn_03.fcs", 10000, 8, "FCS3.0", "FSC", "Time", {}, (FLOAT_LOG,),
     None),
    *[
        (f"cytonorm_cytof_human_blood/Gates_PTLG0{p}_Unstim_Control_{k}.fcs", 1000, 55, "FCS3.0",
         "Time", "beadDist", {}, (), None)
        for p in ("21", "28", "34") for k in (1, 2)
    ],
    *[
        (f"cytopipeline_omip021_human_tcell/Donor{k}.fcs", 5000, 22, "FCS3.0", "FSC-A",
         "Original_ID", {}, (), "SPILL")
        for k in (1, 2)
    ],
    ("flowcal_fcs_quirks/Data001.fcs", 20949, 6, "FCS2.0", "FSC-H", "Time", {}, (LATIN1, LOG40),
     None),
    ("flowcal_fcs_quirks/Data002.fcs", 20000, 9, "FCS2.0", "FSC-A", "Time", {}, (LOG40,), None),
    ("flowcal_fcs_quirks/Data004.fcs", 50000, 14, "FCS3.0", "FSC-A", "Time", {}, (), "SPILL"),
    ("flowio_fcs_quirks/fcs_files/3FITC_4PE_004.fcs", 94569, 4, "FCS2.0", "FSC-H", "FL2-H", {},
     (LATIN1, LOG40), None),
    ("flowio_fcs_quirks/fcs_files/B01 KC-A-W---91-US.fcs", 1589, 14, "FCS3.1", "FSC-A", "Time",
     {}, (), "$SPILLOVER"),
    ("flowio_fcs_quirks/fcs_files/G11.fcs", 5785, 12, "FCS3.1", "Time", "VL1-W", {}, (),
     "$SPILLOVER"),
    ("flowio_fcs_quirks/fcs_files/data1.fcs", 13367, 8, "FCS2.0", "FSC-H", "Time", {},
     (LATIN1, "TEXT segment does not end", "TEXT segment has a keyword without", LOG40), None),
    ("flowio_fcs_quirks/fcs_files/variable_int_example.fcs", 2, 26, "FCS3.0", "FSC LogH", "Time",
     None, (ANON_TS,), "invalid"),
    ("flowkit_fcs_misc/100715.fcs", 65016, 16, "FCS2.0", "FSC-A", "G560-A", {}, (), "SPILL"),
    *[
        (f"flowkit_fcs_misc/4_color_beads/Compensation Controls_{c} Stained Control_{n}.fcs",
         5000, 11, "FCS3.0", "FSC-A", "Time", {}, (), "SPILL")
        for c, n in (("Blue B", "005"), ("Green A", "006"), ("Red A", "004"), ("Red B", "003"))
    ],
    ("flowkit_fcs_misc/index_sorted/index_sorted_example.fcs", 384, 13, "FCS3.0", "FSC-A",
     "Time", {}, (), "SPILL"),
    ("flowkit_fcs_misc/multi_dataset_fcs/coulter.lmd", 18110, 8, "FCS2.0", "FS Lin", "FL3 Log",
     None, ("DATA end offset 297952 is one byte past", "file holds 2 data sets"), None),
    (NONCOMPLIANT.format("start"), 2, 26, "FCS3.0", "FSC LogH", "Time", None,
     ("DATA offsets disagree: HEADER 5555-6188 vs TEXT 6081-6188; the TEXT offsets", ANON_TS),
     "invalid"),
    (NONCOMPLIANT.format("stop"), 2, 26, "FCS3.0", "FSC LogH", "Time", None,
     ("DATA offsets disagree: HEADER 6081-6944 vs TEXT 6081-6188; the TEXT offsets", ANON_TS),
     "invalid"),
    ("flowkit_fcs_misc/test_comp_example.fcs", 10703, 18, "FCS3.0", "FSC-A", "Time",
     {"ignore_offset_error": True}, ("DATA end offset 773934 is one byte past",), "SPILL"),
    ("flowkit_flowjo_wsp_synthetic/simple_diamond_example/test_data_diamond_01.fcs", 200000, 2,
     "FCS3.1", "channel_A", "channel_B", {}, (), None),
    ("flowkit_flowjo_wsp_synthetic/simple_line_example/data_set_simple_line_100.fcs", 100, 2,
     "FCS3.1", "channel_A", "channel_B", {}, (), None),
    ("gatingml2_compliance/data1.fcs", 13367, 8, "FCS2.0", "FSC-H", "Time", {},
     (LATIN1, "TEXT segment does not end", "TEXT segment has a keyword without", LOG40), None),
]  # fmt: skip

REFUSED = [
    (
        "flowcal_fcs_quirks/Data003.fcs",
        "Data003.fcs: integer data with 24-bit values ($P1B=24, channel 'TIME'); the FCS reader "
        "(FlowIO) decodes only 8, 16 and 32-bit integers. Re-export the file from the "
        "acquisition software as FCS 3.1 float data",
    ),
]

TRUTH = {
    "flowio_fcs_quirks/fcs_files/data1.fcs": "flowio_fcs_quirks/truth/data1_preprocessed.npy",
    "flowio_fcs_quirks/fcs_files/B01 KC-A-W---91-US.fcs": (
        "flowio_fcs_quirks/truth/B01 KC-A-W---91-US_preprocessed_events.npy"
    ),
}


def test_table_covers_every_fcs_file(root):
    found = {
        str(p.relative_to(root))
        for p in root.rglob("*")
        if p.suffix.lower() in (".fcs", ".lmd") and p.is_file()
    }
    listed = {row[0] for row in LOADED} | {row[0] for row in REFUSED}
    assert found == listed


@pytest.mark.parametrize(
    ("rel", "n_events", "n_channels", "version", "first", "last", "opts", "warns", "spill"),
    LOADED,
    ids=[row[0] for row in LOADED],
)
def test_public_file_loads(
    root, rel, n_events, n_channels, version, first, last, opts, warns, spill
):
    import flowio

    path = root / rel
    s = read_fcs(path)
    assert s.events.shape == (n_events, n_channels)
    assert s.version == version
    assert (s.channel_names[0], s.channel_names[-1]) == (first, last)
    assert len(s.warnings) == len(warns)
    for got, prefix in zip(s.warnings, warns, strict=True):
        assert got.startswith(prefix)

    # channel names and events against FlowIO itself, with the tolerance nkflow recorded
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if rel.endswith(".lmd"):
            fd = flowio.read_multiple_data_sets(str(path), ignore_offset_error=True)[0]
        else:
            fd = flowio.FlowData(str(path), **(opts or {"ignore_offset_discrepancy": True}))
    assert s.channel_names == tuple(fd.pnn_labels)
    if opts is None:  # FlowKit cannot open it; FlowIO with a blank $TIMESTEP is the reference
        fd.text.pop("timestep", None)
        assert np.array_equal(s.events, fd.as_array(preprocess=True))
    else:
        import flowkit

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = flowkit.Sample(str(path), **opts).get_events(source="raw")
        if rel in FLOAT_PNE:  # FlowKit applies $PnE to float data; see test_float_pne_file
            assert not np.array_equal(s.events, ref)
        else:
            assert np.array_equal(s.events, ref)

    if spill == "invalid":
        with pytest.raises(CompensationError, match="names channel\\(s\\) \\['x+'\\]"):
            spillover_for(s)
    else:
        got = spillover_for(s)
        assert (got.source if got else None) == spill


def test_float_pne_files_are_all_listed(root):
    from nkflow.fcs.io import read_fcs_metadata

    found = {}
    for p in sorted(root.rglob("*")):
        if p.suffix.lower() not in (".fcs", ".lmd") or not p.is_file():
            continue
        try:
            h = read_fcs_metadata(p)
        except FcsError:
            continue
        logs = tuple(c.pnn for c in h.channels if c.pne[0] > 0)
        if h.keywords.get("$DATATYPE", "").upper() in ("F", "D") and logs:
            found[str(p.relative_to(root))] = logs
    assert found == FLOAT_PNE


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("rel", sorted(FLOAT_PNE))
def test_float_pne_file(root, rel, dtype):
    """FCS 3.1, $PnE: "If the floating point data type is used (either $DATATYPE/F/ or
    $DATATYPE/D/), then all parameters shall be stored as linear with $PnE/0,0/".

    These BD FACSCanto float files declare $PnE 4,0 on the fluorescence channels. nkflow's
    events are FlowIO's stored floats (``as_array(preprocess=False)``; the files have no
    $TIMESTEP and no $PnG, so nothing else applies), with no RuntimeWarning (FlowKit's log
    overflowed float32 in ``nkflow inspect``) and the tolerance recorded. FlowKit's raw events
    differ from them by exactly ``10 ** (4 * x / $PnR)`` on those channels and nowhere else.
    """
    import flowio
    import flowkit

    path = root / rel
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = read_fcs(path, dtype=dtype)
    assert np.all(np.isfinite(s.events))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fd = flowio.FlowData(str(path))
        ref = flowkit.Sample(str(path)).get_events(source="raw")
    assert "timestep" not in fd.text and not any(f"p{i}g" in fd.text for i in range(1, 9))
    stored = fd.as_array(preprocess=False)
    np.testing.assert_array_equal(s.events, stored.astype(dtype))

    logs = [s.channel_names.index(n) for n in FLOAT_PNE[rel]]
    assert [s.channels[i].pne for i in logs] == [(4.0, 0.0)] * len(logs)
    assert [s.channels[i].pnr for i in logs] == [1024.0] * len(logs)
    assert s.warnings == (
        f"float_pne_ignored: {path.name} stores $DATATYPE F (floating point) data but declares "
        "log amplification "
        + ", ".join(f"$P{i + 1}E=4,0 ({s.channel_names[i]})" for i in logs)
        + "; FCS 3.1 ($PnE): when $DATATYPE is F or D, all parameters are stored as linear and "
        "$PnE shall be 0,0. No log amplification was applied: the stored values were kept linear",
    )
    # the exclusion from the FlowKit equality hides nothing: FlowKit = 10 ** (4 x / 1024) there
    linear = [i for i in range(len(s.channels)) if i not in logs]
    assert np.array_equal(ref[:, linear], stored[:, linear])
    np.testing.assert_allclose(ref[:, logs], 10.0 ** (4 * stored[:, logs] / 1024), rtol=1e-14)
    assert ref[:, logs].max() > 1e13 and stored[:, logs].max() <= 10_000


@pytest.mark.parametrize(("rel", "message"), REFUSED, ids=[r[0] for r in REFUSED])
def test_public_file_refused(root, rel, message):
    with pytest.raises(FcsError, match=re.escape(message)):
        read_fcs(root / rel)


@pytest.mark.parametrize(("rel", "truth"), sorted(TRUTH.items()))
def test_flowio_expected_arrays(root, rel, truth):
    expected = np.load(root / truth)
    got = read_fcs(root / rel).events
    assert got.shape == expected.shape
    # FlowIO's truth was written by an older FlowIO whose log scaling differs in the last bit
    np.testing.assert_allclose(got, expected, rtol=2e-15, atol=0)


def test_100715_equals_flowkit_raw(root):
    import flowkit

    path = root / "flowkit_fcs_misc/100715.fcs"
    assert np.array_equal(read_fcs(path).events, flowkit.Sample(str(path)).get_events("raw"))


def test_cyan_header_offsets_keep_event_counter_in_its_column(root):
    # Evidence for choosing HEADER offsets: 'Event Count' must count up by one per event.
    s = read_fcs(root / CYAN)
    counter = s.events[:, s.channel_names.index("Event Count")]
    assert np.all(np.diff(counter) == 1)
    assert (counter[0], counter[-1]) == (2.0, 5790.0)


def test_omip021_markers_resolve(root):
    from nkflow.fcs.panel import panel_from_dict, resolve

    pnl = panel_from_dict(
        {
            "name": "omip021",
            "markers": {
                "CD3": {},
                "CD4": {},
                "CD8b": {},
                "CD45RA": {},
                "Viability": {},
                "CD56": {},
            },
            "required": ["CD3", "CD56"],
        },
        Path("omip021.yaml"),
    )
    r = resolve(pnl, read_fcs(root / "cytopipeline_omip021_human_tcell/Donor1.fcs"))
    assert r.channel_for("CD3").pnn == "670/30Violet-A"
    assert r.channel_for("CD4").pnn == "780/60Red-A"
    assert r.channel_for("CD8b").pnn == "670/14Red-A"
    assert r.channel_for("CD45RA").pnn == "710/50Blue-A"
    assert r.channel_for("Viability").pnn == "525/50Violet-A"
    assert r.missing_required == ("CD56",)


def test_lost_events_of_public_files(root):
    """$LOST/$ABRT (FCS 3.1) in the public files: the CyAn and the Attune write $LOST 0 (no
    event lost), no file writes $ABRT; every other file is "not assessed"."""
    from nkflow.fcs.io import read_fcs_metadata
    from nkflow.qc import QcConfig, events_lost_check

    found = {}
    for rel in sorted(row[0] for row in LOADED):
        h = read_fcs_metadata(root / rel)
        c = events_lost_check(h.keywords, int(h.keywords["$TOT"]), QcConfig.from_dict(None))
        found[rel] = (c.reason_code, c.value)
    with_lost = {k: v for k, v in found.items() if v[0] != "events_lost_not_assessed"}
    assert with_lost == {CYAN: ("ok", 0.0), "flowio_fcs_quirks/fcs_files/G11.fcs": ("ok", 0.0)}
