"""Public compliance suites: ISAC Gating-ML 2.0 (per event) and FlowJo workspaces (counts).

Contract: both checks read the public data folder (``$NKFLOW_PUBLIC_DATA``); without it every
criterion is ``not_run``, never passed. :func:`gatingml_case` and :func:`flowjo_case` evaluate one
case with nkflow's own importers and gating engine against the independent reference (the ISAC
truth file; FlowJo's own ``Population/@count`` read from the ``.wsp``), and are what
``tests/public`` runs too.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from nkflow.qualify._context import Context
from nkflow.qualify._limits import LIMIT
from nkflow.qualify._model import CheckResult, evidence, judged, not_run

GATINGML_DIR = "gatingml2_compliance"
FLOWJO_DIR = "flowkit_flowjo_wsp_synthetic"
DIAMOND = "simple_diamond_example/test_data_diamond_01.fcs"
LINE = "simple_line_example/data_set_simple_line_100.fcs"
QUAD = "simple_diamond_example/simple_diamond_example_quad_gate.wsp"

#: (workspace, fcs, population, FlowJo's count), relative to the FlowJo folder
FLOWJO_CASES = (
    (QUAD, DIAMOND, "Q1: channel_A- , channel_B+", 49671),
    (QUAD, DIAMOND, "Q2: channel_A+ , channel_B+", 50596),
    (QUAD, DIAMOND, "Q3: channel_A+ , channel_B-", 50330),
    (QUAD, DIAMOND, "Q4: channel_A- , channel_B-", 49403),
    ("simple_diamond_example/test_data_diamond_asinh_rect.wsp", DIAMOND, "upper_right", 50559),
    ("simple_diamond_example/test_data_diamond_asinh_rect2.wsp", DIAMOND, "upper_right", 50699),
    ("simple_diamond_example/test_data_diamond_biex_rect.wsp", DIAMOND, "upper_right", 50605),
    ("simple_line_example/single_ellipse_51_events.wsp", LINE, "ellipse1", 51),
)

NO_PUBLIC = (
    "the public data folder is not available (set NKFLOW_PUBLIC_DATA to the directory holding "
    f"{GATINGML_DIR}/ and {FLOWJO_DIR}/)"
)


def gatingml_cases(root: Path) -> list[dict[str, str]]:
    """The compliance suite's cases (``gml``, ``truth``, ``gate_id``) from its truth map."""
    return json.loads((root / GATINGML_DIR / "gml_truth_map.json").read_text(encoding="utf-8"))


def gatingml_events(root: Path) -> tuple[Any, dict[str, int]]:
    """Raw events of the suite's ``data1.fcs`` and the column index of each name its Gating-ML uses.

    A name is matched to ``$PnN``, then ``$PnS``.
    """
    import flowkit as fk

    s = fk.Sample(str(root / GATINGML_DIR / "data1.fcs"))
    index = {label: i for i, label in enumerate(s.pnn_labels)}
    for i, label in enumerate(s.pns_labels):
        index.setdefault(label, i)
    return s.get_events(source="raw"), index


def gatingml_case(root: Path, case: dict[str, str], events: Any, index: dict[str, int]):
    """(events in the truth file, events in the gate, events that differ) for one case."""
    import numpy as np

    from nkflow.gating import from_gatingml, gate_sample

    d = root / GATINGML_DIR
    tree = from_gatingml(d / "gml" / case["gml"])
    got = gate_sample(tree, events, index).membership(case["gate_id"])
    truth = np.loadtxt(d / "truth" / case["truth"], dtype=int).astype(bool)
    if truth.shape != got.shape:
        return int(truth.shape[0]), int(got.sum()), -1
    return int(truth.shape[0]), int(got.sum()), int((got != truth).sum())


def check_gatingml(ctx: Context) -> CheckResult:
    """Every Gating-ML 2.0 compliance gate, per event, against the ISAC truth files."""
    title = "Gating-ML 2.0 compliance"
    desc = (
        "Each Gating-ML 2.0 file of the ISAC compliance suite is imported with "
        "nkflow.gating.from_gatingml and evaluated by nkflow's engine on data1.fcs; each event's "
        "membership is compared with the suite's truth file."
    )
    n = int(LIMIT["gatingml_files"])
    text = f"all {n} compliance gates match their truth file on every event"
    limit = f"{n}/{n} files, 0 events differing"
    root = ctx.public_root
    if root is None or not (root / GATINGML_DIR).is_dir():
        return CheckResult(
            "gatingml", title, desc, (not_run("gatingml.per_event", text, limit, NO_PUBLIC),)
        )
    cases = gatingml_cases(root)
    events, index = gatingml_events(root)
    rows = []
    for case in cases:
        try:
            counts: tuple[Any, ...] = gatingml_case(root, case, events, index)
            error = ""
        except Exception as exc:  # noqa: BLE001 -- one broken case fails itself, not the check
            counts, error = ("", "", ""), f"{type(exc).__name__}: {exc}"
        rows.append((case["gml"], case["gate_id"], case["truth"], *counts, error))
    exact = [r for r in rows if r[5] == 0]
    bad = [f"{r[2]} ({r[6] or f'{r[5]} events differ'})" for r in rows if r[5] != 0]
    crit = judged(
        "gatingml.per_event",
        text,
        limit,
        f"{len(exact)}/{len(rows)} files exact",
        len(rows) == n and len(exact) == n,
        ("; ".join(bad) or "")
        + (f"; {len(rows)} cases listed, expected {n}" if len(rows) != n else ""),
    )
    ev = evidence(
        "Per truth file",
        [
            "Gating-ML file",
            "gate",
            "truth file",
            "events",
            "events in gate",
            "events differing",
            "error",
        ],
        rows,
        note=f"suite: {GATINGML_DIR}/ of the public data folder (gml_truth_map.json)",
    )
    return CheckResult("gatingml", title, desc, (crit,), (ev,))


def flowjo_count(wsp: Path, population: str) -> int:
    """FlowJo's own count of ``population`` (``Population/@count`` under a ``SampleNode``)."""
    root = ET.parse(wsp).getroot()
    for node in root.iter("SampleNode"):
        for pop in node.iter("Population"):
            if pop.get("name") == population:
                return int(pop.get("count", "-1"))
    raise KeyError(f"{population} not under a SampleNode in {wsp}")


def flowjo_case(root: Path, wsp: str, fcs: str, population: str) -> int | None:
    """The nkflow count of ``population`` with the workspace's gates on its FCS file.

    None when the population was not computed.
    """
    from nkflow.fcs.io import read_fcs
    from nkflow.gating import from_flowjo_wsp, gate_sample

    d = root / FLOWJO_DIR
    sample = read_fcs(d / fcs)
    tree = from_flowjo_wsp(d / wsp, Path(fcs).name)
    index = {name: i for i, name in enumerate(sample.channel_names)}
    return gate_sample(tree, sample.events, index).count(population)


def check_flowjo(ctx: Context) -> CheckResult:
    """FlowJo 10 workspaces: nkflow reproduces every count FlowJo computed."""
    title = "FlowJo concordance"
    desc = (
        "The public synthetic FlowJo 10 workspaces are imported with "
        "nkflow.gating.from_flowjo_wsp and gated by nkflow's engine; each population count is "
        "compared with the count FlowJo itself stored in the .wsp."
    )
    text = "every FlowJo-computed population count is reproduced exactly"
    limit = f"{len(FLOWJO_CASES)}/{len(FLOWJO_CASES)} counts equal"
    root = ctx.public_root
    if root is None or not (root / FLOWJO_DIR).is_dir():
        return CheckResult(
            "flowjo", title, desc, (not_run("flowjo.counts", text, limit, NO_PUBLIC),)
        )
    rows: list[tuple[Any, ...]] = []
    for wsp, fcs, pop, listed in FLOWJO_CASES:
        try:
            want = flowjo_count(root / FLOWJO_DIR / wsp, pop)
            have = flowjo_case(root, wsp, fcs, pop)
            # the .wsp's own count must also be the catalogued one (the workspace is unchanged)
            why = "" if want == listed else f"the .wsp says {want}, its catalogue {listed}"
            rows.append((wsp, fcs, pop, listed, want, have, have == want == listed, why))
        except Exception as exc:  # noqa: BLE001 -- a case that cannot be evaluated fails itself
            rows.append((wsp, fcs, pop, listed, "", "", False, f"{type(exc).__name__}: {exc}"))
    bad = [
        f"{r[0]}:{r[2]} ({r[7] or f'{r[5]} vs FlowJo {r[4]}'})" for r in rows if r[6] is not True
    ]
    crit = judged(
        "flowjo.counts",
        text,
        limit,
        f"{len(rows) - len(bad)}/{len(rows)} equal",
        not bad,
        "; ".join(bad),
    )
    ev = evidence(
        "Per population",
        [
            "workspace",
            "FCS file",
            "population",
            "catalogued",
            "FlowJo count (.wsp)",
            "nkflow count",
            "equal",
            "error",
        ],  # fmt: skip
        rows,
        note=f"workspaces: {FLOWJO_DIR}/ of the public data folder",
    )
    return CheckResult("flowjo", title, desc, (crit,), (ev,))
