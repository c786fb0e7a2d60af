"""Per-event identity with FlowKit's ``GatingStrategy.gate_sample`` on the same tree.

Two data sets: a synthetic 1M-event NK/Treg file (written by ``bench/gating.py``, spillover in
``$SPILLOVER``) and every tube of the sample cohort in ``data/sample`` with the shipped trees.
FlowKit is the reference; the tree reaches it through ``to_flowkit``.
"""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_gating", ROOT / "bench" / "gating.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def synthetic_1m(tmp_path_factory: pytest.TempPathFactory) -> Path:
    b = _bench()
    path = tmp_path_factory.mktemp("bench") / "synthetic_1m.fcs"
    b.write_fcs(path, b.make_events(1_000_000, seed=11))
    return path


def test_one_million_events_identical_to_flowkit(synthetic_1m: Path) -> None:
    b = _bench()
    out = b.verify(synthetic_1m)
    assert out["diff"] == dict.fromkeys(out["counts"], 0)
    # the hierarchy is not trivial: every population holds events, each fewer than its parent
    assert all(c > 1000 for c in out["counts"].values())
    assert out["counts"]["treg_ki67"] < out["counts"]["treg"] < out["counts"]["cd4"]


def _cohort() -> list[dict[str, str]]:
    sheet = ROOT / "data" / "sample" / "samples.tsv"
    if not sheet.exists():
        return []
    with sheet.open() as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


@pytest.mark.skipif(not _cohort(), reason="data/sample/samples.tsv not generated")
def test_sample_cohort_identical_to_flowkit() -> None:
    import flowkit as fk

    from nkflow.fcs import compensation, io, panel
    from nkflow.gating import gate_sample, load_tree, to_flowkit

    checked = 0
    for row in _cohort():
        path = ROOT / "data" / "sample" / row["fcs_file"]
        sample = io.read_fcs(path)
        pnl = panel.load_panel(ROOT / "config" / "panels" / f"{row['panel']}.yaml")
        res = panel.resolve(pnl, sample)
        mi = {m: res.index_for(m) for m in pnl.markers if res.index_for(m) is not None}
        spill = compensation.spillover_for(sample)
        tree = load_tree(ROOT / "config" / "gating" / f"{row['gating']}.yaml")
        ranges = {m: sample.channels[i].pnr for m, i in mi.items()}
        ours = gate_sample(
            tree, sample.events, mi, spill=spill, channel_names=sample.channel_names, ranges=ranges
        )
        names = {m: sample.channels[i].pnn for m, i in mi.items()}
        # the gates as fitted on this tube (numbers written in) are plain Gating-ML gates:
        # FlowKit evaluates them event for event as nkflow does
        assert not any(g.fitted for g in ours.tree.gates if g.id not in ours.not_computed)
        theirs = to_flowkit(ours.tree, channel_names=names, spill=spill).gate_sample(
            fk.Sample(str(path))
        )
        for pop in tree.populations:
            if pop in ours.not_computed:
                continue
            np.testing.assert_array_equal(
                ours.membership(pop),
                theirs.get_gate_membership(pop),
                err_msg=f"{path.name}: {pop}",
            )
            checked += 1
    assert checked >= 64 * 7
