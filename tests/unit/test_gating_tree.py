"""Gate-tree YAML: loading, validation messages, round trip, shipped trees."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from nkflow.errors import ConfigError, GatingError
from nkflow.gating import load_tree, tree_from_dict, tree_to_dict

ROOT = Path(__file__).resolve().parents[2]
FIX = Path(__file__).parent / "gating_fixtures"


def test_tiny_tree_populations_and_markers() -> None:
    t = load_tree(FIX / "tiny.yaml")
    assert t.populations == (
        "cells",
        "c_pos",
        "a_hi_b_hi",
        "a_lo_b_hi",
        "a_hi_b_lo",
        "a_lo_b_lo",
        "c_pos_and_a_hi",
        "not_c_pos",
        "round",
    )
    assert t.markers() == ("A", "B", "C")
    assert t.population("a_lo_b_hi").parent == "cells"
    assert t.population("a_lo_b_hi").gate == "quads"
    assert t.children("cells")[:2] == ("c_pos", "a_hi_b_hi")
    q = t.gate("quads")
    assert dict(q.quadrants)["a_lo_b_hi"] == ((None, 0.5), (0.5, None))
    with pytest.raises(GatingError, match=r"population 'nkx' is not defined in gate tree 'tiny'"):
        t.population("nkx")


def test_round_trip_is_identity() -> None:
    t = load_tree(FIX / "tiny.yaml")
    d = tree_to_dict(t)
    again = tree_from_dict(yaml.safe_load(yaml.safe_dump(d, sort_keys=False)), source=t.source)
    assert again == t
    assert tree_to_dict(again) == d


@pytest.mark.parametrize("name", ["nk_v1", "treg_v1"])
def test_shipped_trees_load(name: str) -> None:
    t = load_tree(ROOT / "config" / "gating" / f"{name}.yaml")
    pops = t.populations
    assert pops.index("singlets") < pops.index("lymphocytes") < pops.index("live")
    wanted = {
        "nk_v1": {"nk", "nk_cd56bright", "nk_cd56dim", "nkt_like"},
        "treg_v1": {"cd3", "cd4", "treg", "treg_ki67"},
    }[name]
    assert wanted <= set(t.populations)
    # fluorescence compensated, scatter not
    live = t.gate("live").dims[0]
    assert live.compensation == "FCS"
    assert t.gate("singlets").dims[0].compensation is None


def _tree(*gates: dict, transforms: dict | None = None) -> dict:
    return {
        "name": "t",
        "transforms": transforms if transforms is not None else {"lin": {"type": "linear", "t": 1}},
        "gates": list(gates),
    }


RECT = {
    "id": "r",
    "parent": None,
    "type": "rectangle",
    "dims": [{"marker": "A", "transform": "lin", "min": 0.2}],
}


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ([], r"f.yaml: a gate tree must be a mapping with 'name' and 'gates'"),
        ({"name": "t", "gates": [], "extra": 1}, r"f.yaml: unknown top-level key\(s\) \['extra'\]"),
        (
            _tree({**RECT, "parent": "nope"}),
            r"f.yaml: gate 'r': parent 'nope' is not a population defined earlier in the file",
        ),
        (_tree(RECT, RECT), r"gate 'r': population id 'r' is already defined by gate 'r'"),
        (_tree({**RECT, "type": "oval"}), r"gate 'r': unknown type 'oval'; expected one of"),
        (
            _tree({**RECT, "dims": [{"marker": "A", "transform": "logicle", "min": 0.2}]}),
            r"gate 'r': dim 'A' uses transform 'logicle', which is not declared under "
            r"'transforms:'; declared: \['lin'\]",
        ),
        (
            _tree({**RECT, "dims": [{"marker": "A", "min": 0.5, "max": 0.2}]}),
            r"gate 'r': dim 'A' has min 0.5 >= max 0.2; min must be below max",
        ),
        (_tree({**RECT, "dims": [{"marker": "A"}]}), r"gate 'r': dim 'A' needs 'min' and/or 'max'"),
        (
            _tree({**RECT, "dims": [{"marker": "A", "min": 1, "colour": 2}]}),
            r"gate 'r': unknown dim key\(s\) \['colour'\]",
        ),
        (
            _tree(
                {
                    "id": "p",
                    "parent": None,
                    "type": "polygon",
                    "dims": [{"marker": "A"}],
                    "vertices": [[0, 0], [1, 1], [1, 0]],
                }
            ),
            r"gate 'p': a polygon needs 2 dims and at least 3 vertices",
        ),
        (
            _tree(
                RECT, {"id": "b", "parent": None, "type": "boolean", "op": "not", "of": ["r", "r"]}
            ),
            r"gate 'b': 'not' takes exactly one population, found 2",
        ),
        (
            _tree(
                RECT, {"id": "b", "parent": None, "type": "boolean", "op": "and", "of": ["r", "z"]}
            ),
            r"gate 'b': boolean refers to 'z', which is not a population defined earlier",
        ),
        (
            _tree(
                {
                    "id": "q",
                    "parent": None,
                    "type": "quadrant",
                    "dims": [{"marker": "A", "divider": 0.5}],
                    "quadrants": {"x": ["up"]},
                }
            ),
            r"gate 'q': quadrant 'x' dim 'A': expected 'hi', 'lo' or \[min, max\], found 'up'",
        ),
        (
            _tree(
                {
                    "id": "th",
                    "parent": None,
                    "type": "threshold",
                    "dims": [{"marker": "A"}],
                    "method": "otsu",
                    "bounds": [0, 1],
                }
            ),
            r"gate 'th': 'method' must be one of \['valley', 'gmm', 'control'\], found 'otsu'",
        ),
        (
            _tree(
                {
                    "id": "th",
                    "parent": None,
                    "type": "threshold",
                    "dims": [{"marker": "A"}],
                    "method": "valley",
                    "bounds": [0, 1],
                    "allow_fallback": True,
                }
            ),
            r"gate 'th': allow_fallback is true but no 'default' threshold given",
        ),
        (
            _tree(
                {
                    "id": "th",
                    "parent": None,
                    "type": "threshold",
                    "dims": [{"marker": "A"}],
                    "method": "gmm",
                    "bounds": [1, 0],
                }
            ),
            r"gate 'th': 'bounds' low 1 must be below high 0",
        ),
    ],
)
def test_validation_messages(doc: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        tree_from_dict(doc, source="f.yaml")


def test_load_tree_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing.yaml: cannot read gate tree"):
        load_tree(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: not valid YAML"):
        load_tree(bad)


def test_import_is_light() -> None:
    import subprocess
    import sys

    code = (
        "import sys, nkflow.gating, nkflow.fcs.transforms, nkflow.figures;"
        "print(sorted(m for m in ('flowkit','pandas','matplotlib','sklearn') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
