"""Tubes made on the spot with the sample generator (:mod:`nkflow.synthetic`), written
as real FCS files and read back through nkflow, as a user's files would be."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def generator() -> Any:
    """The sample generator module (``scripts/make_sample_data.py`` is its command)."""
    from nkflow import synthetic

    return synthetic


def write_tube(
    style: Any,
    tube: str,
    res: Any,
    path: Path,
    extra: dict[str, str] | None = None,
    *,
    fcs32: bool = False,
) -> Path:
    """Write a generated tube (``make_tube`` result) as the style's FCS file, with ``extra``
    TEXT keywords (e.g. ``{"$DATE": "06-FEB-2024"}``).

    ``fcs32`` writes it as FCS 3.2 with ``$PnTYPE``/``$PnFEATURE``/``$PnANALYTE``
    (``fcs32_keywords``) instead of the style's version.
    """
    gen = generator()
    names, s = gen.spill_listing(style, *gen.spillover(style, tube))
    kw = {
        "$CYT": style.cytometer,
        "$TIMESTEP": f"{style.timestep:g}",
        style.spill_keyword: gen.spill_text(names, s),
        **(extra or {}),
    }
    if fcs32:
        kw.update(gen.fcs32_keywords(style, tube))
    gen.write_fcs(
        path, res.events, res.pnn, res.pns, kw, "FCS3.2" if fcs32 else style.version,
        style.byteorder, style.datatype, style.range,
    )  # fmt: skip
    return path


def placed(path: Path, kind: str) -> tuple[Any, dict[str, int], Any, dict[str, float]]:
    """(sample, marker index, spillover, ranges) of an FCS file through nkflow's reader."""
    from nkflow.fcs import compensation, io, panel

    s = io.read_fcs(path)
    pnl = panel.load_panel(ROOT / "config" / "panels" / f"{kind}_v1.yaml")
    r = panel.resolve(pnl, s)
    mi = {
        m: r.index_for(m) for m in pnl.markers if r.index_for(m) is not None and m not in r.missing
    }
    return (
        s,
        mi,
        compensation.spillover_for(s),
        {m: float(s.channels[i].pnr) for m, i in mi.items()},
    )


def labels_as_names(codes: np.ndarray) -> np.ndarray:
    """Per-event label names of a generated tube."""
    gen = generator()
    return np.array([gen.LABEL_CODES[int(c)][0] for c in codes])
