"""Gating-ML export/import: exact YAML round trip; the standard part alone gives the same events."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from nkflow.errors import ConfigError
from nkflow.gating import (
    from_gatingml,
    gate_sample,
    load_tree,
    to_flowkit,
    to_gatingml,
    tree_from_dict,
)

ROOT = Path(__file__).resolve().parents[2]
FIX = Path(__file__).parent / "gating_fixtures"

TREES = [
    FIX / "tiny.yaml",
    ROOT / "config" / "gating" / "nk_v1.yaml",
    ROOT / "config" / "gating" / "treg_v1.yaml",
]


@pytest.mark.parametrize("path", TREES, ids=lambda p: p.stem)
def test_yaml_gatingml_yaml_round_trip(path: Path, tmp_path: Path) -> None:
    tree = load_tree(path)
    out = tmp_path / "t.xml"
    to_gatingml(tree, out)
    again = from_gatingml(out)
    assert again.gates == tree.gates
    assert again.transforms == tree.transforms
    assert again.populations == tree.populations


def _strip_custom(xml: str) -> str:
    return re.sub(r"<data-type:custom_info>.*?</data-type:custom_info>", "", xml, flags=re.S)


def test_standard_gatingml_alone_gives_same_events(tmp_path: Path) -> None:
    tree = load_tree(FIX / "tiny.yaml")
    out = tmp_path / "t.xml"
    to_gatingml(tree, out)
    plain = tmp_path / "plain.xml"
    plain.write_text(_strip_custom(out.read_text()))
    imported = from_gatingml(plain)  # through FlowKit's parser, as any other tool would
    assert set(imported.populations) == set(tree.populations)
    rng = np.random.default_rng(0)
    ev = np.column_stack(
        [rng.uniform(0, 100, 5000), rng.uniform(0, 100, 5000), rng.uniform(-100, 50000, 5000)]
    )
    mi = {"A": 0, "B": 1, "C": 2}
    a, b = gate_sample(tree, ev, mi), gate_sample(imported, ev, mi)
    for pop in tree.populations:
        np.testing.assert_array_equal(a.membership(pop), b.membership(pop), err_msg=pop)
    assert a.count("c_pos") > 0 and a.count("round") > 0


def test_cofactor_arcsinh_exports_as_equivalent_fasinh(tmp_path: Path) -> None:
    tree = tree_from_dict(
        {
            "name": "a",
            "transforms": {"as": {"type": "arcsinh", "cofactor": 150}},
            "gates": [
                {
                    "id": "pos",
                    "parent": None,
                    "type": "rectangle",
                    "dims": [{"marker": "X", "transform": "as", "min": 1.0}],
                }
            ],
        }
    )
    out = tmp_path / "a.xml"
    to_gatingml(tree, out)
    plain = tmp_path / "plain.xml"
    plain.write_text(_strip_custom(out.read_text()))
    imported = from_gatingml(plain)
    x = np.array([[100.0], [150 * np.sinh(1.0) * 0.999], [150 * np.sinh(1.0) * 1.001], [1e4]])
    assert gate_sample(imported, x, {"X": 0}).membership("pos").tolist() == [
        False,
        False,
        True,
        True,
    ]


def test_data_driven_gate_needs_threshold_for_flowkit() -> None:
    tree = tree_from_dict(
        {
            "name": "d",
            "gates": [
                {
                    "id": "t",
                    "parent": None,
                    "type": "threshold",
                    "dims": [{"marker": "X"}],
                    "method": "valley",
                    "bounds": [0, 1],
                }
            ],
        }
    )
    from nkflow.errors import GatingError

    with pytest.raises(GatingError, match=r"gate 't' is data-driven and has no threshold"):
        to_flowkit(tree)
    gs = to_flowkit(tree, thresholds={"t": 0.5})
    assert gs.get_gate("t").dimensions[0].min == 0.5


def test_unreadable_gatingml(tmp_path: Path) -> None:
    bad = tmp_path / "bad.xml"
    bad.write_text("<not-closed>")
    with pytest.raises(ConfigError, match=r"bad.xml: cannot read Gating-ML"):
        from_gatingml(bad)
