"""Gating figure: written, deterministic bytes, not-computed gates drawn as such."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from nkflow.figures import gating_figure
from nkflow.gating import gate_sample, load_tree

FIX = Path(__file__).parent / "gating_fixtures"


def _events(n: int = 3000) -> np.ndarray:
    rng = np.random.default_rng(5)
    return np.column_stack(
        [rng.uniform(0, 100, n), rng.uniform(0, 100, n), rng.uniform(-100, 50000, n)]
    )


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_figure_is_deterministic(tmp_path: Path) -> None:
    tree = load_tree(FIX / "tiny.yaml")
    ev = _events()
    mi = {"A": 0, "B": 1, "C": 2}
    res = gate_sample(tree, ev, mi)
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    gating_figure(tree, ev, mi, res, a, title="t", max_events=500, random_state=0)
    gating_figure(tree, ev, mi, res, b, title="t", max_events=500, random_state=0)
    assert a.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert _sha(a) == _sha(b)
    c = tmp_path / "c.png"
    gating_figure(tree, ev, mi, res, c, title="t", max_events=500, random_state=1)
    assert _sha(c) != _sha(a)  # the seed is what makes it reproducible, not luck


def test_figure_with_missing_marker(tmp_path: Path) -> None:
    tree = load_tree(FIX / "tiny.yaml")
    ev = _events()
    mi = {"A": 0, "B": 1}
    res = gate_sample(tree, ev, mi)
    out = gating_figure(tree, ev, mi, res, tmp_path / "m.png")
    assert out.stat().st_size > 10_000
