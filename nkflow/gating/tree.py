"""Gate trees: the YAML model, its validation, and the population hierarchy.

Contract
--------
A :class:`GateTree` is an immutable, validated description of a gating hierarchy, built from the
YAML format documented in ``docs/DEVELOPING.md`` (``load_tree`` / ``tree_from_dict``) or from
Gating-ML / FlowJo (:mod:`nkflow.gating.gatingml`, :mod:`nkflow.gating.flowjo`).
``tree_to_dict`` gives back a YAML-ready mapping; ``tree_from_dict(tree_to_dict(t)) == t``.

Gates refer to *markers* (resolved to event columns by the caller through the panel), never to
column positions. Each gate defines one population named by its ``id``, except a quadrant gate,
which defines one population per quadrant id. Population ids are unique in a tree.

Every configuration defect raises :class:`~nkflow.errors.ConfigError` naming the file, the gate
and the field, what was found and what was expected.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nkflow import transforms as tf
from nkflow.errors import ConfigError

logger = logging.getLogger(__name__)

GATE_TYPES = ("rectangle", "range", "polygon", "ellipse", "quadrant", "boolean", "threshold")
AUTO_METHODS = ("valley", "gmm", "control")


@dataclass(frozen=True)
class Dim:
    """One gate dimension.

    Attributes
    ----------
    marker
        Marker name (panel key). For a ratio dimension, the id of the ratio transform.
    transform
        Id of a transform in ``GateTree.transforms`` or None (raw values).
    compensation
        None (uncompensated), ``"FCS"`` (the spillover given to ``gate_sample``) or the id of a
        matrix in ``GateTree.matrices``.
    min, max
        Rectangle bounds in transformed units, ``min <= v < max`` (either may be None).
    dividers
        Quadrant divider positions in transformed units.
    ratio
        True when ``marker`` names a ratio transform (a derived dimension).
    """

    marker: str
    transform: str | None = None
    compensation: str | None = None
    min: float | None = None
    max: float | None = None
    dividers: tuple[float, ...] = ()
    ratio: bool = False


@dataclass(frozen=True)
class AutoSpec:
    """Data-driven threshold settings of a ``threshold`` gate."""

    method: str
    bounds: tuple[float, float]
    default: float | None = None
    allow_fallback: bool = False
    random_state: int = 0
    side: str = "above"
    control_percentile: float = 99.5


@dataclass(frozen=True)
class Gate:
    """One gate of the tree (see ``docs/DEVELOPING.md`` for the YAML keys)."""

    id: str
    type: str
    parent: str | None
    dims: tuple[Dim, ...] = ()
    vertices: tuple[tuple[float, ...], ...] = ()
    mean: tuple[float, ...] = ()
    covariance: tuple[tuple[float, ...], ...] = ()
    distance_square: float | None = None
    complement: bool = False
    op: str | None = None
    of: tuple[tuple[str, bool], ...] = ()  # (population, complement)
    quadrants: tuple[tuple[str, tuple[tuple[float | None, float | None], ...]], ...] = ()
    auto: AutoSpec | None = None

    def population_ids(self) -> tuple[str, ...]:
        """Populations this gate defines (its id, or its quadrant ids)."""
        if self.type == "quadrant":
            return tuple(q for q, _ in self.quadrants)
        return (self.id,)


@dataclass(frozen=True)
class Population:
    """A named population: the gate that defines it and its parent population."""

    id: str
    parent: str | None
    gate: str


@dataclass(frozen=True)
class Matrix:
    """A spillover matrix declared in the tree (Gating-ML ``spectrumMatrix``)."""

    id: str
    fluorochromes: tuple[str, ...]
    detectors: tuple[str, ...]
    matrix: tuple[tuple[float, ...], ...]


@dataclass(frozen=True)
class GateTree:
    """A validated gate tree."""

    name: str
    panel: str | None
    transforms: dict[str, tf.Transform] = field(default_factory=dict, hash=False)
    gates: tuple[Gate, ...] = ()
    matrices: dict[str, Matrix] = field(default_factory=dict, hash=False)
    source: str = "<memory>"

    @property
    def populations(self) -> tuple[str, ...]:
        """Population ids in evaluation order."""
        return tuple(p for g in self.gates for p in g.population_ids())

    def population(self, pop_id: str) -> Population:
        """Return the :class:`Population` named ``pop_id``.

        Raises
        ------
        GatingError
            ``pop_id`` is not a population of this tree.
        """
        for g in self.gates:
            if pop_id in g.population_ids():
                return Population(id=pop_id, parent=g.parent, gate=g.id)
        from nkflow.errors import GatingError

        raise GatingError(
            f"{self.source}: population '{pop_id}' is not defined in gate tree '{self.name}'; "
            f"known populations: {', '.join(self.populations)}"
        )

    def gate(self, gate_id: str) -> Gate:
        """Return the gate with id ``gate_id`` (KeyError if absent)."""
        for g in self.gates:
            if g.id == gate_id:
                return g
        raise KeyError(gate_id)

    def gate_markers(self, gate: Gate) -> tuple[str, ...]:
        """Markers (event columns) a gate reads, ratio dimensions expanded."""
        out: list[str] = []
        for d in gate.dims:
            if d.ratio:
                r = self.transforms[d.marker]
                assert isinstance(r, tf.RatioTransform)
                out += [r.numerator, r.denominator]
            else:
                out.append(d.marker)
        return tuple(dict.fromkeys(out))

    def markers(self) -> tuple[str, ...]:
        """All markers the tree reads, in first-use order."""
        out: list[str] = []
        for g in self.gates:
            out += self.gate_markers(g)
        return tuple(dict.fromkeys(out))

    def children(self, pop_id: str | None) -> tuple[str, ...]:
        """Populations whose parent is ``pop_id`` (None: root populations)."""
        return tuple(p for g in self.gates if g.parent == pop_id for p in g.population_ids())


# ----------------------------------------------------------------------------- YAML loading


def load_tree(path: str | Path) -> GateTree:
    """Load and validate a gate-tree YAML file.

    Raises
    ------
    ConfigError
        The file is missing, is not YAML, or any gate is invalid (the message names the file
        and the gate).
    """
    import yaml

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read gate tree ({exc.strerror}); check the path") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML ({exc}); fix the syntax") from exc
    return tree_from_dict(data, source=str(p))


def write_tree(tree: GateTree, path: str | Path) -> None:
    """Write ``tree`` as gate-tree YAML (``load_tree`` reads it back to an equal tree)."""
    import yaml

    text = yaml.safe_dump(tree_to_dict(tree), sort_keys=False, default_flow_style=None)
    Path(path).write_text(f"# gate tree '{tree.name}' (from {tree.source})\n{text}", "utf-8")


def _f(where: str, key: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ConfigError(f"{where}: '{key}' must be a number, found {v!r}")
    return float(v)


def _opt(where: str, key: str, v: Any) -> float | None:
    return None if v is None else _f(where, key, v)


def _dim(where: str, d: Any, gtype: str, transforms: dict[str, tf.Transform]) -> Dim:
    if not isinstance(d, dict):
        raise ConfigError(f"{where}: each dim must be a mapping with 'marker', found {d!r}")
    allowed = {"marker", "ratio", "transform", "compensated", "compensation", "min", "max"}
    allowed |= {"divider", "dividers"}
    unknown = sorted(set(d) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown dim key(s) {unknown}; allowed: {sorted(allowed)}")
    ratio = "ratio" in d
    marker = d.get("ratio") if ratio else d.get("marker")
    if not isinstance(marker, str) or not marker:
        raise ConfigError(f"{where}: dim needs a 'marker' (a panel marker name), found {marker!r}")
    xf = d.get("transform")
    if xf is not None and xf not in transforms:
        raise ConfigError(
            f"{where}: dim '{marker}' uses transform '{xf}', which is not declared under "
            f"'transforms:'; declared: {sorted(transforms) or 'none'}"
        )
    if xf is not None and isinstance(transforms[xf], tf.RatioTransform):
        raise ConfigError(
            f"{where}: dim '{marker}' uses ratio transform '{xf}' as a scale; "
            f"write it as {{ratio: {xf}}} instead"
        )
    if ratio and not isinstance(transforms.get(marker), tf.RatioTransform):
        raise ConfigError(f"{where}: 'ratio: {marker}' must name a ratio transform")
    comp: str | None
    if "compensation" in d:
        comp = d["compensation"]
        if comp in ("uncompensated", None):
            comp = None
    else:
        c = d.get("compensated")
        if c is None:
            # Default: fluorescence compensated, scatter/time not (by conventional names).
            up = marker.upper()
            scatter = up.startswith(("FSC", "SSC", "FS ", "SS ", "TIME")) or up == "TIME"
            comp = None if (scatter or ratio) else "FCS"
        elif isinstance(c, bool):
            comp = "FCS" if c else None
        else:
            raise ConfigError(f"{where}: dim '{marker}' 'compensated' must be true or false")
    dividers: tuple[float, ...] = ()
    if gtype == "quadrant":
        if "divider" in d:
            dividers = (_f(where, "divider", d["divider"]),)
        elif "dividers" in d and isinstance(d["dividers"], list) and d["dividers"]:
            dividers = tuple(_f(where, "dividers", v) for v in d["dividers"])
        else:
            raise ConfigError(f"{where}: quadrant dim '{marker}' needs 'divider: <value>'")
    return Dim(
        marker=marker,
        transform=xf,
        compensation=comp,
        min=_opt(where, "min", d.get("min")),
        max=_opt(where, "max", d.get("max")),
        dividers=dividers,
        ratio=ratio,
    )


def _gate(
    src: str, i: int, g: Any, transforms: dict[str, tf.Transform], seen: dict[str, str]
) -> Gate:
    if not isinstance(g, dict):
        raise ConfigError(f"{src}: gates[{i}] must be a mapping, found {g!r}")
    gid = g.get("id")
    if not isinstance(gid, str) or not gid:
        raise ConfigError(f"{src}: gates[{i}] has no 'id' (a population name such as 'nk')")
    where = f"{src}: gate '{gid}'"
    gtype = g.get("type")
    if gtype not in GATE_TYPES:
        raise ConfigError(f"{where}: unknown type {gtype!r}; expected one of {list(GATE_TYPES)}")
    if gtype == "range":
        gtype = "rectangle"
    parent = g.get("parent")
    if parent is not None and parent not in seen:
        raise ConfigError(
            f"{where}: parent '{parent}' is not a population defined earlier in the file; "
            "list parents before children"
        )
    dims_raw = g.get("dims", [])
    if gtype != "boolean" and (not isinstance(dims_raw, list) or not dims_raw):
        raise ConfigError(f"{where}: 'dims' must be a non-empty list of {{marker: ...}}")
    dims = tuple(_dim(where, d, gtype, transforms) for d in (dims_raw or []))
    kw: dict[str, Any] = {"id": gid, "type": gtype, "parent": parent, "dims": dims}
    kw["complement"] = bool(g.get("complement", False))
    if gtype == "rectangle":
        for d in dims:
            if d.min is None and d.max is None:
                raise ConfigError(f"{where}: dim '{d.marker}' needs 'min' and/or 'max'")
            if d.min is not None and d.max is not None and d.min >= d.max:
                raise ConfigError(
                    f"{where}: dim '{d.marker}' has min {d.min:g} >= max {d.max:g}; "
                    "min must be below max"
                )
    elif gtype == "polygon":
        v = g.get("vertices")
        if len(dims) != 2 or not isinstance(v, list) or len(v) < 3:
            raise ConfigError(f"{where}: a polygon needs 2 dims and at least 3 vertices [x, y]")
        try:
            verts = tuple((_f(where, "vertices", a), _f(where, "vertices", b)) for a, b in v)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{where}: vertices must be pairs [x, y], found {v!r}") from exc
        kw["vertices"] = verts
    elif gtype == "ellipse":
        mean, cov = g.get("mean"), g.get("covariance")
        n = len(dims)
        if n < 2 or not isinstance(mean, list) or len(mean) != n:
            raise ConfigError(f"{where}: an ellipse needs >= 2 dims and 'mean' with one per dim")
        if not isinstance(cov, list) or len(cov) != n or any(len(r) != n for r in cov):
            raise ConfigError(f"{where}: 'covariance' must be a {n}x{n} matrix")
        kw["mean"] = tuple(_f(where, "mean", x) for x in mean)
        kw["covariance"] = tuple(tuple(_f(where, "covariance", x) for x in r) for r in cov)
        kw["distance_square"] = _f(where, "distance_square", g.get("distance_square"))
    elif gtype == "quadrant":
        quads = g.get("quadrants")
        if not isinstance(quads, dict) or not quads:
            raise ConfigError(f"{where}: a quadrant gate needs 'quadrants: {{name: [hi, lo]}}'")
        out = []
        for q, spec in quads.items():
            if not isinstance(spec, list) or len(spec) != len(dims):
                raise ConfigError(
                    f"{where}: quadrant '{q}' must list one of hi/lo per dim ({len(dims)})"
                )
            rng: list[tuple[float | None, float | None]] = []
            for d, s in zip(dims, spec, strict=True):
                if s == "hi" and len(d.dividers) == 1:
                    rng.append((d.dividers[0], None))
                elif s == "lo" and len(d.dividers) == 1:
                    rng.append((None, d.dividers[0]))
                elif isinstance(s, list) and len(s) == 2:
                    rng.append((_opt(where, "quadrant", s[0]), _opt(where, "quadrant", s[1])))
                else:
                    raise ConfigError(
                        f"{where}: quadrant '{q}' dim '{d.marker}': expected 'hi', 'lo' or "
                        f"[min, max], found {s!r}"
                    )
            out.append((str(q), tuple(rng)))
        kw["quadrants"] = tuple(out)
    elif gtype == "boolean":
        op = g.get("op")
        refs = g.get("of")
        if op not in ("and", "or", "not"):
            raise ConfigError(f"{where}: boolean 'op' must be and, or or not; found {op!r}")
        if not isinstance(refs, list) or not refs:
            raise ConfigError(f"{where}: boolean 'of' must list populations")
        if op == "not" and len(refs) != 1:
            raise ConfigError(f"{where}: 'not' takes exactly one population, found {len(refs)}")
        if op != "not" and len(refs) < 2:
            raise ConfigError(f"{where}: '{op}' needs at least two populations")
        of = []
        for r in refs:
            comp = False
            if isinstance(r, dict):
                comp = bool(r.get("complement", False))
                r = r.get("population")
            if r not in seen:
                raise ConfigError(
                    f"{where}: boolean refers to '{r}', which is not a population defined "
                    "earlier in the file"
                )
            of.append((r, comp))
        kw["op"], kw["of"] = op, tuple(of)
    elif gtype == "threshold":
        if len(dims) != 1:
            raise ConfigError(f"{where}: a threshold gate has exactly one dim")
        method = g.get("method")
        if method not in AUTO_METHODS:
            raise ConfigError(
                f"{where}: 'method' must be one of {list(AUTO_METHODS)}, found {method!r}"
            )
        b = g.get("bounds")
        if not isinstance(b, list) or len(b) != 2:
            raise ConfigError(f"{where}: 'bounds' must be [low, high] in transformed units")
        lo, hi = _f(where, "bounds", b[0]), _f(where, "bounds", b[1])
        if lo >= hi:
            raise ConfigError(f"{where}: bounds low {lo:g} must be below high {hi:g}")
        default = _opt(where, "default", g.get("default"))
        allow = g.get("allow_fallback", False)
        if not isinstance(allow, bool):
            raise ConfigError(f"{where}: 'allow_fallback' must be true or false")
        if allow and default is None:
            raise ConfigError(f"{where}: allow_fallback is true but no 'default' threshold given")
        side = g.get("side", "above")
        if side not in ("above", "below"):
            raise ConfigError(f"{where}: 'side' must be 'above' or 'below', found {side!r}")
        rs = g.get("random_state", 0)
        if not isinstance(rs, int) or isinstance(rs, bool):
            raise ConfigError(f"{where}: 'random_state' must be an integer, found {rs!r}")
        kw["auto"] = AutoSpec(
            method=method,
            bounds=(lo, hi),
            default=default,
            allow_fallback=allow,
            random_state=rs,
            side=side,
            control_percentile=_f(where, "control_percentile", g.get("control_percentile", 99.5)),
        )
    gate = Gate(**kw)
    for pop in gate.population_ids():
        if pop in seen:
            raise ConfigError(
                f"{where}: population id '{pop}' is already defined by gate '{seen[pop]}'; "
                "population ids must be unique"
            )
        seen[pop] = gid
    return gate


def tree_from_dict(data: Any, source: str = "<memory>") -> GateTree:
    """Validate a gate-tree mapping (the parsed YAML) and build a :class:`GateTree`.

    Raises
    ------
    ConfigError
        Any structural problem; the message names ``source`` and the gate.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a gate tree must be a mapping with 'name' and 'gates'")
    unknown = sorted(
        set(data) - {"name", "panel", "transforms", "gates", "matrices", "description"}
    )
    if unknown:
        raise ConfigError(f"{source}: unknown top-level key(s) {unknown}")
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{source}: 'name' is required (e.g. name: nk_v1)")
    xforms_raw = data.get("transforms") or {}
    if not isinstance(xforms_raw, dict):
        raise ConfigError(f"{source}: 'transforms' must be a mapping id -> {{type: ...}}")
    transforms = {
        str(k): tf.from_dict(v, where=f"{source}: transforms.{k}") for k, v in xforms_raw.items()
    }
    matrices: dict[str, Matrix] = {}
    for mid, m in (data.get("matrices") or {}).items():
        try:
            mat = tuple(tuple(float(x) for x in row) for row in m["matrix"])
            matrices[str(mid)] = Matrix(
                id=str(mid),
                fluorochromes=tuple(m["fluorochromes"]),
                detectors=tuple(m["detectors"]),
                matrix=mat,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(
                f"{source}: matrices.{mid} needs fluorochromes, detectors and a numeric matrix"
            ) from exc
    gates_raw = data.get("gates")
    if not isinstance(gates_raw, list) or not gates_raw:
        raise ConfigError(f"{source}: 'gates' must be a non-empty list")
    seen: dict[str, str] = {}
    gates = tuple(_gate(source, i, g, transforms, seen) for i, g in enumerate(gates_raw))
    for g in gates:
        for d in g.dims:
            if d.compensation not in (None, "FCS") and d.compensation not in matrices:
                raise ConfigError(
                    f"{source}: gate '{g.id}' dim '{d.marker}' uses compensation "
                    f"'{d.compensation}', not declared under 'matrices:'"
                )
    return GateTree(
        name=name,
        panel=data.get("panel"),
        transforms=transforms,
        gates=gates,
        matrices=matrices,
        source=source,
    )


def _dim_to_dict(g: Gate, d: Dim) -> dict[str, Any]:
    out: dict[str, Any] = {("ratio" if d.ratio else "marker"): d.marker}
    if d.transform is not None:
        out["transform"] = d.transform
    if d.compensation in (None, "FCS"):
        out["compensated"] = d.compensation == "FCS"
    else:
        out["compensation"] = d.compensation
    if d.min is not None:
        out["min"] = d.min
    if d.max is not None:
        out["max"] = d.max
    if g.type == "quadrant":
        if len(d.dividers) == 1:
            out["divider"] = d.dividers[0]
        else:
            out["dividers"] = list(d.dividers)
    return out


def tree_to_dict(tree: GateTree) -> dict[str, Any]:
    """Return the YAML mapping of ``tree`` (``tree_from_dict`` gives the same tree back)."""
    gates = []
    for g in tree.gates:
        e: dict[str, Any] = {"id": g.id, "type": g.type, "parent": g.parent}
        if g.type != "boolean":
            e["dims"] = [_dim_to_dict(g, d) for d in g.dims]
        if g.complement:
            e["complement"] = True
        if g.type == "polygon":
            e["vertices"] = [list(v) for v in g.vertices]
        elif g.type == "ellipse":
            e["mean"] = list(g.mean)
            e["covariance"] = [list(r) for r in g.covariance]
            e["distance_square"] = g.distance_square
        elif g.type == "quadrant":
            e["quadrants"] = {q: [list(r) for r in rng] for q, rng in g.quadrants}
        elif g.type == "boolean":
            e["op"] = g.op
            e["of"] = [{"population": p, "complement": True} if c else p for p, c in g.of]
        elif g.type == "threshold" and g.auto is not None:
            a = g.auto
            e.update(
                method=a.method,
                bounds=list(a.bounds),
                default=a.default,
                allow_fallback=a.allow_fallback,
                random_state=a.random_state,
                side=a.side,
                control_percentile=a.control_percentile,
            )
        gates.append(e)
    out: dict[str, Any] = {"name": tree.name, "panel": tree.panel}
    out["transforms"] = {k: v.to_dict() for k, v in tree.transforms.items()}
    if tree.matrices:
        out["matrices"] = {
            k: {
                "fluorochromes": list(m.fluorochromes),
                "detectors": list(m.detectors),
                "matrix": [list(r) for r in m.matrix],
            }
            for k, m in tree.matrices.items()
        }
    out["gates"] = gates
    return out
