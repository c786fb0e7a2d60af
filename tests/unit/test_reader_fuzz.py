"""Property: corrupted HEADER/TEXT bytes give a good read or an NkflowError, nothing else.

Each example writes one damaged copy of a small hand-built file and reads it; a deadline per
example catches hangs. Outcomes other than an ``FcsSample`` or an ``NkflowError`` fail.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nkflow.errors import NkflowError
from nkflow.fcs.io import FcsSample, read_fcs
from tests.unit.conftest_io import build_fcs

EV = np.arange(24, dtype=np.float64).reshape(6, 4)
GOOD = {
    "float": build_fcs(["FSC-A", "SSC-A", "CD56", "Time"], EV, extra={"$TIMESTEP": "0.1"}),
    "int": build_fcs(
        ["FSC-A", "SSC-A", "CD56", "Time"],
        EV,
        datatype="I",
        pnr=[1024] * 4,
        pne=["0,0", "0,0", "4,0", "0,0"],
        version="FCS2.0",
        byteord="4,3,2,1",
    ),
}
KEYWORDS = [
    b"$PAR",
    b"$TOT",
    b"$DATATYPE",
    b"$BYTEORD",
    b"$MODE",
    b"$P1B",
    b"$P2R",
    b"$P3E",
    b"$P1G",
    b"$BEGINDATA",
    b"$ENDDATA",
    b"$NEXTDATA",
    b"$P4N",
    b"$TIMESTEP",
]
SETTINGS = settings(
    max_examples=120,
    deadline=2000,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)


def _check(blob: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "fuzz.fcs"
        p.write_bytes(blob)
        try:
            s = read_fcs(p)
        except NkflowError:
            return
        assert isinstance(s, FcsSample)
        assert s.events.shape == (s.n_events, len(s.channels))


def _text_end(blob: bytes) -> int:
    return int(blob[18:26])


@SETTINGS
@given(
    kind=st.sampled_from(sorted(GOOD)),
    edits=st.lists(
        st.tuples(st.integers(min_value=0, max_value=10_000), st.binary(min_size=1, max_size=4)),
        min_size=1,
        max_size=6,
    ),
)
def test_random_byte_overwrites_in_header_and_text(kind, edits):
    blob = bytearray(GOOD[kind])
    end = _text_end(GOOD[kind])
    for pos, new in edits:
        at = pos % (end + 1)
        blob[at : at + len(new)] = new
    _check(bytes(blob))


@SETTINGS
@given(
    kind=st.sampled_from(sorted(GOOD)),
    key=st.sampled_from(KEYWORDS),
    value=st.one_of(
        st.sampled_from(
            [b"", b"-1", b"0", b"99999999999999", b"1e309", b"nan", b"4,", b",", b"//", b"24"]
        ),
        st.binary(min_size=0, max_size=12).filter(lambda b: b"/" not in b),
        st.integers(min_value=-(10**12), max_value=10**12).map(lambda i: str(i).encode()),
    ),
)
def test_keyword_values_replaced(kind, key, value):
    blob = GOOD[kind]
    start = blob.find(key + b"/")
    if start < 0:
        return
    v0 = start + len(key) + 1
    v1 = blob.index(b"/", v0)
    damaged = blob[:v0] + value + blob[v1:]
    shift = len(damaged) - len(blob)
    # keep HEADER offsets consistent with the resized TEXT so TEXT parsing is reached
    header = bytearray(damaged[:58])
    for field in (18, 26, 34):
        old = int(header[field : field + 8])
        if old >= v1 or field == 18:
            header[field : field + 8] = str(old + shift).rjust(8).encode()
    _check(bytes(header) + damaged[58:])


@SETTINGS
@given(kind=st.sampled_from(sorted(GOOD)), cut=st.integers(min_value=0, max_value=10_000))
def test_truncation_anywhere(kind, cut):
    blob = GOOD[kind]
    _check(blob[: cut % len(blob)])


@pytest.mark.parametrize("kind", sorted(GOOD))
def test_undamaged_files_read(kind):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "ok.fcs"
        p.write_bytes(GOOD[kind])
        assert read_fcs(p).n_events == 6
