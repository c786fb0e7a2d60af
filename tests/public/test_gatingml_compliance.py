"""ISAC Gating-ML 2.0 compliance: all 51 truth files match nkflow per event.

Each Gating-ML file is imported with :func:`nkflow.gating.from_gatingml` and evaluated by
nkflow's own engine on ``data1.fcs``; the truth files (one 0/1 per event, from the ISAC
compliance set) are the independent reference.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import PUBLIC_DATA_SKIP, public_data_root

pytestmark = pytest.mark.public

ROOT_ENV = public_data_root()


def _cases() -> list[dict]:
    if not ROOT_ENV:
        return []
    return json.loads((Path(ROOT_ENV) / "gatingml2_compliance" / "gml_truth_map.json").read_text())


@pytest.fixture(scope="module")
def data1() -> tuple[np.ndarray, dict[str, int]]:
    if not ROOT_ENV:
        pytest.skip(PUBLIC_DATA_SKIP)
    import flowkit as fk

    s = fk.Sample(str(Path(ROOT_ENV) / "gatingml2_compliance" / "data1.fcs"))
    mi = {label: i for i, label in enumerate(s.pnn_labels)}
    for i, label in enumerate(s.pns_labels):
        mi.setdefault(label, i)
    return s.get_events(source="raw"), mi


def test_all_51_truth_files_are_listed() -> None:
    if not ROOT_ENV:
        pytest.skip(PUBLIC_DATA_SKIP)
    assert len(_cases()) == 51


@pytest.mark.parametrize("case", _cases(), ids=lambda c: c["truth"])
def test_truth_per_event(case: dict, data1: tuple[np.ndarray, dict[str, int]]) -> None:
    from nkflow.gating import from_gatingml, gate_sample

    d = Path(ROOT_ENV or "") / "gatingml2_compliance"
    events, mi = data1
    tree = from_gatingml(d / "gml" / case["gml"])
    res = gate_sample(tree, events, mi)
    truth = np.loadtxt(d / "truth" / case["truth"], dtype=int).astype(bool)
    assert truth.shape == (events.shape[0],)
    got = res.membership(case["gate_id"])
    assert int((got != truth).sum()) == 0
