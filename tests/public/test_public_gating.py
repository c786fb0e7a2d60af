"""The data-driven gates on the real public files (scripts/gate_public_files.py).

Reads ``$NKFLOW_PUBLIC_DATA`` in place (GPL files are never copied). The bands are what a
reviewer checks on each file's figure (docs/public-gating.md), wide enough for donor-to-donor
variation and narrow enough to fail when a gate lands on the wrong population:

* adult peripheral blood holds 55-85 % T cells among lymphocytes, and among T cells both CD4+
  CD8- (30-70 %) and CD8+ CD4- cells; each file's figure shows both clusters;
* a scatter (or CD45/CD66) lymphocyte gate that holds almost everything or almost nothing has
  landed on the wrong cluster;
* FlowKit's 100715.fcs has no CD3 separation at all (every fluorescence channel is one mode):
  the CD3 gate must refuse (``no_valley``) rather than invent a cut.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from tests.conftest import PUBLIC_DATA_SKIP, ROOT, public_data_root

pytestmark = pytest.mark.public

ROOT_ENV = public_data_root()

# name: (lymphocytes % of parent, CD3+ % of parent, CD4+CD8- % of CD3+ (min), CD8+CD4- % (min))
BANDS: dict[str, tuple[tuple[float, float], tuple[float, float], float, float]] = {
    # OMIP-021 PBMC (CytoPipeline): lymphocytes of singlets; CD3 of live lymphocytes
    "omip021_donor1": ((30, 75), (55, 85), 40, 20),
    "omip021_donor2": ((30, 75), (55, 85), 40, 20),
    # ITN lysed whole blood (FACSCanto, no FSC-H): lymphocytes of all events; itn_02 has a low
    # CD8 share (9 % of T cells), hence the lower CD8 minimum
    "itn_02": ((20, 60), (55, 85), 50, 5),
    "itn_03": ((20, 60), (55, 85), 50, 5),
    # CyTOF whole blood: "lymphocytes" (CD45-bright CD66-) of CD45-bright cells
    **{
        f"cytof_{p}_{k}": ((75, 100), (45, 85), 40, 20)
        for p in ("021", "028", "034")
        for k in (1, 2)
    },
}


def _driver():
    path = ROOT / "scripts" / "gate_public_files.py"
    spec = importlib.util.spec_from_file_location("gate_public_files", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # the dataclass needs its module registered
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    if not ROOT_ENV:
        pytest.skip(PUBLIC_DATA_SKIP)
    out = tmp_path_factory.mktemp("public_gating")
    return _driver().run(Path(ROOT_ENV), out), out


@pytest.mark.parametrize("name", sorted(BANDS))
def test_gates_find_the_t_cells(results: tuple[dict, Path], name: str) -> None:
    res = results[0][name]
    (lo_l, hi_l), (lo_3, hi_3), min_cd4, min_cd8 = BANDS[name]
    assert res["flags"] == [], [f["message"] for f in res["flags"]]
    pct = res["pct"]
    assert lo_l <= pct["lymphocytes"] <= hi_l, pct
    assert lo_3 <= pct["cd3"] <= hi_3, pct
    assert pct["cd4"] >= min_cd4, pct
    assert pct["cd8"] >= min_cd8, pct
    # the CD4 and CD8 gates are disjoint quadrants of the CD3+ cells
    assert res["counts"]["cd4"] + res["counts"]["cd8"] <= res["counts"]["cd3"]
    # every fluorescence cut is a real valley (not a tail fallback), except a declared fallback
    methods = {f"{f['gate']}.{f['markers'][0]}": f["method"] for f in res["fits"]}
    assert methods["cd3.CD3"] == "valley"
    assert methods["cd4.CD4"] == "valley"


def test_omip021_singlets_and_viability(results: tuple[dict, Path]) -> None:
    for name in ("omip021_donor1", "omip021_donor2"):
        pct = results[0][name]["pct"]
        assert 90 <= pct["singlets"] <= 99, pct  # doublets 1-10 %
        assert pct["live"] >= 95, pct  # the viability dye shows one (live) mode


def test_flowkit_100715_cd3_refuses(results: tuple[dict, Path]) -> None:
    res = results[0]["flowkit_100715"]
    codes = [(f["code"], f["where"]) for f in res["flags"]]
    assert codes == [("no_valley", "cd3.CD3")]
    assert res["counts"]["cd3"] is None and res["counts"]["cd4"] is None
    assert res["counts"]["lymphocytes"] is not None


def test_figures_and_summary_written(results: tuple[dict, Path]) -> None:
    res, out = results
    for name in res:
        assert (out / f"{name}.png").stat().st_size > 10_000
    lines = (out / "summary.tsv").read_text(encoding="utf-8").splitlines()
    assert lines[0].split("\t")[:4] == ["file", "instrument", "kind", "item"]
    kinds = {line.split("\t")[2] for line in lines[1:]}
    assert kinds == {"count", "fit", "flag"}
