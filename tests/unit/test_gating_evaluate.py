"""gate_sample on hand-built events with known answers; boundaries exact against FlowKit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nkflow.errors import GatingError
from nkflow.fcs.transforms import LogicleTransform
from nkflow.gating import gate_sample, load_tree, to_flowkit, tree_from_dict

FIX = Path(__file__).parent / "gating_fixtures"
LOGICLE = LogicleTransform(t=262144, w=0.5, m=4.5, a=0)
# raw value whose logicle is 0.5 (the c_pos threshold), to within the inverse's accuracy
C_THR = float(LOGICLE.inverse(np.array([0.5]))[0])

#   A,  B,      C          cells  c_pos  quadrant   round
EVENTS = np.array(
    [
        [50, 50, 0.0],  # 1  yes    no     hi/hi      in (centre)
        [20, 20, 10000.0],  # 2  yes    yes    lo/lo      out
        [80, 80, 10000.0],  # 3  yes    yes    hi/hi      out
        [5, 50, 10000.0],  # 4  no (A = 0.05 < 0.1)      out
        [50, 65, 0.0],  # 5  yes    no     hi/hi      in: 15^2/400 = 0.5625
        [50, 49.999, 0.0],  # 6  yes    no     hi/lo      in
        [60, 30, 0.0],  # 7  yes    no     hi/lo      out: 10^2/100 + 20^2/400 = 2
    ]
)
MI = {"A": 0, "B": 1, "C": 2}


@pytest.fixture(scope="module")
def tiny():
    return load_tree(FIX / "tiny.yaml")


def _members(res, pop):
    return np.flatnonzero(res.membership(pop)).tolist()


def test_known_memberships(tiny) -> None:
    res = gate_sample(tiny, EVENTS, MI)
    assert _members(res, "cells") == [0, 1, 2, 4, 5, 6]
    assert _members(res, "c_pos") == [1, 2]
    assert _members(res, "a_hi_b_hi") == [0, 2, 4]
    assert _members(res, "a_lo_b_lo") == [1]
    assert _members(res, "a_hi_b_lo") == [5, 6]
    assert _members(res, "a_lo_b_hi") == []
    assert _members(res, "c_pos_and_a_hi") == [2]
    assert _members(res, "not_c_pos") == [0, 4, 5, 6]  # NOT within the parent 'cells'
    assert _members(res, "round") == [0, 4, 5]
    assert res.count("cells") == 6
    assert res.not_computed == {} and res.flags == []


def test_rectangle_is_half_open() -> None:
    tree = tree_from_dict(
        {
            "name": "r",
            "gates": [
                {
                    "id": "r",
                    "parent": None,
                    "type": "rectangle",
                    "dims": [{"marker": "A", "min": 1.0, "max": 2.0}],
                }
            ],
        }
    )
    res = gate_sample(tree, np.array([[0.999], [1.0], [1.5], [2.0], [np.nan]]), {"A": 0})
    assert _members(res, "r") == [1, 2]  # min <= x < max, NaN never inside


def test_keep_mask_removes_events_everywhere(tiny) -> None:
    keep = np.ones(len(EVENTS), dtype=bool)
    keep[2] = False
    res = gate_sample(tiny, EVENTS, MI, keep=keep)
    assert _members(res, "cells") == [0, 1, 4, 5, 6]
    assert _members(res, "c_pos_and_a_hi") == []
    assert _members(res, "round") == [0, 4, 5]
    with pytest.raises(GatingError, match=r"keep mask has shape \(3,\), expected \(7,\)"):
        gate_sample(tiny, EVENTS, MI, keep=np.ones(3, dtype=bool))


def test_missing_marker_not_computed_with_descendants(tiny) -> None:
    res = gate_sample(tiny, EVENTS, {"A": 0, "B": 1})
    assert res.not_computed == {
        "c_pos": "missing_marker:C",
        "c_pos_and_a_hi": "missing_marker:C",
        "not_c_pos": "missing_marker:C",
    }
    assert res.count("a_hi_b_hi") == 3
    assert res.count("c_pos") is None
    with pytest.raises(GatingError, match=r"'c_pos' was not computed \(missing_marker:C\)"):
        res.membership("c_pos")
    table = res.counts_table(denominator="cells")
    row = table.set_index("population").loc["c_pos"]
    assert row["status"] == "not_computed" and row["reason"] == "missing_marker:C"
    assert row.isna()[["events", "parent_events", "pct_of_parent", "pct_of_lymphocytes"]].all()


def test_counts_table(tiny) -> None:
    t = gate_sample(tiny, EVENTS, MI).counts_table(denominator="cells").set_index("population")
    assert list(t.columns) == [
        "parent",
        "events",
        "parent_events",
        "pct_of_parent",
        "pct_of_lymphocytes",
        "status",
        "reason",
        "boundary",
    ]
    assert set(t["boundary"]) == {""}  # fixed gates: nothing fitted
    assert t.loc["cells", "parent"] == "" and t.loc["cells", "parent_events"] == 7
    assert t.loc["c_pos", "events"] == 2 and t.loc["c_pos", "parent_events"] == 6
    assert t.loc["c_pos", "pct_of_parent"] == pytest.approx(100 * 2 / 6)
    assert t.loc["c_pos", "pct_of_lymphocytes"] == pytest.approx(100 * 2 / 6)
    assert np.isnan(t.loc["round", "pct_of_lymphocytes"])  # not under the denominator
    assert (t["status"] == "ok").all()


def test_compensation_only_when_declared() -> None:
    # dye 1 spills 10 % into detector 2: true (1000, 500) is observed as (1000, 600)
    spill = np.array([[1.0, 0.1], [0.0, 1.0]])
    ev = np.array([[1000.0, 500.0]]) @ spill
    doc = {
        "name": "c",
        "gates": [
            {
                "id": "hi2",
                "parent": None,
                "type": "rectangle",
                "dims": [{"marker": "D2", "compensated": True, "min": 550.0}],
            }
        ],
    }
    comp = tree_from_dict(doc)
    doc["gates"][0]["dims"][0]["compensated"] = False
    raw = tree_from_dict(doc)
    mi = {"D1": 0, "D2": 1}
    assert gate_sample(comp, ev, mi, spill=([0, 1], spill)).count("hi2") == 0  # 500 < 550
    assert gate_sample(raw, ev, mi, spill=([0, 1], spill)).count("hi2") == 1  # 600 >= 550
    assert gate_sample(comp, ev, mi, spill=None).count("hi2") == 1  # no spillover: raw values


def test_named_spillover_needs_channel_names() -> None:
    class Spill:
        channels = ("FL1", "FL2")
        matrix = np.eye(2)

    doc = {
        "name": "c",
        "gates": [
            {
                "id": "x",
                "parent": None,
                "type": "rectangle",
                "dims": [{"marker": "CD4", "min": 0.0}],
            }
        ],
    }
    tree = tree_from_dict(doc)
    ev = np.zeros((2, 2))
    with pytest.raises(GatingError, match=r"pass channel_names=sample.channel_names"):
        gate_sample(tree, ev, {"CD4": 1}, spill=Spill())
    with pytest.raises(GatingError, match=r"spillover channel\(s\) \['FL2'\] are not among"):
        gate_sample(tree, ev, {"CD4": 1}, spill=Spill(), channel_names=["FL1", "FL3"])
    res = gate_sample(tree, ev, {"CD4": 1}, spill=Spill(), channel_names=["FL1", "FL2"])
    assert res.count("x") == 2


def test_events_must_be_2d(tiny) -> None:
    with pytest.raises(GatingError, match=r"events must be a 2-D \(n_events, n_channels\) array"):
        gate_sample(tiny, np.zeros(5), MI)


def _boundary_values(thresholds: list[float]) -> np.ndarray:
    """Raw values at, and a few ulps around, each transformed threshold."""
    out = []
    for y in thresholds:
        x = float(LOGICLE.inverse(np.array([y]))[0])
        v = x
        for _ in range(6):
            v = np.nextafter(v, -np.inf)
        for _ in range(13):
            out.append(v)
            v = np.nextafter(v, np.inf)
    return np.array(out)


def test_threshold_boundaries_match_flowkit_per_event() -> None:
    import flowkit as fk

    lims = [0.3, 0.42, 0.45, 0.64]
    doc = {
        "name": "b",
        "transforms": {"logicle": {"type": "logicle", "t": 262144, "w": 0.5, "m": 4.5, "a": 0}},
        "gates": [
            {
                "id": "lo",
                "parent": None,
                "type": "rectangle",
                "dims": [{"marker": "X", "transform": "logicle", "min": 0.42, "max": 0.64}],
            },
            {
                "id": "hi",
                "parent": None,
                "type": "rectangle",
                "dims": [{"marker": "X", "transform": "logicle", "min": 0.45}],
            },
            {
                "id": "q",
                "parent": None,
                "type": "quadrant",
                "dims": [
                    {"marker": "X", "transform": "logicle", "divider": 0.3},
                    {"marker": "Y", "transform": "logicle", "divider": 0.3},
                ],
                "quadrants": {"pp": ["hi", "hi"], "nn": ["lo", "lo"]},
            },
        ],
    }
    tree = tree_from_dict(doc)
    x = _boundary_values(lims)
    rng = np.random.default_rng(1)
    x = np.concatenate([x, LOGICLE.inverse(rng.uniform(-0.1, 1.0, 2000)), [0.0, -1e6, np.nan]])
    ev = np.column_stack([x, x[::-1].copy()])
    gs = to_flowkit(tree)
    # (1) FlowKit's own gate code on FlowKit-transformed values (the ulp-level boundaries)
    import pandas as pd
    from flowkit import transforms as fkt

    fk_logicle = fkt.LogicleTransform(param_t=262144, param_w=0.5, param_m=4.5, param_a=0)
    df = pd.DataFrame(
        {"X": fk_logicle.apply(ev[:, [0]]).ravel(), "Y": fk_logicle.apply(ev[:, [1]]).ravel()}
    )
    ours = gate_sample(tree, ev, {"X": 0, "Y": 1})
    for gid in ("lo", "hi"):
        ref = gs.get_gate(gid).apply(df)
        np.testing.assert_array_equal(ours.membership(gid), ref, err_msg=gid)
    quads = gs.get_gate("q").apply(df)
    for pop in ("pp", "nn"):
        np.testing.assert_array_equal(ours.membership(pop), quads[pop], err_msg=pop)
    # (2) FlowKit end to end (its in-memory Sample stores float32, so compare on its raw events)
    sample = fk.Sample(ev, channel_labels=["X", "Y"], sample_id="boundary")
    raw = sample.get_events(source="raw")
    ours = gate_sample(tree, raw, {"X": 0, "Y": 1})
    theirs = gs.gate_sample(sample)
    for pop in ("lo", "hi", "pp", "nn"):
        np.testing.assert_array_equal(
            ours.membership(pop), theirs.get_gate_membership(pop), err_msg=pop
        )
    # and the boundary values really straddle the thresholds
    y = LOGICLE.apply(_boundary_values([0.45]))
    assert (y < 0.45).any() and (y >= 0.45).any()
