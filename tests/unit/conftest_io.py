"""Hand-built FCS files for the ingest tests (imported explicitly, not a pytest conftest).

``build_fcs`` writes HEADER, TEXT and DATA byte by byte, independently of FlowIO, so tests
can state exactly what a file holds and then damage it in a known way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

_NUM = 20  # zero-padded width of $BEGINDATA/$ENDDATA so TEXT length does not depend on them


def _dtype(datatype: str, bits: int, byteord: str) -> np.dtype:
    order = "<" if byteord.startswith("1") else ">"
    if datatype == "F":
        return np.dtype(order + "f4")
    if datatype == "D":
        return np.dtype(order + "f8")
    return np.dtype(order + {8: "u1", 16: "u2", 32: "u4"}[bits])


def build_fcs(
    names: Sequence[str],
    events: np.ndarray,
    *,
    pns: Sequence[str] | None = None,
    version: str = "FCS3.1",
    datatype: str = "F",
    bits: int | Sequence[int] | None = None,
    byteord: str = "1,2,3,4",
    pnr: Sequence[int] | None = None,
    pne: Sequence[str] | None = None,
    png: Sequence[float] | None = None,
    extra: Mapping[str, str] | None = None,
    tot: int | None = None,
    delim: str = "/",
    text_bytes: bytes | None = None,
    end_data_shift: int = 0,
    header_data: tuple[int, int] | None = None,
    text_data: tuple[int, int] | None = None,
    pn: Mapping[str, Sequence[str | None]] | None = None,
) -> bytes:
    """Return the bytes of a one-data-set FCS file.

    ``tot`` overrides ``$TOT`` (defaults to the row count); ``end_data_shift`` moves the
    declared DATA end (HEADER and TEXT) by that many bytes; ``header_data``/``text_data`` force
    offsets; ``text_bytes`` replaces the encoded TEXT body after the first delimiter.

    ``bits`` may give one width per channel (mixed integer widths, FCS 3.1). ``pn`` adds
    per-parameter keywords by suffix, one value per channel (None: not written), for example
    ``{"TYPE": ["Forward_Scatter", ...], "DATATYPE": [None, "I"]}``: an FCS 3.2 ``$PnDATATYPE``
    makes that column's value type differ from ``$DATATYPE``.
    """
    events = np.asarray(events)
    n_par = len(names)
    pn = dict(pn or {})
    types = [t or datatype for t in pn.get("DATATYPE", [None] * n_par)]
    default_bits = {"F": 32, "D": 64, "I": 16}
    if bits is None:
        widths = [default_bits[t] for t in types]
    elif isinstance(bits, int):
        widths = [bits if t == datatype else default_bits[t] for t in types]
    else:
        widths = list(bits)
    rec = np.dtype(
        [
            (f"c{i}", _dtype(t, b, byteord))
            for i, (t, b) in enumerate(zip(types, widths, strict=True))
        ]
    )
    table = np.empty(events.shape[0], dtype=rec)
    for i in range(n_par):
        table[f"c{i}"] = events[:, i]
    data = table.tobytes()
    kw: dict[str, str] = {
        "$BYTEORD": byteord,
        "$DATATYPE": datatype,
        "$MODE": "L",
        "$NEXTDATA": "0",
        "$PAR": str(n_par),
        "$TOT": str(events.shape[0] if tot is None else tot),
    }
    for i, nm in enumerate(names, start=1):
        kw[f"$P{i}N"] = nm
        kw[f"$P{i}B"] = str(widths[i - 1])
        kw[f"$P{i}E"] = pne[i - 1] if pne else "0,0"
        kw[f"$P{i}R"] = str(pnr[i - 1] if pnr else 262144)
        if pns and pns[i - 1]:
            kw[f"$P{i}S"] = pns[i - 1]
        if png:
            kw[f"$P{i}G"] = repr(float(png[i - 1]))
        for suffix, values in pn.items():
            if values[i - 1] is not None:
                kw[f"$P{i}{suffix}"] = str(values[i - 1])
    kw.update(extra or {})
    with_offsets = version != "FCS2.0"
    if with_offsets:
        kw["$BEGINDATA"] = "0" * _NUM
        kw["$ENDDATA"] = "0" * _NUM
        kw["$BEGINANALYSIS"] = "0"
        kw["$ENDANALYSIS"] = "0"
        kw["$BEGINSTEXT"] = "0"
        kw["$ENDSTEXT"] = "0"

    def encode(kws: Mapping[str, str]) -> bytes:
        d = delim
        body = "".join(f"{k.replace(d, d + d)}{d}{v.replace(d, d + d)}{d}" for k, v in kws.items())
        return (d + body).encode("utf-8")

    text = encode(kw) if text_bytes is None else delim.encode() + text_bytes
    t0 = 58
    t1 = t0 + len(text) - 1
    d0 = t1 + 1
    d1 = d0 + len(data) - 1 + end_data_shift
    if with_offsets and text_bytes is None:
        td0, td1 = text_data or (d0, d1)
        kw["$BEGINDATA"] = str(td0).zfill(_NUM)
        kw["$ENDDATA"] = str(td1).zfill(_NUM)
        text = encode(kw)
        assert len(text) == t1 - t0 + 1
    hd0, hd1 = header_data or (d0, d1)
    header = (
        version.encode()
        + b"    "
        + b"".join(str(v).rjust(8).encode() for v in (t0, t1, hd0, hd1, 0, 0))
    )
    assert len(header) == 58
    return header + text + data


def write_file(tmp_path: Path, blob: bytes, name: str = "t.fcs") -> Path:
    """Write ``blob`` as ``tmp_path / name`` and return the path."""
    p = tmp_path / name
    p.write_bytes(blob)
    return p


def with_nextdata(first: bytes, offset: int) -> bytes:
    """Rewrite a fixed-width ``$NEXTDATA`` (built as ``'0000000'``) to ``offset``."""
    old = b"$NEXTDATA/0000000/"
    assert old in first
    return first.replace(old, b"$NEXTDATA/" + str(offset).zfill(7).encode() + b"/", 1)
