"""``nkflow inspect``: describe FCS files so an analyst can write a panel for a new instrument.

Contract
--------
``inspect_files(paths, panel=None, fmt='text') -> (output, exit_status)`` reads every file
through :func:`nkflow.fcs.io.read_fcs` (so the same integrity checks apply) and reports, per file:
FCS version, instrument (``$CYT``), acquisition date, event count, byte order, data type, data
sets, sha256, the spillover source, every reader warning, and a channel table (``$PnN``,
``$PnS``, the marker each resolves to under ``panel``). A file that cannot be read is reported
with its named problem and makes the exit status 1; the other files are still described.
Pure: returns text, prints nothing. A bad panel file raises :class:`~nkflow.errors.ConfigError`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nkflow.errors import CompensationError, NkflowError, PanelError

logger = logging.getLogger(__name__)

__all__ = ["describe_file", "inspect_files"]

_TSV_COLUMNS = (
    "file",
    "status",
    "version",
    "instrument",
    "n_events",
    "channel",
    "pnn",
    "pns",
    "pnb",
    "pnr",
    "pne",
    "marker",
    "message",
)


def describe_file(path: Path, panel: Any | None = None) -> dict[str, Any]:
    """Describe one FCS file as a JSON-ready dict (markers resolved under ``panel`` when given).

    Returns
    -------
    dict
        ``status`` is ``'ok'`` or ``'error'`` (then ``error`` holds the message).
    """
    from nkflow.fcs import compensation, io
    from nkflow.fcs import panel as panel_mod

    info: dict[str, Any] = {"file": str(path), "status": "ok"}
    try:
        sample = io.read_fcs(path, dtype="float32")
    except NkflowError as exc:
        info.update(status="error", error=str(exc))
        return info
    warns = list(sample.warnings)
    info.update(
        {
            "sha256": sample.sha256,
            "version": sample.version,
            "instrument": sample.instrument,
            "acquisition_date": sample.acquisition_date or sample.keywords.get("$DATE", ""),
            "n_events": sample.n_events,
            "n_channels": len(sample.channels),
            "byte_order": sample.byte_order,
            "datatype": sample.datatype,
            "datasets": sample.n_datasets,
        }
    )
    try:
        spill = compensation.spillover_for(sample)
        info["spillover"] = spill.source if spill is not None else "none"
    except CompensationError as exc:
        info["spillover"] = "invalid"
        warns.append(f"spillover: {exc}")
    markers: dict[str, str] = {}
    if panel is not None:
        try:
            res = panel_mod.resolve(panel, sample)
            markers = {pnn: m for pnn, _pns, m in res.table() if m}
            info["panel"] = panel.name
            info["missing_markers"] = list(res.missing)
            info["missing_required"] = list(res.missing_required)
        except PanelError as exc:
            info["panel"] = panel.name
            warns.append(f"panel: {exc}")
    info["channels"] = [
        {
            "n": c.index + 1,
            "pnn": c.pnn,
            "pns": c.pns,
            "pnb": c.pnb,
            "pnr": c.pnr,
            "pne": [c.pne[0], c.pne[1]],
            "datatype": c.datatype,
            "pntype": c.pntype,
            "feature": c.feature,
            "analyte": c.analyte,
            "marker": markers.get(c.pnn, ""),
        }
        for c in sample.channels
    ]
    info["warnings"] = warns
    del sample
    return info


def _text(infos: list[dict[str, Any]], with_panel: bool) -> str:
    out: list[str] = []
    for info in infos:
        out.append(f"== {info['file']}")
        if info["status"] == "error":
            out += [f"ERROR: {info['error']}", ""]
            continue
        out.append(
            f"version {info['version']}  instrument {info['instrument'] or '-'}  "
            f"date {info['acquisition_date'] or '-'}"
        )
        out.append(
            f"events {info['n_events']}  channels {info['n_channels']}  "
            f"datatype {info['datatype']}  byte order {info['byte_order']}  "
            f"data sets {info['datasets']}"
        )
        out.append(f"spillover {info['spillover']}  sha256 {info['sha256']}")
        if with_panel and "missing_markers" in info:
            miss = ", ".join(info["missing_markers"]) or "none"
            out.append(f"panel {info['panel']}: missing markers {miss}")
        rows = [("n", "$PnN", "$PnS", "marker")] + [
            (str(c["n"]), c["pnn"], c["pns"], c["marker"]) for c in info["channels"]
        ]
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        for r in rows:
            cells = (v.ljust(w) for v, w in zip(r, widths, strict=True))
            out.append(("  " + "  ".join(cells)).rstrip())
        out.extend(f"WARNING: {w}" for w in info["warnings"])
        out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


def _clean(text: Any) -> str:
    return str(text).replace("\t", " ").replace("\n", " ")


def _tsv(infos: list[dict[str, Any]]) -> str:
    lines = ["\t".join(_TSV_COLUMNS)]
    for info in infos:
        if info["status"] == "error":
            rows = [{**dict.fromkeys(_TSV_COLUMNS, ""), **info, "message": info["error"]}]
        else:
            msg = " | ".join(info["warnings"])
            rows = [
                {
                    **info,
                    **c,
                    "channel": c["n"],
                    "pnr": f"{c['pnr']:g}",
                    "pne": "{:g},{:g}".format(*c["pne"]),
                    "message": msg,
                }
                for c in info["channels"]
            ]
        lines += ["\t".join(_clean(row[k]) for k in _TSV_COLUMNS) for row in rows]
    return "\n".join(lines) + "\n"


def inspect_files(
    paths: Sequence[str | Path],
    panel: str | Path | Any | None = None,
    fmt: str = "text",
) -> tuple[str, int]:
    """Describe FCS files.

    Parameters
    ----------
    panel : str, Path or Panel, optional
        Panel file (or loaded panel) to resolve markers with.
    fmt : {'text', 'tsv', 'json'}

    Returns
    -------
    tuple of (str, int)
        The output and the exit status: 0 when every file was read, 1 otherwise.

    Raises
    ------
    ConfigError
        If the panel file is invalid or ``fmt`` is unknown.
    """
    from nkflow.errors import ConfigError
    from nkflow.fcs.panel import Panel, load_panel

    if fmt not in ("text", "tsv", "json"):
        raise ConfigError(f"inspect: format {fmt!r} is not known; expected text, tsv or json")
    pnl = None
    if panel is not None:
        pnl = panel if isinstance(panel, Panel) else load_panel(panel)
    infos = [describe_file(Path(p), pnl) for p in paths]
    status = 1 if any(i["status"] == "error" for i in infos) else 0
    if fmt == "json":
        return json.dumps(infos, indent=2, ensure_ascii=False) + "\n", status
    if fmt == "tsv":
        return _tsv(infos), status
    return _text(infos, pnl is not None), status
