"""Deliberate defects made in FCS files and sheets, for the bad-input matrix.

Contract: each function changes one file in place, the way a real defect looks: the FCS TEXT
segment is re-encoded with keywords changed (every offset recomputed, so the file is otherwise
valid), or the bytes are cut short, or one cell of a sheet is rewritten. Used by
``nkflow qualify`` and by tests/integration/test_bad_inputs.py.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable
from pathlib import Path


def parse_fcs(path: Path) -> tuple[str, dict[str, str], bytes, str]:
    """(version, TEXT keywords, DATA bytes, delimiter) of a single-data-set FCS file."""
    raw = path.read_bytes()
    t0, t1, d0, d1 = (int(raw[10 + 8 * i : 18 + 8 * i]) for i in range(4))
    text = raw[t0 : t1 + 1].decode("utf-8")
    delim = text[0]
    parts = text[1:].rstrip(delim).split(delim)
    kw = dict(zip(parts[0::2], parts[1::2], strict=True))
    return raw[:6].decode(), kw, raw[d0 : d1 + 1], delim


def write_fcs(path: Path, version: str, kw: dict[str, str], data: bytes, delim: str) -> None:
    """Write HEADER, TEXT (``kw``, offsets recomputed) and DATA."""
    kw = dict(kw)
    kw["$BEGINDATA"] = kw["$ENDDATA"] = "0" * 10

    def encode() -> bytes:
        return (delim + "".join(f"{k}{delim}{v}{delim}" for k, v in kw.items())).encode()

    t0 = 58
    t1 = t0 + len(encode()) - 1
    kw["$BEGINDATA"] = str(t1 + 1).zfill(10)
    kw["$ENDDATA"] = str(t1 + len(data)).zfill(10)
    text = encode()
    header = (
        version.encode()
        + b"    "
        + b"".join(str(v).rjust(8).encode() for v in (t0, t1, t1 + 1, t1 + len(data), 0, 0))
    )
    path.write_bytes(header + text + data)


def with_keywords(path: Path, change: Callable[[dict[str, str]], None]) -> None:
    """Re-encode ``path`` after ``change`` edits its TEXT keywords in place."""
    version, kw, data, delim = parse_fcs(path)
    change(kw)
    write_fcs(path, version, kw, data, delim)


def truncate(path: Path, n_bytes: int = 1000) -> None:
    """Cut the last ``n_bytes`` bytes off the file."""
    path.write_bytes(path.read_bytes()[:-n_bytes])


def spill_key(kw: dict[str, str]) -> str:
    """The spillover keyword the file uses."""
    return next(k for k in ("$SPILLOVER", "$SPILL", "SPILL") if k in kw)


def singular_spillover(kw: dict[str, str]) -> None:
    """All ones: diagonal 1 (passes that check) but rank 1, so not invertible."""
    key = spill_key(kw)
    fields = kw[key].split(",")
    n = int(fields[0])
    kw[key] = ",".join(fields[: 1 + n] + ["1"] * (n * n))


def misnamed_spillover(kw: dict[str, str]) -> None:
    """The spillover's first channel renamed to one the file lacks."""
    key = spill_key(kw)
    fields = kw[key].split(",")
    fields[1] = fields[1] + "-X"
    kw[key] = ",".join(fields)


def rename_marker(old: str, new: str, keys: str = "NS") -> Callable[[dict[str, str]], None]:
    """A change replacing ``old`` by ``new`` in every ``$PnN``/``$PnS`` (``keys``) value."""
    pattern = re.compile(rf"\$P\d+[{keys}]")

    def change(kw: dict[str, str]) -> None:
        kw.update({k: v.replace(old, new) for k, v in kw.items() if pattern.fullmatch(k)})

    return change


def add_to_tot(delta: int) -> Callable[[dict[str, str]], None]:
    """A change making ``$TOT`` disagree with the DATA length by ``delta`` events."""

    def change(kw: dict[str, str]) -> None:
        kw["$TOT"] = str(int(kw["$TOT"]) + delta)

    return change


def set_cell(sheet: Path, match: dict[str, str], column: str, value: str) -> int:
    """Set ``column`` to ``value`` in every row of a TSV sheet matching ``match``.

    The number of rows changed is returned.
    """
    with sheet.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh, delimiter="\t"))
    head = rows[0]
    n = 0
    for row in rows[1:]:
        if all(row[head.index(k)] == v for k, v in match.items()):
            row[head.index(column)] = value
            n += 1
    with sheet.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh, delimiter="\t", lineterminator="\n").writerows(rows)
    return n
