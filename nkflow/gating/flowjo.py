"""Import of FlowJo 10 workspaces (``.wsp``) through FlowKit.

Contract
--------
``from_flowjo_wsp(path, sample_id, group="All Samples") -> GateTree``: the gate tree FlowJo
applies to ``sample_id`` (custom sample gates included), with FlowJo's per-channel transforms
(biex, log, linear, logicle, arcsinh) and the sample's compensation matrix. Dimension ids become
markers (the FlowJo channel labels), so ``marker_index`` maps channel labels to columns.
"""

from __future__ import annotations

import logging
from pathlib import Path

from nkflow.errors import ConfigError
from nkflow.gating.tree import GateTree

logger = logging.getLogger(__name__)


def from_flowjo_wsp(path: str | Path, sample_id: str, group: str = "All Samples") -> GateTree:
    """Read the gate tree of FlowJo sample ``sample_id`` (usually the FCS file name) in ``group``.

    Raises
    ------
    ConfigError
        The workspace cannot be parsed, or the sample is not in the group.
    """
    import flowkit as fk

    from nkflow.gating.gatingml import from_flowkit

    p = Path(path)
    try:
        wsp = fk.parse_wsp(str(p))
    except Exception as exc:  # FlowKit raises many exception types on bad XML
        raise ConfigError(f"{p}: FlowKit could not parse this FlowJo workspace: {exc}") from exc
    groups = wsp.get("groups", {})
    if group not in groups:
        raise ConfigError(
            f"{p}: group '{group}' not found; groups in the workspace: {sorted(groups)}"
        )
    members = groups[group].get("samples", [])
    if sample_id not in members:
        raise ConfigError(
            f"{p}: sample '{sample_id}' is not in group '{group}'; samples: {sorted(members)}"
        )
    entry = wsp["samples"][sample_id]
    gs = entry["gating_strategy"]
    return from_flowkit(gs, name=p.stem, source=str(p), sample_id=sample_id)
