"""Interchange with FlowKit and Gating-ML 2.0.

Contract
--------
* ``to_flowkit(tree, channel_names=None, thresholds=None) -> flowkit.GatingStrategy``: the same
  gates, transforms and compensation in FlowKit's model (used for the per-event equivalence
  tests and for Gating-ML export). Dimension ids are the markers, or
  ``channel_names[marker]`` when given (FlowKit resolves them against ``$PnN`` then ``$PnS``).
* ``from_flowkit(strategy, name=...) -> GateTree``: the reverse; dimension ids become markers.
* ``to_gatingml(tree, path)`` writes standard Gating-ML 2.0 (FlowKit's writer) and embeds the
  nkflow YAML mapping in ``data-type:custom_info`` so that
  ``from_gatingml(to_gatingml(tree))`` gives back exactly the same tree (markers, data-driven
  settings and cofactor arcsinh included). Files without that block (any other tool's
  Gating-ML) are read through FlowKit's parser.

FlowKit is imported inside the functions only.
"""

from __future__ import annotations

import json
import logging
import math
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from nkflow.errors import ConfigError, GatingError
from nkflow.fcs import transforms as tf
from nkflow.gating.tree import Dim, Gate, GateTree, Matrix, tree_from_dict, tree_to_dict

logger = logging.getLogger(__name__)

_NKFLOW_TAG = "nkflow_tree"
_DT_NS = "http://www.isac-net.org/std/Gating-ML/v2.0/datatypes"


# ----------------------------------------------------------------------------- to FlowKit


def _gml(*names: str) -> dict[str, str]:
    """Gating-ML parameters: nkflow's field ``t`` is FlowKit's ``param_t``."""
    return {n: f"param_{n}" for n in names}


#: nkflow transform -> (FlowKit transform class, {nkflow field: FlowKit argument, also its
#: attribute}), for both directions; ArcsinhTransform and RatioTransform are converted apart
_FK_TRANSFORMS: dict[type[tf.Transform], tuple[str, dict[str, str]]] = {
    tf.LinearTransform: ("LinearTransform", _gml("t", "a")),
    tf.LogTransform: ("LogTransform", _gml("t", "m")),
    tf.LogicleTransform: ("LogicleTransform", _gml("t", "w", "m", "a")),
    tf.HyperlogTransform: ("HyperlogTransform", _gml("t", "w", "m", "a")),
    tf.AsinhTransform: ("AsinhTransform", _gml("t", "m", "a")),
    tf.FlowJoBiexTransform: (
        "WSPBiexTransform",
        {"neg": "negative", "width": "width", "pos": "positive", "max_value": "max_value"},
    ),
    tf.FlowJoLogTransform: ("WSPLogTransform", {"offset": "offset", "decades": "decades"}),
}


def _fk_transform(t: tf.Transform) -> Any:
    from flowkit import transforms as fkt

    if isinstance(t, tf.ArcsinhTransform):
        # fasinh with M = 1/ln(10), A = 0, T = c*sinh(1) is arcsinh(x / c) exactly in math.
        return fkt.AsinhTransform(
            param_t=t.cofactor * math.sinh(1.0), param_m=1.0 / math.log(10.0), param_a=0.0
        )
    if type(t) not in _FK_TRANSFORMS:
        raise GatingError(f"transform {t!r} has no FlowKit equivalent")
    name, params = _FK_TRANSFORMS[type(t)]
    return getattr(fkt, name)(**{fk: getattr(t, nk) for nk, fk in params.items()})


def _node_paths(tree: GateTree) -> tuple[dict[str, tuple[str, ...]], dict[str, tuple[str, ...]]]:
    """FlowKit gate path of each gate and of each population's own node."""
    gate_path: dict[str, tuple[str, ...]] = {}
    node: dict[str, tuple[str, ...]] = {}
    for g in tree.gates:
        gate_path[g.id] = ("root",) if g.parent is None else node[g.parent]
        if g.type == "quadrant":
            for q, _ in g.quadrants:
                node[q] = (*gate_path[g.id], g.id, q)
        else:
            node[g.id] = (*gate_path[g.id], g.id)
    return gate_path, node


def to_flowkit(
    tree: GateTree,
    channel_names: dict[str, str] | None = None,
    thresholds: dict[str, float] | None = None,
    spill: Any = None,
) -> Any:
    """Build the equivalent ``flowkit.GatingStrategy``.

    Parameters
    ----------
    channel_names
        Marker -> channel label (``$PnN`` or ``$PnS``) for FlowKit's dimension ids; markers not
        in the mapping are used as they are.
    thresholds
        Threshold per data-driven gate (e.g. ``GatingResult.thresholds``); missing ones use the
        gate's ``default``.
    spill
        A :class:`nkflow.fcs.compensation.Spillover` (``channels``, ``matrix``): when given, dims
        with ``compensated: true`` use it (as matrix ``nkflow_spill``) instead of FlowKit's own
        reading of the file's spillover keyword.

    Raises
    ------
    GatingError
        A data-driven gate has neither a threshold nor a default.
    """
    import flowkit as fk
    import numpy as np

    names = channel_names or {}
    thresholds = thresholds or {}

    def ch(m: str) -> str:
        return names.get(m, m)

    gs = fk.GatingStrategy()
    for tid, t in tree.transforms.items():
        if isinstance(t, tf.RatioTransform):
            gs.add_transform(
                tid,
                fk.transforms.RatioTransform([ch(t.numerator), ch(t.denominator)], t.a, t.b, t.c),
            )
        else:
            gs.add_transform(tid, _fk_transform(t))
    for mid, m in tree.matrices.items():
        gs.add_comp_matrix(
            mid,
            fk.Matrix(np.asarray(m.matrix), list(m.detectors), list(m.fluorochromes)),
        )
    fcs_ref = "FCS"
    if spill is not None:
        fcs_ref = "nkflow_spill"
        chans = list(spill.channels)
        gs.add_comp_matrix(fcs_ref, fk.Matrix(np.asarray(spill.matrix), chans, chans))
    gate_path, _ = _node_paths(tree)

    def comp(d: Dim) -> str:
        if d.compensation == "FCS":
            return fcs_ref
        return "uncompensated" if d.compensation is None else d.compensation

    def dim(d: Dim, lo: float | None, hi: float | None) -> Any:
        if d.ratio:
            return fk.RatioDimension(d.marker, comp(d), d.transform, range_min=lo, range_max=hi)
        return fk.Dimension(ch(d.marker), comp(d), d.transform, range_min=lo, range_max=hi)

    G = fk.gates
    for g in tree.gates:
        if g.type == "rectangle":
            gate = G.RectangleGate(g.id, [dim(d, d.min, d.max) for d in g.dims], g.complement)
        elif g.type == "threshold":
            assert g.auto is not None
            cut = thresholds.get(g.id, g.auto.default)
            if cut is None:
                raise GatingError(
                    f"gate '{g.id}' is data-driven and has no threshold: pass "
                    "thresholds=res.thresholds or declare a default"
                )
            lo, hi = (cut, None) if g.auto.side == "above" else (None, cut)
            gate = G.RectangleGate(g.id, [dim(g.dims[0], lo, hi)])
        elif g.type == "polygon":
            gate = G.PolygonGate(
                g.id,
                [dim(d, None, None) for d in g.dims],
                [list(v) for v in g.vertices],
                g.complement,
            )
        elif g.type == "ellipse":
            gate = G.EllipsoidGate(
                g.id,
                [dim(d, None, None) for d in g.dims],
                list(g.mean),
                [list(r) for r in g.covariance],
                g.distance_square,
            )
        elif g.type == "quadrant":
            divs = [
                fk.QuadrantDivider(
                    f"{g.id}__d{i}", ch(d.marker), comp(d), list(d.dividers), d.transform
                )
                for i, d in enumerate(g.dims)
            ]
            quads = []
            for q, ranges in g.quadrants:
                drefs = [f"{g.id}__d{i}" for i, r in enumerate(ranges) if r != (None, None)]
                rng = [list(r) for r in ranges if r != (None, None)]
                quads.append(G.Quadrant(q, drefs, rng))
            gate = G.QuadrantGate(g.id, divs, quads)
        elif g.type == "boolean":
            refs: list[dict[str, Any]] = []
            for r, c in g.of:
                owner = tree.population(r).gate
                path = gate_path[owner] + ((owner,) if owner != r else ())
                refs.append({"ref": r, "path": path, "complement": c})
            gate = G.BooleanGate(g.id, g.op, refs)
        else:  # pragma: no cover
            raise GatingError(f"gate '{g.id}': unsupported type {g.type}")
        gs.add_gate(gate, gate_path[g.id])
    return gs


# ----------------------------------------------------------------------------- from FlowKit


def _from_fk_transform(t: Any, where: str) -> tf.Transform:
    from flowkit import transforms as fkt

    if isinstance(t, fkt.RatioTransform):
        return tf.RatioTransform(
            numerator=t.dimensions[0],
            denominator=t.dimensions[1],
            a=float(t.param_a),
            b=float(t.param_b),
            c=float(t.param_c),
        )
    for cls, (name, params) in _FK_TRANSFORMS.items():
        if isinstance(t, getattr(fkt, name)):
            return cls(**{nk: float(getattr(t, fk)) for nk, fk in params.items()})
    raise ConfigError(f"{where}: transform {t!r} is not supported by nkflow")


def from_flowkit(
    strategy: Any,
    name: str = "imported",
    source: str = "<flowkit>",
    sample_id: str | None = None,
    transforms: dict[str, Any] | None = None,
) -> GateTree:
    """Convert a ``flowkit.GatingStrategy`` into a :class:`GateTree`.

    Parameters
    ----------
    name, source
        Tree name and the file it came from (for messages).
    sample_id
        Sample whose custom gates to use (FlowJo workspaces).
    transforms
        Extra FlowKit transforms by id (FlowJo: per-channel transforms).

    Raises
    ------
    ConfigError
        Duplicate gate names at different paths, or an unsupported gate/transform.
    """
    import flowkit as fk
    import networkx as nx

    G = fk.gates
    xforms: dict[str, tf.Transform] = {}
    for tid, t in {**strategy.transformations, **(transforms or {})}.items():
        xforms[str(tid)] = _from_fk_transform(t, f"{source}: transform '{tid}'")
    matrices: dict[str, Matrix] = {}
    for mid, m in strategy.comp_matrices.items():
        matrices[str(mid)] = Matrix(
            id=str(mid),
            fluorochromes=tuple(m.fluorochromes),
            detectors=tuple(m.detectors),
            matrix=tuple(tuple(float(x) for x in row) for row in m.matrix),
        )
    order = [n for n in nx.algorithms.topological_sort(strategy._dag) if n != ("root",)]
    gates: list[Gate] = []
    seen: dict[str, tuple[str, ...]] = {}

    def comp(ref: Any) -> str | None:
        c = None if ref in (None, "uncompensated") else str(ref)
        if c not in (None, "FCS") and c not in matrices:
            raise ConfigError(f"{source}: compensation '{c}' is referenced but not defined")
        return c

    for item in order:
        gid, path = item[-1], item[:-1]
        try:
            gate = strategy.get_gate(gid, path, sample_id=sample_id)
        except fk.exceptions.QuadrantReferenceError:
            continue
        if gid in seen:
            raise ConfigError(
                f"{source}: gate name '{gid}' is used at two paths ({'/'.join(seen[gid])} and "
                f"{'/'.join(path)}); nkflow needs unique population names: rename one"
            )
        seen[gid] = path
        parent = None if path[-1] == "root" else path[-1]
        dims: list[Dim] = []
        kw: dict[str, Any] = {"id": gid, "parent": parent}
        where = f"{source}: gate '{gid}'"

        def dim(d: Any, where: str = where) -> Dim:
            c = comp(d.compensation_ref)
            xf = d.transformation_ref
            if xf is not None and xf not in xforms:
                raise ConfigError(f"{where}: transform '{xf}' is not defined")
            ratio = isinstance(d, fk.RatioDimension)
            marker = d.ratio_ref if ratio else d.id
            return Dim(marker, transform=xf, compensation=c, min=d.min, max=d.max, ratio=ratio)

        if isinstance(gate, G.RectangleGate):
            kw.update(
                type="rectangle",
                dims=tuple(dim(d) for d in gate.dimensions),
                complement=bool(gate.use_complement),
            )
        elif isinstance(gate, G.PolygonGate):
            kw.update(
                type="polygon",
                dims=tuple(dim(d) for d in gate.dimensions),
                vertices=tuple(tuple(float(x) for x in v) for v in gate.vertices),
                complement=bool(gate.use_complement),
            )
        elif isinstance(gate, G.EllipsoidGate):
            kw.update(
                type="ellipse",
                dims=tuple(dim(d) for d in gate.dimensions),
                mean=tuple(float(x) for x in gate.coordinates),
                covariance=tuple(tuple(float(x) for x in r) for r in gate.covariance_matrix),
                distance_square=float(gate.distance_square),
            )
        elif isinstance(gate, G.QuadrantGate):
            for div in gate.dimensions:
                dims.append(
                    Dim(
                        marker=div.dimension_ref,
                        transform=div.transformation_ref,
                        compensation=comp(div.compensation_ref),
                        dividers=tuple(float(v) for v in div.values),
                    )
                )
            quads = []
            for q_id, q in gate.quadrants.items():
                rng = []
                for div in gate.dimensions:
                    if div.id in q.divider_refs:
                        lo, hi = q.get_divider_range(div.id)
                        rng.append(
                            (None if lo is None else float(lo), None if hi is None else float(hi))
                        )
                    else:
                        rng.append((None, None))
                quads.append((str(q_id), tuple(rng)))
                if q_id in seen:
                    raise ConfigError(f"{where}: quadrant '{q_id}' duplicates a population name")
                seen[q_id] = path
            kw.update(type="quadrant", dims=tuple(dims), quadrants=tuple(quads))
        elif isinstance(gate, G.BooleanGate):
            kw.update(
                type="boolean",
                op=gate.type,
                of=tuple((r["ref"], bool(r["complement"])) for r in gate.gate_refs),
            )
        else:
            raise ConfigError(f"{where}: gate type {type(gate).__name__} is not supported")
        gates.append(Gate(**kw))
    tree = GateTree(
        name=name,
        panel=None,
        transforms=xforms,
        gates=tuple(gates),
        matrices=matrices,
        source=source,
    )
    # Re-validate through the YAML path so imported trees obey the same rules.
    return tree_from_dict(tree_to_dict(tree), source=source)


# ----------------------------------------------------------------------------- Gating-ML files


def to_gatingml(
    tree: GateTree, path: str | Path, thresholds: dict[str, float] | None = None
) -> None:
    """Write ``tree`` as a Gating-ML 2.0 file (nkflow's own mapping embedded for round trips)."""
    import io

    import flowkit as fk

    gs = to_flowkit(tree, thresholds=thresholds)
    buf = io.BytesIO()
    fk.export_gatingml(gs, buf)
    ET.register_namespace("gating", "http://www.isac-net.org/std/Gating-ML/v2.0/gating")
    ET.register_namespace(
        "transforms", "http://www.isac-net.org/std/Gating-ML/v2.0/transformations"
    )
    ET.register_namespace("data-type", _DT_NS)
    root = ET.fromstring(buf.getvalue())
    info = ET.Element(f"{{{_DT_NS}}}custom_info")
    el = ET.SubElement(info, _NKFLOW_TAG)
    el.text = json.dumps(tree_to_dict(tree))
    root.insert(0, info)
    Path(path).write_bytes(ET.tostring(root, xml_declaration=True, encoding="utf-8"))


def from_gatingml(path: str | Path, name: str | None = None) -> GateTree:
    """Read a Gating-ML 2.0 file into a :class:`GateTree`.

    Raises
    ------
    ConfigError
        The file cannot be read or parsed, or uses something nkflow does not support.
    """
    import flowkit as fk

    p = Path(path)
    try:
        root = ET.parse(p).getroot()
    except (OSError, ET.ParseError) as exc:
        raise ConfigError(
            f"{p}: cannot read Gating-ML ({exc}); expected a Gating-ML 2.0 XML file"
        ) from exc
    for info in root.findall(f"{{{_DT_NS}}}custom_info"):
        el = info.find(_NKFLOW_TAG)
        if el is not None and el.text:
            return tree_from_dict(json.loads(el.text), source=str(p))
    try:
        gs = fk.parse_gating_xml(str(p))
    except Exception as exc:  # FlowKit raises many types for bad XML
        raise ConfigError(f"{p}: FlowKit could not parse this Gating-ML file: {exc}") from exc
    return from_flowkit(gs, name=name or p.stem, source=str(p))
