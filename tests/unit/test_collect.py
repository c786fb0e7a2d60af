"""`nkflow collect`: cohort tables in sample-sheet order from the batch directories."""

import json

import pandas as pd
import pytest

from nkflow.errors import NkflowError
from nkflow.qc import QC_COLUMNS
from nkflow.stages import collect_batches
from nkflow.tables import read_tsv, write_tsv
from nkflow.tube import COUNT_COLUMNS
from tests.conftest import columns


def _tube(batch, sample, tube, events):
    d = batch / sample / tube
    d.mkdir(parents=True)
    write_tsv(
        pd.DataFrame(
            [[sample, tube, events]], columns=columns(COUNT_COLUMNS, "sample_id", "tube", "events")
        ),
        d / "counts.tsv",
    )
    write_tsv(
        pd.DataFrame(
            [[sample, tube, "PASS"]],
            columns=columns(QC_COLUMNS, "sample_id", "tube", "tube_status"),
        ),
        d / "qc.tsv",
    )
    (d / "provenance.json").write_text(
        json.dumps({"fcs_file": f"{sample}.fcs", "fcs_sha256": "ab", "qc_status": "PASS"})
    )


def test_sheet_order_across_batches(tmp_path):
    a, b = tmp_path / "nk.nk.001", tmp_path / "treg.treg.001"
    _tube(a, "S1", "nk", 10)
    _tube(a, "S2", "nk", 20)
    _tube(b, "S1", "treg", 30)
    out = tmp_path / "out"
    collect_batches(
        [a, b],
        [("S1", "nk"), ("S1", "treg"), ("S2", "nk")],
        out_counts=out / "counts.tsv",
        out_qc=out / "qc.tsv",
        out_index=out / "tubes.tsv",
    )
    assert list(read_tsv(out / "counts.tsv")["events"]) == [10, 30, 20]
    index = read_tsv(out / "tubes.tsv")
    assert list(index["batch"]) == ["nk.nk.001", "treg.treg.001", "nk.nk.001"]
    assert list(index["fcs_file"]) == ["S1.fcs", "S1.fcs", "S2.fcs"]


def test_a_tube_in_two_batches_is_refused(tmp_path):
    a, b = tmp_path / "x.001", tmp_path / "x.002"
    _tube(a, "S1", "nk", 1)
    _tube(b, "S1", "nk", 1)
    with pytest.raises(NkflowError, match=r"collect: tube S1/nk appears in two batches"):
        collect_batches(
            [a, b],
            [("S1", "nk")],
            out_counts=tmp_path / "c",
            out_qc=tmp_path / "q",
            out_index=tmp_path / "i",
        )


def test_a_tube_without_outputs_is_named(tmp_path):
    a = tmp_path / "x.001"
    _tube(a, "S1", "nk", 1)
    with pytest.raises(NkflowError, match=r"collect: no outputs for tube\(s\) S2/nk"):
        collect_batches(
            [a],
            [("S1", "nk"), ("S2", "nk")],
            out_counts=tmp_path / "c",
            out_qc=tmp_path / "q",
            out_index=tmp_path / "i",
        )
