"""Scale transforms for gating: linear, log, logicle, arcsinh, hyperlog, FlowJo biex/log, ratio.

Contract
--------
Every transform is a small frozen object with ``apply(x) -> ndarray`` and, where it exists,
``inverse(y) -> ndarray``, both on 1-D float64 arrays and both returning new arrays. The
numbers are *identical* to FlowKit's transforms of the same name (the same ``flowutils``
kernels are called), so gates evaluated by :mod:`nkflow.gating` give the same events as
FlowKit's ``GatingStrategy.gate_sample``.

``increasing`` is true when ``apply`` is non-decreasing on ``x > domain_min`` and ``inverse``
exists; the gating engine then maps gate thresholds into raw space through ``inverse``, checks
the mapped bracket with ``apply``, and evaluates with ``apply`` only the events inside the
bracket (see :mod:`nkflow.gating.evaluate`), so membership is exactly that of ``apply``.

Transforms are declared in gate-tree YAML as ``{type: <kind>, ...parameters}`` and built with
:func:`from_dict`; :meth:`to_dict` gives the same mapping back (round trip).

=================  ==========================================  ====================================
kind               parameters                                  value
=================  ==========================================  ====================================
``linear``         ``t``, ``a`` (default 0)                    ``(x + a) / (t + a)`` (Gating-ML flin)
``log``            ``t``, ``m``                                ``log10(x / t) / m + 1`` (flog)
``logicle``        ``t``, ``w``, ``m``, ``a``                  Gating-ML logicle
``arcsinh``        ``cofactor``                                ``arcsinh(x / cofactor)``
``arcsinh``        ``t``, ``m``, ``a``                         Gating-ML fasinh
``hyperlog``       ``t``, ``w``, ``m``, ``a``                  Gating-ML hyperlog
``flowjo_biex``    ``neg``, ``width``, ``pos``, ``max_value``  FlowJo 10 biex (lookup table)
``flowjo_log``     ``offset``, ``decades``                     FlowJo 10 log (clamped at offset)
``ratio``          ``numerator``, ``denominator``, ``a, b, c`` ``a (x - b) / (y - c)`` on two markers
=================  ==========================================  ====================================
"""

from __future__ import annotations

import logging
import math
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

import numpy as np

from nkflow.errors import ConfigError

logger = logging.getLogger(__name__)

__all__ = [
    "Transform",
    "LinearTransform",
    "LogTransform",
    "LogicleTransform",
    "ArcsinhTransform",
    "AsinhTransform",
    "HyperlogTransform",
    "FlowJoBiexTransform",
    "FlowJoLogTransform",
    "RatioTransform",
    "from_dict",
]


class Transform:
    """Base class: a monotone scale transform on 1-D raw values."""

    kind: str = ""
    increasing: bool = True
    domain_min: float = -math.inf

    def apply(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        """Return the transformed values of ``x`` (a new array)."""
        raise NotImplementedError

    def inverse(self, y: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        """Return raw values whose transform is ``y``."""
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        """Return the YAML mapping that :func:`from_dict` turns back into this transform.

        Its ``kind`` as ``type``, then its parameters in declaration order.
        """
        return {"type": self.kind, **self._params()}

    def _params(self) -> dict[str, Any]:
        params = fields(self)  # type: ignore[arg-type]  # every subclass is a dataclass
        return {f.name: getattr(self, f.name) for f in params if f.init}


def _arr(x: np.ndarray | float) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


class _KernelTransform(Transform):
    """A Gating-ML transform computed by the flowutils kernels ``<_kernel>``/``<_kernel>_inverse``.

    The kernels take the transform's parameters as keywords of the same names.
    """

    _kernel = ""

    def _call(self, kernel: str, v: np.ndarray) -> np.ndarray:
        from flowutils import transforms as fut

        out: np.ndarray = getattr(fut, kernel)(_arr(v), None, **self._params())
        return out

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Transform raw values."""
        return self._call(self._kernel, x)

    def inverse(self, y: np.ndarray) -> np.ndarray:
        """Inverse transform."""
        return self._call(f"{self._kernel}_inverse", y)


@dataclass(frozen=True)
class LinearTransform(Transform):
    """Gating-ML flin: ``(x + a) / (t + a)``."""

    t: float
    a: float = 0.0
    kind = "linear"

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Transform raw values."""
        return (_arr(x) + self.a) / (self.t + self.a)

    def inverse(self, y: np.ndarray) -> np.ndarray:
        """Inverse transform."""
        return (_arr(y) * (self.t + self.a)) - self.a


@dataclass(frozen=True)
class LogTransform(Transform):
    """Gating-ML flog: ``log10(x / t) / m + 1`` (NaN for x < 0, -inf at 0, as FlowKit)."""

    t: float
    m: float
    kind = "log"
    domain_min = 0.0

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Transform raw values."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return (1.0 / self.m) * np.log10(_arr(x) / self.t) + 1.0

    def inverse(self, y: np.ndarray) -> np.ndarray:
        """Inverse transform."""
        return self.t * np.power(10.0, (_arr(y) - 1.0) * self.m)


@dataclass(frozen=True)
class LogicleTransform(_KernelTransform):
    """Gating-ML logicle (Moore and Parks 2012), via the flowutils C kernel."""

    t: float
    w: float
    m: float
    a: float = 0.0
    kind = "logicle"
    _kernel = "logicle"


@dataclass(frozen=True)
class ArcsinhTransform(Transform):
    """Cytometry arcsinh with a cofactor: ``arcsinh(x / cofactor)`` (not normalised)."""

    cofactor: float
    kind = "arcsinh"

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Transform raw values."""
        return np.arcsinh(_arr(x) / self.cofactor)

    def inverse(self, y: np.ndarray) -> np.ndarray:
        """Inverse transform."""
        return np.sinh(_arr(y)) * self.cofactor


@dataclass(frozen=True)
class AsinhTransform(_KernelTransform):
    """Gating-ML fasinh with ``t, m, a`` (FlowKit ``AsinhTransform``)."""

    t: float
    m: float
    a: float = 0.0
    kind = "arcsinh"
    _kernel = "asinh"


@dataclass(frozen=True)
class HyperlogTransform(_KernelTransform):
    """Gating-ML hyperlog (Bagwell 2005), via flowutils."""

    t: float
    w: float
    m: float
    a: float = 0.0
    kind = "hyperlog"
    _kernel = "hyperlog"


@dataclass(frozen=True)
class FlowJoBiexTransform(Transform):
    """FlowJo 10 biex, a lookup table interpolated linearly (as FlowKit ``WSPBiexTransform``)."""

    neg: float = 0.0
    width: float = -10.0
    pos: float = 4.418540
    max_value: float = 262144.000029
    kind = "flowjo_biex"
    _impl: Any = field(default=None, init=False, repr=False, compare=False)

    def _fk(self) -> Any:
        if self._impl is None:
            from flowkit import transforms as fkt

            obj = fkt.WSPBiexTransform(
                negative=self.neg, width=self.width, positive=self.pos, max_value=self.max_value
            )
            object.__setattr__(self, "_impl", obj)
        return self._impl

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Transform raw values."""
        return np.asarray(self._fk().apply(_arr(x)), dtype=np.float64)

    def inverse(self, y: np.ndarray) -> np.ndarray:
        """Inverse transform."""
        return np.asarray(self._fk().inverse(_arr(y)), dtype=np.float64)


@dataclass(frozen=True)
class FlowJoLogTransform(Transform):
    """FlowJo 10 log: values below ``offset`` are clamped to it (so not strictly increasing)."""

    offset: float
    decades: float
    kind = "flowjo_log"

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Transform raw values."""
        v = np.maximum(_arr(x), self.offset)
        return 1.0 / self.decades * (np.log10(v) - np.log10(self.offset))

    def inverse(self, y: np.ndarray) -> np.ndarray:
        """Inverse transform (of the unclamped part)."""
        return np.power(10.0, _arr(y) * self.decades + np.log10(self.offset))


@dataclass(frozen=True)
class RatioTransform(Transform):
    """Gating-ML fratio: ``a * (x - b) / (y - c)`` of two markers; a derived dimension."""

    numerator: str
    denominator: str
    a: float = 1.0
    b: float = 0.0
    c: float = 0.0
    kind = "ratio"
    increasing = False

    def apply2(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Ratio of numerator values ``x`` and denominator values ``y``."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.a * ((_arr(x) - self.b) / (_arr(y) - self.c))

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Not defined on one column; use :meth:`apply2`."""
        raise TypeError("RatioTransform needs two columns: call apply2(numerator, denominator)")


#: kind -> class; ``arcsinh`` with a ``cofactor`` is :class:`ArcsinhTransform` instead
_CLASSES: dict[str, type[Transform]] = {
    LinearTransform.kind: LinearTransform,
    LogTransform.kind: LogTransform,
    LogicleTransform.kind: LogicleTransform,
    HyperlogTransform.kind: HyperlogTransform,
    FlowJoBiexTransform.kind: FlowJoBiexTransform,
    FlowJoLogTransform.kind: FlowJoLogTransform,
    RatioTransform.kind: RatioTransform,
    AsinhTransform.kind: AsinhTransform,
}


def _signature(cls: type[Transform]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The (required, optional) parameters of a transform class, in declaration order."""
    params = [f for f in fields(cls) if f.init]  # type: ignore[arg-type]
    required = tuple(f.name for f in params if f.default is MISSING)
    return required, tuple(f.name for f in params if f.default is not MISSING)


def _num(where: str, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(
            f"{where}: parameter '{key}' must be a number, found {value!r}; "
            "write it as a plain number in the YAML"
        )
    return float(value)


def from_dict(spec: dict[str, Any], where: str = "transform") -> Transform:
    """Build a transform from its YAML mapping.

    Parameters
    ----------
    spec
        ``{type: <kind>, ...parameters}``; see the module table.
    where
        Location used in error messages, e.g. ``"nk_v1.yaml: transforms.logicle"``.

    Raises
    ------
    ConfigError
        Unknown type, missing or unknown parameter, non-numeric or invalid value.
    """
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: expected a mapping {{type: ..., ...}}, found {spec!r}")
    kind = spec.get("type")
    params = {k: v for k, v in spec.items() if k != "type"}
    if kind == "arcsinh" and "cofactor" in params:
        extra = sorted(set(params) - {"cofactor"})
        if extra:
            raise ConfigError(
                f"{where}: arcsinh with 'cofactor' takes no other parameter, found {extra}; "
                "use either cofactor or t/m/a"
            )
        c = _num(where, "cofactor", params["cofactor"])
        if c <= 0:
            raise ConfigError(f"{where}: arcsinh cofactor must be > 0, found {c:g}")
        return ArcsinhTransform(cofactor=c)
    if kind not in _CLASSES:
        raise ConfigError(
            f"{where}: unknown transform type {kind!r}; expected one of {sorted(_CLASSES)}"
        )
    cls = _CLASSES[kind]
    required, optional = _signature(cls)
    missing = [k for k in required if k not in params]
    if missing:
        raise ConfigError(
            f"{where}: {kind} transform is missing parameter(s) {missing}; "
            f"it needs {list(required)} (optional {list(optional)})"
        )
    unknown = sorted(set(params) - set(required) - set(optional))
    if unknown:
        raise ConfigError(
            f"{where}: unknown parameter(s) {unknown} for a {kind} transform; "
            f"allowed: {list(required) + list(optional)}"
        )
    if kind == "ratio":
        nums = {k: _num(where, k, params[k]) for k in ("a", "b", "c") if k in params}
        for k in ("numerator", "denominator"):
            if not isinstance(params[k], str) or not params[k]:
                raise ConfigError(
                    f"{where}: ratio '{k}' must be a marker name, found {params[k]!r}"
                )
        return RatioTransform(
            numerator=params["numerator"], denominator=params["denominator"], **nums
        )
    p = {k: _num(where, k, v) for k, v in params.items()}
    if "t" in p and p["t"] <= 0:
        raise ConfigError(f"{where}: parameter 't' (top of scale) must be > 0, found {p['t']:g}")
    if kind == "log" and p["m"] <= 0:
        raise ConfigError(f"{where}: log parameter 'm' (decades) must be > 0, found {p['m']:g}")
    if kind in ("logicle", "hyperlog"):
        # Gating-ML 2.0 limits: outside them the curve is not monotone, and the evaluator's
        # inverse-threshold shortcut (which relies on monotony) would misplace events
        m, w, a = p.get("m", 4.5), p.get("w", 0.5), p.get("a", 0.0)
        w_ok = (w >= 0) if kind == "logicle" else (w > 0)
        if not (m > 0 and w_ok and w <= m / 2 and -w <= a <= m - 2 * w):
            raise ConfigError(
                f"{where}: {kind} parameters m={m:g}, w={w:g}, a={a:g} are outside the "
                f"Gating-ML limits (m > 0, {'0 <=' if kind == 'logicle' else '0 <'} w <= m/2, "
                "-w <= a <= m - 2w); the transform would not be monotone"
            )
    return cls(**p)
