"""An FMO control tube named in the sample sheet sets the FoxP3 boundary, end to end.

A FoxP3 FMO tube (the same cells, FoxP3 unstained) is written for P05's day-14 treg tube with
the sample generator; the sheet names it in its ``fmo`` column. The workflow passes it to the
tube, the FoxP3 boundary becomes the FMO tube's 99.5th percentile of CD4 cells (recorded), the
Treg % of CD4 stays within 5 % of truth and every verdict stands.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from tests.conftest import ROOT, copy_workflow, run_snakemake
from tests.generated import generator, write_tube

pytestmark = pytest.mark.workflow


def _rows(path, key):
    with path.open(newline="", encoding="utf-8") as fh:
        return {tuple(r[k] for k in key): r for r in csv.DictReader(fh, delimiter="\t")}


def test_fmo_tube_from_the_sheet_sets_the_foxp3_boundary(tmp_path, monkeypatch):
    workdir = copy_workflow(tmp_path / "run")
    gen = generator()
    style = gen.STYLES["aurora"]
    visit = next(v for p in gen._cohort() if p.pid == "P05" for v in p.visits if v.day == 14)
    unstained = {
        k: (cls, {m: lev for m, lev in levels.items() if m != "FoxP3"})
        for k, (cls, levels) in gen.TREG_PHENO.items()
    }
    monkeypatch.setitem(gen.PHENO, "treg", unstained)
    fmo = gen.make_tube(np.random.default_rng(5), style, "treg", visit)
    write_tube(style, "treg", fmo, workdir / "data/sample/fcs/P05-D14_treg_fmo_foxp3.fcs")
    sheet = workdir / "data/sample/samples.tsv"
    lines = sheet.read_text(encoding="utf-8").splitlines()
    out = [lines[0] + "\tfmo"]
    for line in lines[1:]:
        sid, _, _, tube = line.split("\t")[:4]
        extra = "FoxP3=fcs/P05-D14_treg_fmo_foxp3.fcs" if (sid, tube) == ("P05-D14", "treg") else ""
        out.append(f"{line}\t{extra}")
    sheet.write_text("\n".join(out) + "\n", encoding="utf-8")

    run_snakemake(workdir)
    index = _rows(workdir / "results/cohort/tubes.tsv", ("sample_id", "tube"))
    prov = json.loads((workdir / index[("P05-D14", "treg")]["provenance"]).read_text())
    assert prov["fmo"]["FoxP3"]["file"] == "data/sample/fcs/P05-D14_treg_fmo_foxp3.fcs"
    assert prov["fmo"]["FoxP3"]["gates"] == ["treg"] and len(prov["fmo"]["FoxP3"]["sha256"]) == 64
    rec = next(f for f in prov["fitted_gates"] if (f["gate"], f["markers"]) == ("treg", ["FoxP3"]))
    assert rec["method"] == "fmo" and rec["stats"]["percentile"] == 99.5
    other = json.loads((workdir / index[("P01-D14", "treg")]["provenance"]).read_text())
    assert "fmo" not in other
    got = _rows(workdir / "results/cohort/visits.tsv", ("sample_id",))
    truth = _rows(ROOT / "data/sample/truth/visits.tsv", ("sample_id",))
    g, t = (
        float(got[("P05-D14",)]["treg_pct_of_cd4"]),
        float(truth[("P05-D14",)]["treg_pct_of_cd4"]),
    )
    assert abs(g - t) / t < 0.05, (g, t)
    ends = _rows(workdir / "results/cohort/endpoints.tsv", ("patient_id",))
    ends_truth = _rows(ROOT / "data/sample/truth/endpoints.tsv", ("patient_id",))
    assert {k: v["verdict"] for k, v in ends.items()} == {
        k: v["verdict"] for k, v in ends_truth.items()
    }
