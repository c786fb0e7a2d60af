"""A reviewer's correction of one gate of one tube, as the gating engine applies it.

Contract
--------
A :class:`GateOverride` replaces boundaries of one gate *after* they were fitted (or, for a
declared gate, instead of the declared value): rectangle bounds by ``(marker, side)`` in the
gate's transformed units, or a polygon's vertices. :func:`gate_sample` applies it where the
boundary is fixed for the tube, so that

* the fit is still tried and recorded beside the override (``stats.fitted``), and a fit that
  fails on a bound the override sets is not a failure: the reviewer has set the boundary;
* a later bound declared ``same_as`` the overridden one follows the override (it is the same
  boundary);
* descendants are fitted and evaluated on the corrected parent, exactly as in a full run.

When the fit now lands elsewhere than the ``old`` value the reviewer saw, the engine flags
``override_stale`` (the data under the correction changed). :func:`check_override` validates an
override against a tree (the gate exists, is a rectangle or polygon, the bounds exist) and
raises :class:`~nkflow.errors.GatingError` naming the override's ``source``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nkflow.errors import GatingError
from nkflow.gating.tree import GateTree

SIDES = ("min", "max")
#: |fitted - old| above this (gate units, 0-1 scales) marks an override as stale
STALE_TOLERANCE = 1e-6


@dataclass(frozen=True)
class GateOverride:
    """New boundaries of one gate (and the old ones the reviewer saw).

    Attributes
    ----------
    gate
        Gate id.
    bounds
        ``{(marker, side): new value}`` for a rectangle gate (side ``min`` or ``max``).
    old_bounds
        ``{(marker, side): old value}`` as shown to the reviewer (None when unknown).
    vertices, old_vertices
        New and old polygon vertices (gate units), for a polygon gate.
    source
        Where the override came from (a file path), for messages.
    info
        What provenance records beside it (author, time, reason, sha256 of the file).
    """

    gate: str
    bounds: dict[tuple[str, str], float] = field(default_factory=dict)
    old_bounds: dict[tuple[str, str], float | None] = field(default_factory=dict)
    vertices: tuple[tuple[float, ...], ...] | None = None
    old_vertices: tuple[tuple[float, ...], ...] | None = None
    source: str = ""
    info: dict[str, Any] = field(default_factory=dict)


def check_override(tree: GateTree, ov: GateOverride) -> None:
    """Raise unless ``ov`` names a gate of ``tree`` and boundaries that gate has.

    Raises
    ------
    GatingError
        Unknown gate, a gate type that cannot be overridden, a bound or marker the gate does
        not have, vertices on a non-polygon gate, or an empty override.
    """
    where = f"{ov.source or 'override'}: gate {ov.gate!r}"
    try:
        g = tree.gate(ov.gate)
    except (KeyError, GatingError, ValueError):
        raise GatingError(
            f"{where} is not in gate tree '{tree.name}'; gates: "
            f"{', '.join(x.id for x in tree.gates)}; fix the file name or the 'gate' field"
        ) from None
    if g.type not in ("rectangle", "polygon"):
        raise GatingError(
            f"{where} is a {g.type} gate; only rectangle bounds and polygon vertices can be "
            "overridden (correct the tree, or move a rectangle/polygon gate)"
        )
    if not ov.bounds and ov.vertices is None:
        raise GatingError(f"{where}: the override sets no boundary (give 'bounds' or 'vertices')")
    if ov.vertices is not None and g.type != "polygon":
        raise GatingError(f"{where}: 'vertices' given for a {g.type} gate; use 'bounds'")
    if ov.bounds and g.type != "rectangle":
        raise GatingError(f"{where}: 'bounds' given for a {g.type} gate; use 'vertices'")
    if ov.vertices is not None and len(ov.vertices) < 3:
        raise GatingError(f"{where}: a polygon needs at least 3 vertices, found {len(ov.vertices)}")
    for marker, side in ov.bounds:
        dim = next((d for d in g.dims if d.marker == marker), None)
        if dim is None:
            raise GatingError(
                f"{where}: marker {marker!r} is not a dimension of the gate "
                f"({', '.join(d.marker for d in g.dims)})"
            )
        if side not in SIDES:
            raise GatingError(f"{where}: side {side!r} of {marker} is not min or max")
        declared = getattr(dim, side) is not None or getattr(dim, f"fit_{side}") is not None
        if not declared:
            raise GatingError(
                f"{where}: {marker} has no {side} bound in the tree (an open side cannot be "
                "overridden; the gate would change shape)"
            )
