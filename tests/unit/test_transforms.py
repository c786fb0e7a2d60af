"""nkflow.fcs.transforms: closed-form values, inverses, FlowKit equality, YAML errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nkflow.errors import ConfigError
from nkflow.fcs import transforms as tf

X = np.array([-1000.0, -10.0, 0.0, 1.0, 150.0, 1000.0, 12345.6, 262144.0])


def test_linear_closed_form() -> None:
    t = tf.LinearTransform(t=1000.0, a=100.0)
    # (x + a) / (t + a): -100 -> 0, 1000 -> 1, 450 -> 0.5
    np.testing.assert_array_equal(t.apply(np.array([-100.0, 1000.0, 450.0])), [0.0, 1.0, 0.5])
    np.testing.assert_allclose(t.inverse(t.apply(X)), X, rtol=0, atol=1e-9)


def test_log_closed_form_and_domain() -> None:
    t = tf.LogTransform(t=10000.0, m=4.0)
    # log10(x / T) / M + 1: T -> 1, T/10^4 -> 0, T/100 -> 0.5
    np.testing.assert_allclose(t.apply(np.array([10000.0, 1.0, 100.0])), [1.0, 0.0, 0.5])
    v = t.apply(np.array([0.0, -5.0]))
    assert v[0] == -math.inf and math.isnan(v[1])
    assert t.domain_min == 0.0


def test_arcsinh_cofactor_closed_form() -> None:
    t = tf.ArcsinhTransform(cofactor=150.0)
    assert t.apply(np.array([150.0]))[0] == pytest.approx(math.asinh(1.0), abs=1e-15)
    np.testing.assert_allclose(t.inverse(t.apply(X)), X, rtol=1e-12, atol=1e-9)


def test_logicle_known_points() -> None:
    t = tf.LogicleTransform(t=262144.0, w=0.5, m=4.5, a=0.0)
    # Gating-ML 2.0: logicle(0) = W / (M + A); logicle(T) = 1
    y = t.apply(np.array([0.0, 262144.0]))
    assert y[0] == pytest.approx(0.5 / 4.5, abs=1e-12)
    assert y[1] == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(t.inverse(t.apply(X)), X, rtol=1e-9, atol=1e-6)


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (tf.LogicleTransform(262144, 0.5, 4.5, 0), ("LogicleTransform", (262144, 0.5, 4.5, 0))),
        (tf.LogicleTransform(1000, 1, 4, 1), ("LogicleTransform", (1000, 1, 4, 1))),
        (tf.HyperlogTransform(1000, 1, 4.5, 0.5), ("HyperlogTransform", (1000, 1, 4.5, 0.5))),
        (tf.AsinhTransform(262144, 4.5, 0), ("AsinhTransform", (262144, 4.5, 0))),
        (tf.LinearTransform(1000, 10), ("LinearTransform", (1000, 10))),
        (tf.LogTransform(262144, 4.5), ("LogTransform", (262144, 4.5))),
    ],
)
def test_bit_equal_to_flowkit(ours: tf.Transform, theirs: tuple) -> None:
    from flowkit import transforms as fkt

    fk = getattr(fkt, theirs[0])(*theirs[1])
    x = np.abs(X) + 1.0 if isinstance(ours, tf.LogTransform) else X
    np.testing.assert_array_equal(ours.apply(x), np.asarray(fk.apply(x.copy())).ravel())


def test_flowjo_biex_equals_flowkit_and_is_monotone() -> None:
    from flowkit import transforms as fkt

    ours = tf.FlowJoBiexTransform(neg=0.0, width=-10.0, pos=4.418540, max_value=262144.000029)
    fk = fkt.WSPBiexTransform(negative=0.0, width=-10.0, positive=4.418540)
    np.testing.assert_array_equal(ours.apply(X), fk.apply(X))
    assert np.all(np.diff(ours.apply(np.sort(X))) >= 0)


def test_ratio_apply2() -> None:
    r = tf.RatioTransform("A", "B", a=2.0, b=1.0, c=1.0)
    np.testing.assert_array_equal(r.apply2(np.array([3.0, 9.0]), np.array([2.0, 5.0])), [4.0, 4.0])
    with pytest.raises(TypeError, match="needs two columns"):
        r.apply(np.array([1.0]))


@pytest.mark.parametrize(
    "spec",
    [
        {"type": "linear", "t": 262144, "a": 0.0},
        {"type": "logicle", "t": 262144.0, "w": 0.5, "m": 4.5, "a": 0.0},
        {"type": "arcsinh", "cofactor": 150.0},
        {"type": "arcsinh", "t": 262144.0, "m": 4.5, "a": 0.0},
        {"type": "log", "t": 262144.0, "m": 4.5},
        {"type": "hyperlog", "t": 1000.0, "w": 1.0, "m": 4.5, "a": 0.5},
        {"type": "flowjo_log", "offset": 1.0, "decades": 4.0},
        {"type": "ratio", "numerator": "CD4", "denominator": "CD8", "a": 1.0, "b": 0.0, "c": 0.0},
    ],
)
def test_from_dict_round_trip(spec: dict) -> None:
    t = tf.from_dict(spec)
    assert tf.from_dict(t.to_dict()) == t
    assert t.to_dict()["type"] == spec["type"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {"type": "biexp"},
            r"x.yaml: transforms.t: unknown transform type 'biexp'; expected one of",
        ),
        ({"type": "logicle", "t": 262144, "m": 4.5}, r"missing parameter\(s\) \['w'\]"),
        ({"type": "linear", "t": 1000, "q": 1}, r"unknown parameter\(s\) \['q'\]"),
        ({"type": "linear", "t": "big"}, r"parameter 't' must be a number, found 'big'"),
        ({"type": "arcsinh", "cofactor": 0}, r"cofactor must be > 0, found 0"),
        ({"type": "arcsinh", "cofactor": 5, "t": 1}, r"takes no other parameter, found \['t'\]"),
        ({"type": "linear", "t": -1}, r"'t' \(top of scale\) must be > 0, found -1"),
        ("logicle", r"expected a mapping"),
        (
            {"type": "logicle", "t": 262144, "w": 3, "m": 4.5},
            r"logicle parameters m=4.5, w=3, a=0 are outside the Gating-ML limits",
        ),
        (
            {"type": "logicle", "t": 262144, "w": 0.5, "m": 4.5, "a": -1},
            r"outside the Gating-ML limits .* not be monotone",
        ),
        (
            {"type": "hyperlog", "t": 262144, "w": 0, "m": 4.5},
            r"hyperlog parameters m=4.5, w=0, a=0 are outside .*0 < w <= m/2",
        ),
        ({"type": "log", "t": 262144, "m": 0}, r"log parameter 'm' \(decades\) must be > 0"),
    ],
)
def test_from_dict_errors(spec: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        tf.from_dict(spec, where="x.yaml: transforms.t")  # type: ignore[arg-type]
