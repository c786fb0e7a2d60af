"""ISAC Gating-ML 2.0 compliance: all 51 truth files match nkflow per event.

Each Gating-ML file is imported with :func:`nkflow.gating.from_gatingml` and evaluated by
nkflow's own engine on ``data1.fcs``; the truth files (one 0/1 per event, from the ISAC
compliance set) are the independent reference. The case runner is the one ``nkflow qualify``
uses (:mod:`nkflow.qualify._public`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from nkflow.qualify._public import gatingml_case, gatingml_cases, gatingml_events
from tests.conftest import PUBLIC_DATA_SKIP, public_data_root

pytestmark = pytest.mark.public

ROOT_ENV = public_data_root()


def _cases() -> list[dict]:
    return gatingml_cases(Path(ROOT_ENV)) if ROOT_ENV else []


@pytest.fixture(scope="module")
def data1() -> tuple[Any, dict[str, int]]:
    if not ROOT_ENV:
        pytest.skip(PUBLIC_DATA_SKIP)
    return gatingml_events(Path(ROOT_ENV))


def test_all_51_truth_files_are_listed() -> None:
    if not ROOT_ENV:
        pytest.skip(PUBLIC_DATA_SKIP)
    assert len(_cases()) == 51


@pytest.mark.parametrize("case", _cases(), ids=lambda c: c["truth"])
def test_truth_per_event(case: dict, data1: tuple[Any, dict[str, int]]) -> None:
    events, index = data1
    n_truth, _, n_diff = gatingml_case(Path(ROOT_ENV or ""), case, events, index)
    assert n_truth == events.shape[0]
    assert n_diff == 0
