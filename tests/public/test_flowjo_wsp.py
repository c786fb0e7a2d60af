"""FlowJo 10 workspaces: every count FlowJo computed is reproduced by nkflow's engine.

The expected numbers are FlowJo's own ``Population/@count`` under ``SampleNode`` (listed in
CATALOG.md of the public data folder); each test also reads that attribute from the ``.wsp``
to show the number is FlowJo's, not ours. The cases and the runner are the ones
``nkflow qualify`` uses (:mod:`nkflow.qualify._public`).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from nkflow.qualify._public import FLOWJO_CASES as CASES
from nkflow.qualify._public import FLOWJO_DIR, flowjo_case, flowjo_count
from tests.conftest import PUBLIC_DATA_SKIP, public_data_root

pytestmark = pytest.mark.public

ROOT_ENV = public_data_root()


@pytest.mark.parametrize(
    ("wsp", "fcs", "population", "expected"),
    CASES,
    ids=[f"{Path(c[0]).stem}:{c[2]}" for c in CASES],
)
def test_flowjo_count(wsp: str, fcs: str, population: str, expected: int) -> None:
    if not ROOT_ENV:
        pytest.skip(PUBLIC_DATA_SKIP)
    assert flowjo_count(Path(ROOT_ENV) / FLOWJO_DIR / wsp, population) == expected
    assert flowjo_case(Path(ROOT_ENV), wsp, fcs, population) == expected


def test_unknown_sample_and_group() -> None:
    if not ROOT_ENV:
        pytest.skip(PUBLIC_DATA_SKIP)
    from nkflow.errors import ConfigError
    from nkflow.gating import from_flowjo_wsp

    wsp = Path(ROOT_ENV) / FLOWJO_DIR / CASES[4][0]
    with pytest.raises(ConfigError, match=r"sample 'nope.fcs' is not in group 'All Samples'"):
        from_flowjo_wsp(wsp, "nope.fcs")
    with pytest.raises(ConfigError, match=r"group 'Tcells' not found; groups in the workspace"):
        from_flowjo_wsp(wsp, "test_data_diamond_01.fcs", group="Tcells")
