"""ALC unit normalisation, dual/single-platform absolute counts and their intervals."""

import math

import pytest

from nkflow.clinical import counts as cnt
from nkflow.errors import ConfigError


@pytest.mark.parametrize(
    ("value", "unit", "expected"),
    [
        (450.0, "cells/uL", 450.0),
        (0.45, "10^3/uL", 450.0),
        (0.45, "10^9/L", 450.0),  # 1e9/L = 1e9 / 1e6 uL = 1000/uL
        (1.2, "x10^9/L", 1200.0),
        (2.5, "K/uL", 2500.0),
        (300.0, "cells/µL", 300.0),
        (0.3, "G/L", 300.0),
    ],
)
def test_unit_conversions(value, unit, expected):
    alc = cnt.parse_alc(str(value), unit)
    assert alc.status == "ok"
    assert alc.per_ul == pytest.approx(expected, rel=1e-12)


def test_unknown_unit_names_the_unit_and_the_accepted_ones():
    with pytest.raises(ConfigError, match=r"ALC unit: found 'mg/dL'; expected cells/uL, 10\^3/uL"):
        cnt.unit_factor("mg/dL")


@pytest.mark.parametrize("text", ["QNS", "", "  ", "n/a", "nan"])
def test_non_numeric_alc_is_missing_never_zero(text):
    a = cnt.parse_alc(text, "cells/uL")
    assert (a.per_ul, a.status, a.source_value, a.source_unit) == (
        None,
        "missing",
        text,
        "cells/uL",
    )


def test_negative_alc_is_invalid_and_keeps_the_source():
    a = cnt.parse_alc("-0.3", "10^9/L")
    assert (a.per_ul, a.status, a.source_value) == (None, "invalid", "-0.3")
    assert "negative" in a.message


def test_zero_alc_is_a_real_zero():
    assert cnt.parse_alc("0", "cells/uL").per_ul == 0.0


def test_dual_platform_worked_example():
    # DOMAIN.md: ALC 450/uL x 0.38 -> 171 NK/uL (x 0.72 chimerism = 123.12 donor NK/uL)
    assert cnt.dual_platform(450.0, 3800, 10000) == pytest.approx(171.0, rel=1e-12)
    assert cnt.dual_platform(450.0, 3800, 10000) * 0.72 == pytest.approx(123.12, rel=1e-12)


def test_dual_platform_missing_inputs_give_none():
    assert cnt.dual_platform(None, 10, 100) is None
    assert cnt.dual_platform(450.0, None, 100) is None
    assert cnt.dual_platform(450.0, 10, 0) is None


def test_single_platform_beads_ishage_formula():
    # 2000 NK events / 10000 bead events x 50000 beads / 50 uL = 200 cells/uL
    assert cnt.single_platform(2000, 10000, 50000.0, 50.0) == pytest.approx(200.0, rel=1e-12)
    assert cnt.single_platform(2000, 0, 50000.0, 50.0) is None
    assert cnt.single_platform(2000, 10000, None, 50.0) is None


def test_dual_platform_cv_is_poisson_of_both_counts():
    # 1/n_nk + 1/n_lymph (log ratio of two Poisson counts; conservative for a nested subset)
    assert cnt.dual_platform_cv(702, 2600) == pytest.approx(math.sqrt(1 / 702 + 1 / 2600))
    assert cnt.dual_platform_cv(0, 10000) is None
    assert cnt.dual_platform_cv(None, 10000) is None


def test_single_platform_cv_is_independent_poisson():
    assert cnt.single_platform_cv(400, 100) == pytest.approx(math.sqrt(1 / 400 + 1 / 100))


def test_interval_log_scale_with_extra_relative_error():
    lo, hi = cnt.interval(100.0, 0.03, 0.04, z=2.0)  # total cv 0.05 -> exp(-/+ 0.1)
    assert (lo, hi) == (pytest.approx(100 * math.exp(-0.1)), pytest.approx(100 * math.exp(0.1)))
    # data/sample/truth README: P01 476.28 donor NK/uL, 702 NK of 2600 -> 438.184-517.688
    lo, hi = cnt.interval(476.28, cnt.dual_platform_cv(702, 2600))
    assert (f"{lo:.6g}", f"{hi:.6g}") == ("438.184", "517.688")
    assert cnt.interval(None, 0.1) == (None, None)
    assert cnt.interval(10.0, 5.0)[0] > 0.0
