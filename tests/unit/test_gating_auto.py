"""Data-driven thresholds: valley, GMM, control tube; loud failures and opt-in fallback."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from nkflow.gating import control_values, gate_sample, tree_from_dict
from nkflow.gating.auto import find_threshold
from nkflow.gating.tree import AutoSpec


def _bimodal(n: int = 4000, seed: int = 0) -> np.ndarray:
    # two equal normal modes at 0.2 and 0.7 (sd 0.05): by symmetry the valley and the
    # equal-posterior point are at 0.45
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal(0.2, 0.05, n // 2), rng.normal(0.7, 0.05, n // 2)])


def _unimodal(n: int = 4000, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.45, 0.1, n)


def test_valley_finds_the_midpoint() -> None:
    cut, flag = find_threshold(_bimodal(), AutoSpec(method="valley", bounds=(0.3, 0.6)))
    assert flag is None
    assert cut == pytest.approx(0.45, abs=0.02)


def test_gmm_finds_the_midpoint_and_is_reproducible() -> None:
    spec = AutoSpec(method="gmm", bounds=(0.3, 0.6), random_state=3)
    cut, flag = find_threshold(_bimodal(), spec)
    assert flag is None
    assert cut == pytest.approx(0.45, abs=0.01)
    assert find_threshold(_bimodal(), spec)[0] == cut


def test_failures_are_named() -> None:
    cut, flag = find_threshold(_unimodal(), AutoSpec(method="valley", bounds=(0.3, 0.6)))
    assert cut is None and flag is not None and flag["code"] == "no_valley"
    assert "no density valley between two modes within bounds [0.3, 0.6]" in flag["message"]
    cut, flag = find_threshold(_unimodal(), AutoSpec(method="gmm", bounds=(0.3, 0.6)))
    assert cut is None and flag is not None and flag["code"] == "degenerate_fit"
    assert "need weights >= 0.01 and D > 2" in flag["message"]
    cut, flag = find_threshold(_bimodal(), AutoSpec(method="gmm", bounds=(0.5, 0.6)))
    assert flag is not None and flag["code"] == "out_of_bounds"
    cut, flag = find_threshold(np.ones(10), AutoSpec(method="valley", bounds=(0.3, 0.6)))
    assert flag == {
        "code": "too_few_events",
        "message": "10 events in the parent population, need 50",
    }
    cut, flag = find_threshold(_bimodal(), AutoSpec(method="control", bounds=(0.3, 0.6)))
    assert flag is not None and flag["code"] == "missing_control"


def test_control_percentile() -> None:
    control = np.arange(1000) / 1000.0  # 99.5th percentile of 0..0.999 = 0.994005
    cut, flag = find_threshold(_bimodal(), AutoSpec(method="control", bounds=(0.0, 1.0)), control)
    assert flag is None and cut == pytest.approx(0.994005)


def _tree(method: str, allow: bool, default: float | None = 0.5) -> object:
    return tree_from_dict(
        {
            "name": "auto",
            "gates": [
                {
                    "id": "pos",
                    "parent": None,
                    "type": "threshold",
                    "dims": [{"marker": "X"}],
                    "method": method,
                    "bounds": [0.3, 0.6],
                    "default": default,
                    "allow_fallback": allow,
                    "random_state": 0,
                },
                {
                    "id": "child",
                    "parent": "pos",
                    "type": "rectangle",
                    "dims": [{"marker": "X", "max": 0.65}],
                },
            ],
        }
    )


def test_gate_uses_found_threshold() -> None:
    x = _bimodal()
    res = gate_sample(_tree("valley", False), x[:, None], {"X": 0})
    cut = res.thresholds["pos"]
    assert res.count("pos") == int((x >= cut).sum())
    assert res.flags == []


def test_failure_without_fallback_is_not_computed(caplog) -> None:
    x = _unimodal()
    with caplog.at_level(logging.WARNING):
        res = gate_sample(_tree("valley", False), x[:, None], {"X": 0}, tube="P01-D14/treg")
    assert res.not_computed == {
        "pos": "auto_gate_failed:pos:no_valley",
        "child": "auto_gate_failed:pos:no_valley",
    }
    assert len(res.flags) == 1 and res.flags[0]["gate"] == "pos"
    assert res.flags[0]["code"] == "no_valley"
    assert res.flags[0]["message"].startswith("gate 'pos' in tube P01-D14/treg: no density valley")
    assert res.flags[0]["message"].endswith("population not computed (allow_fallback is false)")
    assert "gate 'pos' in tube P01-D14/treg" in caplog.text


def test_failure_with_fallback_uses_default_and_flags() -> None:
    x = _unimodal()
    res = gate_sample(_tree("valley", True, 0.5), x[:, None], {"X": 0}, tube="T")
    assert res.not_computed == {}
    assert res.thresholds == {"pos": 0.5}
    assert res.count("pos") == int((x >= 0.5).sum())
    assert res.flags[0]["code"] == "no_valley_fallback"
    assert "used the declared default 0.5 (allow_fallback)" in res.flags[0]["message"]


def _control_tree(cells_dim: dict, transforms: dict | None = None):
    """cells (a rectangle on ``cells_dim``) -> foxp3_pos, a threshold at a control's 99th pct."""
    cells = {"id": "cells", "parent": None, "type": "rectangle", "dims": [cells_dim]}
    foxp3 = {
        "id": "foxp3_pos",
        "parent": "cells",
        "type": "threshold",
        "dims": [{"marker": "F"}],
        "method": "control",
        "bounds": [0.0, 2.0],
        "control_percentile": 99.0,
    }
    return tree_from_dict({"name": "fmo", "transforms": transforms or {}, "gates": [cells, foxp3]})


def test_control_tube_threshold() -> None:
    tree = _control_tree({"marker": "S", "min": 0.0})
    # control tube: F uniform 0..0.999 in cells (S >= 0); events with S < 0 are ignored
    f = np.arange(1000) / 1000.0
    fmo = np.column_stack([np.r_[np.ones(1000), -np.ones(5)], np.r_[f, np.full(5, 50.0)]])
    ctrl = control_values(tree, "foxp3_pos", fmo, {"S": 0, "F": 1})
    np.testing.assert_array_equal(ctrl, f)
    stained = np.column_stack([np.ones(4), [0.5, 0.98, 0.99, 1.5]])
    res = gate_sample(tree, stained, {"S": 0, "F": 1}, controls={"foxp3_pos": ctrl})
    assert res.thresholds["foxp3_pos"] == pytest.approx(0.98901)  # 99th pct of 0..0.999
    assert np.flatnonzero(res.membership("foxp3_pos")).tolist() == [2, 3]
    res = gate_sample(tree, stained, {"S": 0, "F": 1})
    assert res.not_computed["foxp3_pos"] == "auto_gate_failed:foxp3_pos:missing_control"


def test_control_tube_parent_gates_are_placed_on_the_control_files_range() -> None:
    """With a ``t: range`` transform the parent gate's bound is a fraction of the file's $PnR:
    control_values must pass the control tube's ranges on (it gated at the 2^18 placeholder)."""
    tree = _control_tree(
        {"marker": "S", "transform": "lin", "min": 0.5},
        {"lin": {"type": "linear", "t": "range", "a": 0}},
    )
    s = np.r_[np.full(10, 600.0), np.full(5, 100.0)]  # on a 1,000-unit scale: 10 cells pass
    f = np.r_[np.arange(10) / 10.0, np.full(5, 50.0)]
    ctrl = control_values(tree, "foxp3_pos", np.column_stack([s, f]), {"S": 0, "F": 1},
                          ranges={"S": 1000.0, "F": 1000.0})  # fmt: skip
    np.testing.assert_array_equal(ctrl, f[:10])
