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
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from nkflow.errors import ConfigError, GatingError
from nkflow.fcs import transforms as tf

logger = logging.getLogger(__name__)

GATE_TYPES = ("rectangle", "range", "polygon", "ellipse", "quadrant", "boolean", "threshold")
AUTO_METHODS = ("valley", "gmm", "control")
#: methods of a fitted rectangle bound (``min: {fit: valley, ...}``), see :mod:`nkflow.gating.fit`
BOUND_METHODS = ("valley", "tail")
#: methods of a fitted polygon / ellipse gate (``fit: {method: ...}``)
SHAPE_METHODS = {"polygon": ("singlet_band",), "ellipse": ("scatter_cluster",)}
#: scale parameter that a transform may take from the file (``t: range`` = the channel's $PnR)
FROM_FILE = "range"
#: the placeholder top of scale of a ``t: range`` transform before a file is known (2^18)
DEFAULT_RANGE = 262144.0


@dataclass(frozen=True)
class FitBound:
    """A rectangle bound fitted to each tube (``min: {fit: valley, bounds: [lo, hi]}``).

    Attributes
    ----------
    method
        ``valley`` (deepest density minimum between two modes inside ``bounds``) or ``tail``
        (the main peak plus ``k`` robust standard deviations, on the side of the bound).
    bounds
        Where the boundary may fall, in transformed units; outside is a failed fit.
    fallback
        ``tail`` or None: used when no valley is found (one mode: the population is absent),
        recorded as such.
    k
        Standard deviations of the main peak for ``tail``.
    same_as
        Id of an earlier gate whose fitted bound on the same marker is reused (no fit here).
    """

    method: str = "valley"
    bounds: tuple[float, float] = (0.0, 1.0)
    fallback: str | None = None
    k: float = 3.0
    same_as: str | None = None
    #: population to fit on instead of the gate's parent (an ancestor where both modes are
    #: present: FoxP3 on all CD4 cells, not on the CD25hi CD127lo cells that are nearly all
    #: FoxP3+)
    on: str | None = None
    #: percentile of the FMO control tube's events (same population) that becomes the boundary
    #: when the sample sheet names an FMO tube for this marker; without one, ``method`` is used
    fmo_percentile: float | None = None
    #: which edge of the main peak ``tail`` takes: ``upper`` (default for a ``min`` bound: the
    #: gate keeps what lies above the main population) or ``lower`` (default for ``max``); a
    #: ``max`` bound that keeps the main population itself (live cells below the dead) says
    #: ``edge: upper``
    edge: str | None = None


@dataclass(frozen=True)
class ShapeFit:
    """A polygon or ellipse gate fitted to each tube (``fit: {method: ..., ...}``).

    ``params`` holds the method's declared arguments (bounds included), validated by
    :func:`nkflow.gating.fit.check_shape_params`.
    """

    method: str
    params: tuple[tuple[str, Any], ...] = ()


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
    fit_min: FitBound | None = None
    fit_max: FitBound | None = None


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
class Keeps:
    """``keeps_pct_of``: the share of a reference population a gate must keep.

    A second signal on the same cells: CD56dim NK cells are CD16+, so the nk gate must keep most
    of the live CD3- CD16+ cells; a CD56 cut between CD56dim and CD56bright keeps few of them.
    """

    population: str
    min_pct: float
    #: fewer reference events than this: not assessed (recorded), e.g. no NK at day 0
    min_events: int


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
    fit: ShapeFit | None = None
    #: plausible share of the parent, percent (low, high); outside is a QC failure
    plausible_pct: tuple[float, float] | None = None
    #: share of a reference population the gate must keep; less is a QC failure
    keeps: Keeps | None = None

    @property
    def fitted(self) -> bool:
        """True when some boundary of this gate is fitted to each tube."""
        return self.fit is not None or any(d.fit_min or d.fit_max for d in self.dims)

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
    #: ids of transforms whose top of scale ``t`` is each channel's ``$PnR`` (``t: range``);
    #: ``transforms`` holds them at t = 262144 until :meth:`for_ranges` places them on a file
    scaled: tuple[str, ...] = ()

    def for_ranges(self, ranges: Mapping[str, float]) -> GateTree:
        """The tree with every ``t: range`` transform set to the range of the channel it reads.

        Parameters
        ----------
        ranges
            Marker -> ``$PnR`` of its channel in this file.

        Returns
        -------
        GateTree
            ``self`` when no transform takes its scale from the file; otherwise a tree whose
            dims use transforms ``<id>@<range>`` (one per range met), with the same gates.
        """
        if not self.scaled:
            return self
        xforms = dict(self.transforms)
        gates = []
        for g in self.gates:
            dims = []
            for d in g.dims:
                if d.transform in self.scaled and not d.ratio:
                    r = float(ranges.get(d.marker, DEFAULT_RANGE))
                    tid = f"{d.transform}@{r:g}"
                    if tid not in xforms:
                        spec = {**self.transforms[d.transform].to_dict(), "t": r}
                        xforms[tid] = tf.from_dict(spec, where=f"{self.source}: {tid}")
                    d = replace(d, transform=tid)
                dims.append(d)
            gates.append(replace(g, dims=tuple(dims)))
        return replace(self, transforms=xforms, gates=tuple(gates), scaled=())

    def transform_of(self, d: Dim) -> tf.Transform | None:
        """The transform from ``d``'s channel values to its gate units; None for raw units."""
        return None if d.transform is None else self.transforms[d.transform]

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
    lo, fit_lo = _bound(f"{where} dim '{marker}'", "min", d.get("min"), gtype)
    hi, fit_hi = _bound(f"{where} dim '{marker}'", "max", d.get("max"), gtype)
    return Dim(
        marker=marker,
        transform=xf,
        compensation=comp,
        min=lo,
        max=hi,
        dividers=dividers,
        ratio=ratio,
        fit_min=fit_lo,
        fit_max=fit_hi,
    )


def _pair(where: str, key: str, v: Any) -> tuple[float, float]:
    if not isinstance(v, list) or len(v) != 2:
        raise ConfigError(f"{where}: '{key}' must be [low, high], found {v!r}")
    lo, hi = _f(where, key, v[0]), _f(where, key, v[1])
    if lo >= hi:
        raise ConfigError(f"{where}: '{key}' low {lo:g} must be below high {hi:g}")
    return lo, hi


def _bound(where: str, key: str, v: Any, gtype: str) -> tuple[float | None, FitBound | None]:
    """A rectangle bound: a number, or ``{fit: valley|tail, bounds: [lo, hi], ...}``."""
    if not isinstance(v, dict):
        return _opt(where, key, v), None
    if gtype != "rectangle":
        raise ConfigError(f"{where}: a fitted '{key}' is only allowed on rectangle gates")
    allowed = {"fit", "bounds", "fallback", "k", "same_as", "edge", "fit_on", "fmo_percentile"}
    unknown = sorted(set(v) - allowed)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {unknown} in '{key}'; allowed: {sorted(allowed)}"
        )
    if "same_as" in v:
        ref = v["same_as"]
        if not isinstance(ref, str) or set(v) != {"same_as"}:
            raise ConfigError(
                f"{where}: '{key}: {{same_as: <gate id>}}' takes a gate id and nothing else"
            )
        return None, FitBound(same_as=ref)
    method = v.get("fit")
    if method not in BOUND_METHODS:
        raise ConfigError(
            f"{where}: '{key}.fit' must be one of {list(BOUND_METHODS)}, found {method!r}"
        )
    fallback = v.get("fallback")
    if fallback not in (None, "tail") or (fallback and method == "tail"):
        raise ConfigError(
            f"{where}: '{key}.fallback' may only be 'tail' (for a valley fit), found {fallback!r}"
        )
    edge = v.get("edge")
    if edge not in (None, "upper", "lower"):
        raise ConfigError(f"{where}: '{key}.edge' must be 'upper' or 'lower', found {edge!r}")
    k = _f(where, f"{key}.k", v.get("k", 3.0))
    fmo = _opt(where, f"{key}.fmo_percentile", v.get("fmo_percentile"))
    if fmo is not None and not 50 <= fmo < 100:
        raise ConfigError(
            f"{where}: '{key}.fmo_percentile' must be at least 50 and below 100, found {fmo:g}"
        )
    if k <= 0:
        raise ConfigError(f"{where}: '{key}.k' must be > 0, found {k:g}")
    return None, FitBound(
        method=method,
        bounds=_pair(where, f"{key}.bounds", v.get("bounds")),
        fallback=fallback,
        k=k,
        edge=edge,
        on=v.get("fit_on"),
        fmo_percentile=fmo,
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
    fit = g.get("fit")
    if fit is not None:
        kw["fit"] = _shape_fit(where, gtype, fit, dims)
    key = "plausible_pct_of_parent"
    kw["plausible_pct"] = _pair(where, key, g[key]) if key in g else None
    if "keeps_pct_of" in g:
        kw["keeps"] = _keeps(where, g["keeps_pct_of"])
    if fit is None:  # a fitted polygon or ellipse takes its vertices / mean from each tube
        kw.update(_TYPE_FIELDS[gtype](where, g, dims, seen))
    gate = Gate(**kw)
    _register(where, gate, seen)
    return gate


def _keeps(where: str, v: Any) -> Keeps:
    key = "keeps_pct_of"
    if not isinstance(v, dict) or set(v) - {"population", "min_pct", "min_events"}:
        raise ConfigError(
            f"{where}: '{key}' must be {{population: <id>, min_pct: <0-100>, min_events: <n>}}, "
            f"found {v!r}"
        )
    pop, n = v.get("population"), v.get("min_events")
    pct = _f(where, f"{key}.min_pct", v.get("min_pct"))
    if not isinstance(pop, str) or not pop:
        raise ConfigError(f"{where}: '{key}.population' must be a population id, found {pop!r}")
    if not 0 < pct <= 100:
        raise ConfigError(f"{where}: '{key}.min_pct' must be in (0, 100], found {pct:g}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"{where}: '{key}.min_events' must be an integer >= 1, found {n!r}")
    return Keeps(pop, pct, n)


def _register(where: str, gate: Gate, seen: dict[str, str]) -> None:
    """Record ``gate``'s populations in ``seen`` (population id -> gate id), each once."""
    for pop in gate.population_ids():
        if pop in seen:
            raise ConfigError(
                f"{where}: population id '{pop}' is already defined by gate '{seen[pop]}'; "
                "population ids must be unique"
            )
        seen[pop] = gate.id


def _shape_fit(where: str, gtype: str, fit: Any, dims: tuple[Dim, ...]) -> ShapeFit:
    """The ``fit`` mapping of a polygon or ellipse gate, checked."""
    from nkflow.gating.fit import check_shape_params

    if gtype not in SHAPE_METHODS or not isinstance(fit, dict):
        raise ConfigError(
            f"{where}: 'fit' is a mapping {{method: ...}} on polygon or ellipse gates; "
            f"for a rectangle, fit each bound (min: {{fit: valley, bounds: [lo, hi]}})"
        )
    method = fit.get("method")
    if method not in SHAPE_METHODS[gtype]:
        raise ConfigError(
            f"{where}: fit method {method!r} is not one for a {gtype} gate; "
            f"expected one of {list(SHAPE_METHODS[gtype])}"
        )
    if len(dims) != 2:
        raise ConfigError(f"{where}: a fitted {gtype} needs exactly 2 dims")
    params = {k: v for k, v in fit.items() if k != "method"}
    params = check_shape_params(where, method, params)
    return ShapeFit(method=method, params=tuple(sorted(params.items())))


def _rectangle(
    where: str, g: dict[str, Any], dims: tuple[Dim, ...], seen: dict[str, str]
) -> dict[str, Any]:
    for d in dims:
        if d.min is None and d.max is None and d.fit_min is None and d.fit_max is None:
            raise ConfigError(f"{where}: dim '{d.marker}' needs 'min' and/or 'max'")
        if d.min is not None and d.max is not None and d.min >= d.max:
            raise ConfigError(
                f"{where}: dim '{d.marker}' has min {d.min:g} >= max {d.max:g}; "
                "min must be below max"
            )
    return {}


def _polygon(
    where: str, g: dict[str, Any], dims: tuple[Dim, ...], seen: dict[str, str]
) -> dict[str, Any]:
    v = g.get("vertices")
    if len(dims) != 2 or not isinstance(v, list) or len(v) < 3:
        raise ConfigError(f"{where}: a polygon needs 2 dims and at least 3 vertices [x, y]")
    try:
        verts = tuple((_f(where, "vertices", a), _f(where, "vertices", b)) for a, b in v)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: vertices must be pairs [x, y], found {v!r}") from exc
    return {"vertices": verts}


def _ellipse(
    where: str, g: dict[str, Any], dims: tuple[Dim, ...], seen: dict[str, str]
) -> dict[str, Any]:
    mean, cov = g.get("mean"), g.get("covariance")
    n = len(dims)
    if n < 2 or not isinstance(mean, list) or len(mean) != n:
        raise ConfigError(f"{where}: an ellipse needs >= 2 dims and 'mean' with one per dim")
    if not isinstance(cov, list) or len(cov) != n or any(len(r) != n for r in cov):
        raise ConfigError(f"{where}: 'covariance' must be a {n}x{n} matrix")
    return {
        "mean": tuple(_f(where, "mean", x) for x in mean),
        "covariance": tuple(tuple(_f(where, "covariance", x) for x in r) for r in cov),
        "distance_square": _f(where, "distance_square", g.get("distance_square")),
    }


def _quadrant(
    where: str, g: dict[str, Any], dims: tuple[Dim, ...], seen: dict[str, str]
) -> dict[str, Any]:
    quads = g.get("quadrants")
    if not isinstance(quads, dict) or not quads:
        raise ConfigError(f"{where}: a quadrant gate needs 'quadrants: {{name: [hi, lo]}}'")
    out = []
    for q, spec in quads.items():
        if not isinstance(spec, list) or len(spec) != len(dims):
            raise ConfigError(
                f"{where}: quadrant '{q}' must list one of hi/lo per dim ({len(dims)})"
            )
        out.append(
            (
                str(q),
                tuple(_quadrant_range(where, q, d, s) for d, s in zip(dims, spec, strict=True)),
            )
        )
    return {"quadrants": tuple(out)}


def _quadrant_range(where: str, q: Any, d: Dim, s: Any) -> tuple[float | None, float | None]:
    """One dim's ``(min, max)`` of quadrant ``q``: ``hi``, ``lo`` (of its one divider) or a pair."""
    if s == "hi" and len(d.dividers) == 1:
        return (d.dividers[0], None)
    if s == "lo" and len(d.dividers) == 1:
        return (None, d.dividers[0])
    if isinstance(s, list) and len(s) == 2:
        return (_opt(where, "quadrant", s[0]), _opt(where, "quadrant", s[1]))
    raise ConfigError(
        f"{where}: quadrant '{q}' dim '{d.marker}': expected 'hi', 'lo' or [min, max], found {s!r}"
    )


def _boolean(
    where: str, g: dict[str, Any], dims: tuple[Dim, ...], seen: dict[str, str]
) -> dict[str, Any]:
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
    return {"op": op, "of": tuple(of)}


def _threshold(
    where: str, g: dict[str, Any], dims: tuple[Dim, ...], seen: dict[str, str]
) -> dict[str, Any]:
    if len(dims) != 1:
        raise ConfigError(f"{where}: a threshold gate has exactly one dim")
    method = g.get("method")
    if method not in AUTO_METHODS:
        raise ConfigError(
            f"{where}: 'method' must be one of {list(AUTO_METHODS)}, found {method!r}"
        )
    bounds = _pair(where, "bounds", g.get("bounds"))
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
    auto = AutoSpec(
        method=method,
        bounds=bounds,
        default=default,
        allow_fallback=allow,
        random_state=rs,
        side=side,
        control_percentile=_f(where, "control_percentile", g.get("control_percentile", 99.5)),
    )
    return {"auto": auto}


#: the fields each gate type adds to :class:`Gate`, parsed and checked from its mapping
_TYPE_FIELDS = {
    "rectangle": _rectangle,
    "polygon": _polygon,
    "ellipse": _ellipse,
    "quadrant": _quadrant,
    "boolean": _boolean,
    "threshold": _threshold,
}


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
    transforms: dict[str, tf.Transform] = {}
    scaled: list[str] = []
    for k, v in xforms_raw.items():
        if isinstance(v, dict) and v.get("t") == FROM_FILE:
            if v.get("type") == "ratio":
                raise ConfigError(f"{source}: transforms.{k}: a ratio transform has no 't'")
            scaled.append(str(k))
            v = {**v, "t": DEFAULT_RANGE}
        transforms[str(k)] = tf.from_dict(v, where=f"{source}: transforms.{k}")
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
    _check_same_as(source, gates)
    for g in gates:
        if g.keeps is not None and (
            g.type == "quadrant"
            or g.keeps.population not in seen
            or seen[g.keeps.population] == g.id
        ):
            raise ConfigError(
                f"{source}: gate '{g.id}': 'keeps_pct_of.population: {g.keeps.population}' must "
                "name a population of another gate in this tree (and the gate must not be a "
                "quadrant gate)"
            )
    position = {g.id: i for i, g in enumerate(gates)}
    for g in gates:
        for d in g.dims:
            for fb in (d.fit_min, d.fit_max):
                if (
                    fb is not None
                    and fb.on is not None
                    and (fb.on not in seen or position[seen[fb.on]] >= position[g.id])
                ):
                    raise ConfigError(
                        f"{source}: gate '{g.id}' dim '{d.marker}': 'fit_on: {fb.on}' must name a "
                        "population defined before this gate"
                    )
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
        scaled=tuple(scaled),
    )


def _check_same_as(source: str, gates: tuple[Gate, ...]) -> None:
    """``same_as`` must name an earlier gate with a fitted bound on the same marker."""
    before: dict[str, Gate] = {}
    for g in gates:
        for d in g.dims:
            for fb in (d.fit_min, d.fit_max):
                if fb is None or fb.same_as is None:
                    continue
                ref = before.get(fb.same_as)
                ok = ref is not None and any(
                    rd.marker == d.marker and (rd.fit_min or rd.fit_max) for rd in ref.dims
                )
                if not ok:
                    raise ConfigError(
                        f"{source}: gate '{g.id}' dim '{d.marker}': same_as '{fb.same_as}' "
                        f"must name an earlier gate with a fitted bound on {d.marker}"
                    )
        before[g.id] = g


def _bound_to_dict(b: FitBound) -> dict[str, Any]:
    if b.same_as is not None:
        return {"same_as": b.same_as}
    given = {
        "fallback": b.fallback,
        "edge": b.edge,
        "fit_on": b.on,
        "fmo_percentile": b.fmo_percentile,
    }
    out: dict[str, Any] = {"fit": b.method, "bounds": list(b.bounds), "k": b.k}
    return out | {k: v for k, v in given.items() if v is not None}


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
    if d.fit_min is not None:
        out["min"] = _bound_to_dict(d.fit_min)
    if d.fit_max is not None:
        out["max"] = _bound_to_dict(d.fit_max)
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
        if g.plausible_pct is not None:
            e["plausible_pct_of_parent"] = list(g.plausible_pct)
        if g.keeps is not None:
            e["keeps_pct_of"] = asdict(g.keeps)
        if g.fit is not None:
            e["fit"] = {"method": g.fit.method, **{k: _plain(v) for k, v in g.fit.params}}
        elif g.type == "polygon":
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
            e.update(asdict(g.auto), bounds=list(g.auto.bounds))  # the AutoSpec fields are the keys
        gates.append(e)
    out: dict[str, Any] = {"name": tree.name, "panel": tree.panel}
    out["transforms"] = {
        k: {**v.to_dict(), "t": FROM_FILE} if k in tree.scaled else v.to_dict()
        for k, v in tree.transforms.items()
    }
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


def _plain(v: Any) -> Any:
    """Tuples (frozen fit arguments) back to YAML lists."""
    if isinstance(v, tuple):
        return [_plain(x) for x in v]
    return v
