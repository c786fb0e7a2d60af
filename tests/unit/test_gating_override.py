"""Gate overrides in the gating engine: applied where a boundary is fixed for the tube, the fit
recorded beside them, followers (same_as) and descendants on the corrected boundary."""

from __future__ import annotations

import numpy as np
import pytest

from nkflow import qc
from nkflow.errors import ConfigError, GatingError, ReviewError
from nkflow.gating import gate_sample, tree_from_dict
from nkflow.gating import override_files as ovmod
from nkflow.gating.override import GateOverride, check_override

TREE = {
    "name": "t",
    "gates": [
        {
            "id": "a",
            "parent": None,
            "type": "rectangle",
            "dims": [{"marker": "X", "min": {"fit": "valley", "bounds": [0.2, 0.8]}}],
        },
        {
            "id": "b",
            "parent": "a",
            "type": "rectangle",
            "dims": [{"marker": "Y", "min": {"fit": "valley", "bounds": [0.2, 0.8]}}],
        },
        {
            "id": "c",
            "parent": None,
            "type": "rectangle",
            "dims": [{"marker": "X", "max": {"same_as": "a"}}],
        },
        {"id": "d", "parent": None, "type": "rectangle", "dims": [{"marker": "Y", "min": 0.5}]},
        {"id": "e", "parent": None, "type": "ellipse", "dims": [{"marker": "X"}, {"marker": "Y"}],
         "mean": [0.5, 0.5], "covariance": [[0.01, 0], [0, 0.01]], "distance_square": 1.0},
    ],
}  # fmt: skip
MI = {"X": 0, "Y": 1}


def _events(seed: int = 0, bimodal_x: bool = True) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = 20000
    x = (
        np.r_[rng.normal(0.3, 0.05, n // 2), rng.normal(0.7, 0.05, n // 2)]
        if bimodal_x
        else rng.normal(0.3, 0.05, n)
    )
    y = np.r_[rng.normal(0.3, 0.05, n // 4), rng.normal(0.7, 0.05, 3 * n // 4)]
    return np.c_[x, rng.permutation(y)]


def _ov(**kw) -> GateOverride:
    return GateOverride(source="o.yaml", info={"author": "alice", "reason": "r"}, **kw)


def test_an_override_moves_the_boundary_and_everything_that_rests_on_it():
    ev = _events()
    tree = tree_from_dict(TREE, source="t.yaml")
    base = gate_sample(tree, ev, MI)
    fitted = next(f["value"] for f in base.fits if f["gate"] == "a")
    assert 0.4 < fitted < 0.6
    ov = _ov(gate="a", bounds={("X", "min"): 0.65}, old_bounds={("X", "min"): fitted})
    res = gate_sample(tree, ev, MI, overrides={"a": ov})
    assert res.count("a") == int(np.sum(ev[:, 0] >= 0.65)) < base.count("a")
    # a bound declared the same as a's follows the override, and b is fitted on the new parent
    assert res.count("c") == int(np.sum(ev[:, 0] < 0.65))
    in_a = ev[:, 0] >= 0.65
    b_cut = next(f["value"] for f in res.fits if f["gate"] == "b")
    assert res.count("b") == int(np.sum(in_a & (ev[:, 1] >= b_cut)))
    rec = next(f for f in res.fits if f["gate"] == "a")
    assert rec["method"] == "override" and rec["value"] == 0.65
    assert rec["stats"]["fitted"] == pytest.approx(fitted)
    assert rec["stats"]["author"] == "alice"
    assert res.flags == []  # made on what the fit gives today: not stale
    assert res.tree.gate("a").dims[0].min == 0.65
    table = res.counts_table(denominator="a")
    assert table.set_index("population").loc["a", "boundary"] == "X min 0.65 (override)"
    check = next(
        c for c in qc.gate_fit_checks(res.fits, qc.QcConfig.from_dict(None)) if c.check == "fit:a.X"
    )
    assert check.reason_code == "gate_override" and check.status == "PASS"
    assert "set by alice" in check.message and "the fit gave" in check.message


def test_an_override_on_a_declared_boundary_replaces_it():
    ev = _events()
    tree = tree_from_dict(TREE, source="t.yaml")
    res = gate_sample(tree, ev, MI, overrides={"d": _ov(gate="d", bounds={("Y", "min"): 0.72})})
    assert res.count("d") == int(np.sum(ev[:, 1] >= 0.72))
    rec = next(f for f in res.fits if f["gate"] == "d")
    assert rec["stats"]["fitted"] == 0.5  # the declared value, recorded beside the override


def test_a_failed_fit_under_an_override_is_not_a_failure():
    ev = _events(bimodal_x=False)  # one X mode: no valley for a
    tree = tree_from_dict(TREE, source="t.yaml")
    assert "a" in gate_sample(tree, ev, MI).not_computed
    res = gate_sample(tree, ev, MI, overrides={"a": _ov(gate="a", bounds={("X", "min"): 0.4})})
    assert "a" not in res.not_computed and res.count("a") == int(np.sum(ev[:, 0] >= 0.4))
    rec = next(f for f in res.fits if f["gate"] == "a")
    assert rec["stats"]["fitted"] is None and rec["stats"]["fit_failed"].startswith("no_valley")


def test_an_override_whose_fit_moved_is_flagged_stale():
    ev = _events()
    tree = tree_from_dict(TREE, source="t.yaml")
    ov = _ov(gate="a", bounds={("X", "min"): 0.65}, old_bounds={("X", "min"): 0.31})
    res = gate_sample(tree, ev, MI, overrides={"a": ov}, tube="S1/nk")
    assert [(f["code"], f["where"]) for f in res.flags] == [("override_stale", "a.X")]
    fitted = next(f["stats"]["fitted"] for f in res.fits if f["gate"] == "a")
    assert f"was made on 0.31 but the tube now gives {fitted:.4g}:" in res.flags[0]["message"]
    checks = qc.gate_flag_checks(res.flags, qc.QcConfig.from_dict(None))
    assert checks[0].reason_code == "gate_override_stale:a.X" and checks[0].status == "WARN"


@pytest.mark.parametrize(
    ("ov", "message"),
    [
        (GateOverride(gate="zz", bounds={("X", "min"): 1}), "gate 'zz' is not in gate tree 't'"),
        (GateOverride(gate="a", bounds={("Q", "min"): 1}), "marker 'Q' is not a dimension"),
        (GateOverride(gate="a", bounds={("X", "max"): 1}), "X has no max bound in the tree"),
        (GateOverride(gate="e", bounds={("X", "min"): 1}), "is a ellipse gate; only rectangle"),
        (GateOverride(gate="a"), "sets no boundary"),
        (GateOverride(gate="a", vertices=((0, 0), (1, 1), (1, 0))), "'vertices' given for a rect"),
    ],
)
def test_an_override_the_tree_cannot_take_is_refused(ov, message):
    with pytest.raises(GatingError, match=message):
        check_override(tree_from_dict(TREE, source="t.yaml"), ov)


def _same(a, b) -> None:
    import pandas as pd

    pd.testing.assert_frame_equal(a.counts_table(denominator="a"), b.counts_table(denominator="a"))
    assert (a.fits, a.flags, a.not_computed) == (b.fits, b.flags, b.not_computed)
    assert a.tree == b.tree
    for p in a.members:
        assert np.array_equal(a.members[p], b.members[p]), p


@pytest.mark.parametrize("bimodal_x", [True, False])
def test_reusing_a_previous_result_gives_exactly_a_full_evaluation(bimodal_x):
    ev = _events(bimodal_x=bimodal_x)
    tree = tree_from_dict(TREE, source="t.yaml")
    steps = [
        {},
        {"b": _ov(gate="b", bounds={("Y", "min"): 0.55})},
        {"b": _ov(gate="b", bounds={("Y", "min"): 0.6})},
        {"a": _ov(gate="a", bounds={("X", "min"): 0.62}), "b": _ov(gate="b", bounds={("Y", "min"): 0.6})},
        {"d": _ov(gate="d", bounds={("Y", "min"): 0.4})},
    ]  # fmt: skip
    prev = None
    for ovs in steps:
        full = gate_sample(tree, ev, MI, overrides=ovs)
        fast = gate_sample(tree, ev, MI, overrides=ovs, reuse=prev)
        _same(full, fast)
        prev = fast
    # a result of another tube is never reused
    other = gate_sample(tree, _events(seed=5), MI, reuse=prev)
    _same(other, gate_sample(tree, _events(seed=5), MI))


# ----------------------------------------------------------------------------- files


def _doc(**kw):
    doc = {
        "sample_id": "S1",
        "tube": "nk",
        "gate": "a",
        "bounds": [{"marker": "X", "side": "min", "old": 0.5, "new": 0.6}],
        "author": "alice",
        "time_utc": "2025-01-01T00:00:00Z",
        "reason": "moved to the valley seen by eye",
    }
    return {**doc, **kw}


def test_override_files_round_trip_and_refuse_a_concurrent_save(tmp_path):
    path, sha = ovmod.write_override(tmp_path, _doc(), expected_sha256=None)
    assert path == tmp_path / "S1" / "nk" / "a.yaml"
    assert ovmod.tube_files(tmp_path, "S1", "nk") == [path]
    ov = ovmod.read_override(path)
    assert ov.bounds == {("X", "min"): 0.6} and ov.old_bounds == {("X", "min"): 0.5}
    assert ov.info["sha256"] == sha and ov.info["reason"] == "moved to the valley seen by eye"
    # a second tab that opened the tube before this save: refused, file unchanged
    with pytest.raises(ReviewError, match="changed since you opened it"):
        ovmod.write_override(tmp_path, _doc(reason="other tab"), expected_sha256=None)
    assert ovmod.file_sha256(path) == sha
    _, sha2 = ovmod.write_override(tmp_path, _doc(reason="on top of it"), expected_sha256=sha)
    assert sha2 != sha


@pytest.mark.parametrize(
    ("doc", "error", "message"),
    [
        (_doc(reason="  "), ReviewError, "a reason is mandatory"),
        (_doc(sample_id="../x"), ReviewError, "sample_id '../x' is not a valid identifier"),
        (_doc(gate="a/b"), ReviewError, "gate 'a/b' is not a valid identifier"),
        (_doc(bounds=[{"marker": "X", "side": "up", "new": 1}]), ConfigError, "side"),
    ],
)
def test_bad_override_is_refused_and_nothing_is_written(tmp_path, doc, error, message):
    with pytest.raises(error, match=message):
        ovmod.write_override(tmp_path, doc, expected_sha256=None)
    assert not list(tmp_path.rglob("*.yaml"))


def test_an_override_filed_under_another_tube_is_refused(tmp_path):
    path, _ = ovmod.write_override(tmp_path, _doc(), expected_sha256=None)
    other = tmp_path / "S2" / "nk" / "a.yaml"
    other.parent.mkdir(parents=True)
    other.write_bytes(path.read_bytes())
    with pytest.raises(ConfigError, match="override for S1/nk/a is filed under S2/nk/a"):
        ovmod.read_override(other)
