"""FlowJo 10 workspaces: every count FlowJo computed is reproduced by nkflow's engine.

The expected numbers are FlowJo's own ``Population/@count`` under ``SampleNode`` (listed in
CATALOG.md of the public data folder); each test also reads that attribute from the ``.wsp``
to show the number is FlowJo's, not ours.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.conftest import PUBLIC_DATA_SKIP, public_data_root

pytestmark = pytest.mark.public

ROOT_ENV = public_data_root()
DIAMOND = "simple_diamond_example/test_data_diamond_01.fcs"
LINE = "simple_line_example/data_set_simple_line_100.fcs"

# (workspace, fcs, population, FlowJo count)
CASES = [
    (
        "simple_diamond_example/simple_diamond_example_quad_gate.wsp",
        DIAMOND,
        "Q1: channel_A- , channel_B+",
        49671,
    ),
    (
        "simple_diamond_example/simple_diamond_example_quad_gate.wsp",
        DIAMOND,
        "Q2: channel_A+ , channel_B+",
        50596,
    ),
    (
        "simple_diamond_example/simple_diamond_example_quad_gate.wsp",
        DIAMOND,
        "Q3: channel_A+ , channel_B-",
        50330,
    ),
    (
        "simple_diamond_example/simple_diamond_example_quad_gate.wsp",
        DIAMOND,
        "Q4: channel_A- , channel_B-",
        49403,
    ),
    ("simple_diamond_example/test_data_diamond_asinh_rect.wsp", DIAMOND, "upper_right", 50559),
    ("simple_diamond_example/test_data_diamond_asinh_rect2.wsp", DIAMOND, "upper_right", 50699),
    ("simple_diamond_example/test_data_diamond_biex_rect.wsp", DIAMOND, "upper_right", 50605),
    ("simple_line_example/single_ellipse_51_events.wsp", LINE, "ellipse1", 51),
]


def _flowjo_count(wsp: Path, population: str) -> int:
    root = ET.parse(wsp).getroot()
    for node in root.iter("SampleNode"):
        for pop in node.iter("Population"):
            if pop.get("name") == population:
                return int(pop.get("count", "-1"))
    raise AssertionError(f"{population} not under a SampleNode in {wsp}")


@pytest.mark.parametrize(
    ("wsp", "fcs", "population", "expected"),
    CASES,
    ids=[f"{Path(c[0]).stem}:{c[2]}" for c in CASES],
)
def test_flowjo_count(wsp: str, fcs: str, population: str, expected: int) -> None:
    if not ROOT_ENV:
        pytest.skip(PUBLIC_DATA_SKIP)
    from nkflow.gating import from_flowjo_wsp, gate_sample
    from nkflow.io import read_fcs

    d = Path(ROOT_ENV) / "flowkit_flowjo_wsp_synthetic"
    assert _flowjo_count(d / wsp, population) == expected
    sample = read_fcs(d / fcs)
    tree = from_flowjo_wsp(d / wsp, Path(fcs).name)
    mi = {name: i for i, name in enumerate(sample.channel_names)}
    res = gate_sample(tree, sample.events, mi)
    assert res.count(population) == expected


def test_unknown_sample_and_group() -> None:
    if not ROOT_ENV:
        pytest.skip(PUBLIC_DATA_SKIP)
    from nkflow.errors import ConfigError
    from nkflow.gating import from_flowjo_wsp

    wsp = Path(ROOT_ENV) / "flowkit_flowjo_wsp_synthetic" / CASES[4][0]
    with pytest.raises(ConfigError, match=r"sample 'nope.fcs' is not in group 'All Samples'"):
        from_flowjo_wsp(wsp, "nope.fcs")
    with pytest.raises(ConfigError, match=r"group 'Tcells' not found; groups in the workspace"):
        from_flowjo_wsp(wsp, "test_data_diamond_01.fcs", group="Tcells")
