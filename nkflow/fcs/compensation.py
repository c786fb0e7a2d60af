"""Spillover matrices: where they come from, whether they are usable, and applying them.

Contract
--------
``spillover_for(sample, override=None)`` returns the :class:`Spillover` to use for one file, or
None when the file has none and no override is configured. Sources, in order of precedence:

1. ``override`` (the config's CSV/TSV for the panel; plain CSV with a header of channel names,
   optionally row labels, or a FlowJo-exported matrix), which replaces whatever the file has;
2. the file's ``$SPILLOVER`` (FCS 3.1), then ``$SPILL``, then ``SPILL`` keyword.

Every matrix is checked against the file before use: square, channel names unique and present
in the file (matched by name, after removing FlowJo's ``Comp-`` prefix and ``<>`` brackets, so
the matrix may list channels in any order), diagonal equal to 1 and invertible. A failing matrix
raises :class:`~nkflow.errors.CompensationError` naming the file and the problem.
``Spillover.source`` records where the matrix came from.

``compensate(events, channel_names, spill)`` returns a new array: the spillover channels are
replaced by ``observed @ inv(S)`` (computed with ``numpy.linalg.solve`` as FlowKit does) (rows of ``S`` are the emitting channel, as in FCS), every
other column and the input are untouched.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from nkflow.errors import CompensationError

logger = logging.getLogger(__name__)

__all__ = [
    "Spillover",
    "compensate",
    "load_spillover_csv",
    "parse_spill_keyword",
    "spillover_for",
    "validate_spillover",
]

SPILL_KEYWORDS = ("$SPILLOVER", "$SPILL", "SPILL")
DIAGONAL_TOLERANCE = 1e-6
MAX_CONDITION = 1e12


class _HasKeywords(Protocol):
    @property
    def path(self) -> Path: ...
    @property
    def keywords(self) -> dict[str, str]: ...

    @property
    def channel_names(self) -> tuple[str, ...]: ...


@dataclass(frozen=True)
class Spillover:
    """A spillover matrix with its channel names.

    Attributes
    ----------
    channels : tuple of str
        ``$PnN`` of each row/column, in matrix order.
    matrix : numpy.ndarray
        ``(n, n)`` float64; row i is the spill of channel i's dye into every channel.
    source : str
        ``'$SPILLOVER'``, ``'$SPILL'``, ``'SPILL'``, ``'csv:<path>'`` or ``'flowjo:<path>'``.
    """

    channels: tuple[str, ...]
    matrix: np.ndarray = field(repr=False)
    source: str


def _clean_name(name: str) -> str:
    text = name.strip().strip('"').strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1].strip()
    return re.sub(r"^comp-", "", text, flags=re.IGNORECASE)


def parse_spill_keyword(value: str, *, where: str, source: str) -> Spillover:
    """Parse an FCS spillover keyword ``n,ch1,...,chn,v11,v12,...,vnn``.

    Parameters
    ----------
    value : str
        Keyword value.
    where : str
        File name for messages.
    source : str
        Keyword name, recorded as the source.

    Returns
    -------
    Spillover
        Not yet validated against a file (see :func:`validate_spillover`).

    Raises
    ------
    CompensationError
        If the value is not ``n``, ``n`` names and ``n*n`` numbers.
    """
    parts = [p.strip() for p in value.split(",")]
    try:
        n = int(parts[0])
    except ValueError:
        raise CompensationError(
            f"{where}: {source} starts with {parts[0][:20]!r}; expected the channel count n "
            "followed by n names and n x n values"
        ) from None
    if n < 1 or len(parts) != 1 + n + n * n:
        raise CompensationError(
            f"{where}: {source} declares n={n} channels, so it needs 1 + n + n x n = "
            f"{1 + n + n * n} comma-separated fields, but has {len(parts)}; the matrix is not "
            "square or the keyword is cut"
        )
    names = tuple(parts[1 : 1 + n])
    try:
        vals = np.array([float(v) for v in parts[1 + n :]], dtype=np.float64)
    except ValueError as exc:
        raise CompensationError(f"{where}: {source} holds a non-numeric value ({exc})") from None
    return Spillover(channels=names, matrix=vals.reshape(n, n), source=source)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


_TAG = re.compile(r"<(/?)(?:[\w.-]+:)?([\w.-]+)((?:\s+[\w.:-]+\s*=\s*\"[^\"]*\")*)\s*/?>")
_ATTR = re.compile(r"(?:[\w.-]+:)?([\w.-]+)\s*=\s*\"([^\"]*)\"")


def _parse_flowjo_xml(text: str, p: Path) -> Spillover:
    """Parse a FlowJo 10 ``.mtx`` (``transforms:spilloverMatrix``), prefix-agnostic.

    Rows are ``transforms:spillover data-type:parameter=<dye channel>``, each holding
    ``transforms:coefficient data-type:parameter=<detector> transforms:value=<v>``.
    """
    import html

    rows: dict[str, dict[str, float]] = {}
    order: list[str] = []
    current: str | None = None
    spectral = False
    for m in _TAG.finditer(text):
        closing, tag, attrs_text = m.group(1), m.group(2), m.group(3)
        attrs = {k: html.unescape(v) for k, v in _ATTR.findall(attrs_text)}
        if tag == "spilloverMatrix" and not closing and attrs.get("spectral") == "1":
            spectral = True
        elif tag == "spillover":
            if closing:
                current = None
            else:
                current = _clean_name(attrs.get("parameter", ""))
                if current in rows:
                    raise CompensationError(f"{p}: FlowJo matrix lists row {current!r} twice")
                rows[current] = {}
                order.append(current)
        elif tag == "coefficient" and current is not None and not closing:
            try:
                rows[current][_clean_name(attrs.get("parameter", ""))] = float(attrs["value"])
            except (KeyError, ValueError):
                raise CompensationError(
                    f"{p}: FlowJo matrix row {current!r} has a coefficient without a numeric "
                    f"value: {m.group(0)[:120]}"
                ) from None
    if spectral:
        raise CompensationError(
            f"{p}: spectral (unmixing) matrices are not supported; export a square "
            "compensation matrix"
        )
    if not rows:
        raise CompensationError(
            f"{p}: XML without transforms:spillover rows; expected a FlowJo .mtx "
            "(transforms:spilloverMatrix) or a CSV with channel names in the first row"
        )
    matrix = np.zeros((len(order), len(order)), dtype=np.float64)
    for i, name in enumerate(order):
        cols = rows[name]
        extra = sorted(set(cols) - set(order))
        if extra or len(cols) != len(order):
            raise CompensationError(
                f"{p}: FlowJo matrix row {name!r} has coefficients for {sorted(cols)}; expected "
                f"one for each of {order} (the matrix must be square)"
            )
        matrix[i] = [cols[c] for c in order]
    return Spillover(channels=tuple(order), matrix=matrix, source=f"flowjo:{p}")


def load_spillover_csv(path: str | Path) -> Spillover:
    """Read a spillover matrix from CSV/TSV or a FlowJo-exported matrix file.

    Accepted layouts (comma, tab or semicolon separated):

    * a header row of ``n`` channel names, then ``n`` rows of ``n`` numbers;
    * the same with a row label first on every row (and optionally an empty first header
      cell): rows are then re-ordered to match the header by name;
    * a FlowJo export: the XML ``.mtx`` (``transforms:spilloverMatrix``) or a text matrix
      with title lines before the header row (source recorded as ``flowjo:<path>``);
      ``Comp-`` prefixes and ``<>`` are removed.

    Raises
    ------
    CompensationError
        If the file cannot be read or is not a square labelled numeric matrix.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise CompensationError(f"{p}: cannot read spillover matrix ({exc})") from exc
    if text.lstrip().startswith("<"):
        return _parse_flowjo_xml(text, p)
    lines = [ln for ln in text.splitlines() if ln.strip()]
    rows = [[c.strip() for c in re.split(r"\t|,|;", ln)] for ln in lines]
    header_i = next(
        (i for i, row in enumerate(rows[:-1]) if len(row) > 1 and _is_number(rows[i + 1][-1])),
        None,
    )
    if header_i is None:
        raise CompensationError(
            f"{p}: no header row of channel names followed by numeric rows was found"
        )
    source = f"flowjo:{p}" if header_i > 0 else f"csv:{p}"
    body = rows[header_i + 1 :]
    names = tuple(_clean_name(h) for h in rows[header_i] if h != "")
    n = len(names)
    labelled = all(len(r) == n + 1 and not _is_number(r[0]) for r in body)
    if len(body) != n:
        raise CompensationError(
            f"{p}: the header names {n} channels but {len(body)} rows follow; a spillover "
            "matrix must be square (one row per channel)"
        )
    matrix = np.empty((n, n), dtype=np.float64)
    row_names: list[str] = []
    for r_i, row in enumerate(body):
        cells = row[1:] if labelled else row
        if len(cells) != n:
            raise CompensationError(
                f"{p}: row {header_i + r_i + 2} has {len(cells)} values; expected {n} "
                "(one per header channel); the matrix is not square"
            )
        try:
            matrix[r_i] = [float(c) for c in cells]
        except ValueError:
            raise CompensationError(
                f"{p}: row {header_i + r_i + 2} holds a non-numeric value: {cells}"
            ) from None
        if labelled:
            row_names.append(_clean_name(row[0]))
    if labelled:
        if sorted(row_names) != sorted(names):
            raise CompensationError(
                f"{p}: row labels {row_names} do not match header channels {list(names)}"
            )
        order = [row_names.index(c) for c in names]
        matrix = matrix[order]
    return Spillover(channels=names, matrix=matrix, source=source)


def validate_spillover(spill: Spillover, channel_names: Sequence[str], where: str) -> Spillover:
    """Check a matrix against a file's channels and return it with names as in the file.

    Parameters
    ----------
    spill : Spillover
    channel_names : sequence of str
        ``$PnN`` of the file.
    where : str
        File name for messages.

    Returns
    -------
    Spillover
        Same matrix, channel names spelled as in the file.

    Raises
    ------
    CompensationError
        Not square, duplicate or unknown channels, diagonal not 1, not finite, or singular.
    """
    m = spill.matrix
    n = len(spill.channels)
    src = spill.source
    if m.ndim != 2 or m.shape != (n, n):
        raise CompensationError(
            f"{where}: spillover from {src} is {m.shape} for {n} channel names; expected a "
            "square n x n matrix"
        )
    if len(set(spill.channels)) != n:
        dups = sorted({c for c in spill.channels if spill.channels.count(c) > 1})
        raise CompensationError(f"{where}: spillover from {src} lists channels twice: {dups}")
    lookup = {c: c for c in channel_names}
    lookup.update({_clean_name(c): c for c in channel_names if _clean_name(c) not in lookup})
    unknown = [c for c in spill.channels if _clean_name(c) not in lookup and c not in lookup]
    if unknown:
        raise CompensationError(
            f"{where}: spillover from {src} names channel(s) {unknown} that the file does not "
            f"have; file channels ($PnN): {', '.join(channel_names)}. Fix the matrix channel "
            "names or configure the right matrix for this panel"
        )
    mapped = tuple(lookup.get(c, lookup.get(_clean_name(c), c)) for c in spill.channels)
    if not np.all(np.isfinite(m)):
        raise CompensationError(f"{where}: spillover from {src} holds NaN or infinite values")
    diag = np.diag(m)
    off = np.flatnonzero(np.abs(diag - 1.0) > DIAGONAL_TOLERANCE)
    if off.size:
        i = int(off[0])
        raise CompensationError(
            f"{where}: spillover from {src}: diagonal entry for {mapped[i]!r} is {diag[i]:g}; "
            "expected 1 (each dye's spill into its own detector). Normalise the matrix rows"
        )
    cond = np.linalg.cond(m)
    if not np.isfinite(cond) or cond > MAX_CONDITION:
        raise CompensationError(
            f"{where}: spillover from {src} is singular (condition number {cond:.3g}); it "
            "cannot be inverted. Check for duplicated rows or columns"
        )
    return Spillover(channels=mapped, matrix=m.astype(np.float64, copy=True), source=src)


def spillover_for(sample: _HasKeywords, override: str | Path | None = None) -> Spillover | None:
    """Choose, parse and validate the spillover matrix for one sample.

    Parameters
    ----------
    sample : FcsSample
    override : str or Path, optional
        A configured CSV/FlowJo matrix; replaces the file's own matrix.

    Returns
    -------
    Spillover or None
        None when there is no override and no spillover keyword.

    Raises
    ------
    CompensationError
        If the chosen matrix is malformed or does not fit the file.
    """
    where = Path(sample.path).name
    if override is not None:
        spill = load_spillover_csv(override)
        present = [k for k in SPILL_KEYWORDS if k in sample.keywords]
        if present:
            logger.info("%s: configured matrix %s overrides %s", where, override, present[0])
    else:
        key = next((k for k in SPILL_KEYWORDS if sample.keywords.get(k, "").strip()), None)
        if key is None:
            return None
        spill = parse_spill_keyword(sample.keywords[key], where=where, source=key)
    return validate_spillover(spill, sample.channel_names, where)


def compensate(events: np.ndarray, channel_names: Sequence[str], spill: Spillover) -> np.ndarray:
    """Return compensated events; only the spillover's channels change.

    Parameters
    ----------
    events : numpy.ndarray
        ``(n_events, len(channel_names))``; not modified.
    channel_names : sequence of str
        Name of each column of ``events``; matched to ``spill.channels`` by name.

    Returns
    -------
    numpy.ndarray
        New array, same shape and dtype (float64 unless ``events`` is float32).

    Raises
    ------
    CompensationError
        If a spillover channel is not among ``channel_names`` or shapes disagree.
    """
    names = list(channel_names)
    if events.ndim != 2 or events.shape[1] != len(names):
        raise CompensationError(
            f"compensate: events have shape {events.shape} but {len(names)} channel names "
            "were given"
        )
    missing = [c for c in spill.channels if c not in names]
    if missing:
        raise CompensationError(
            f"compensate: spillover ({spill.source}) channels {missing} are not among the "
            f"event columns {names}"
        )
    idx = [names.index(c) for c in spill.channels]
    dtype = events.dtype if events.dtype in (np.float32, np.float64) else np.float64
    out = events.astype(dtype, copy=True)
    # Same operation as FlowKit/FlowUtils (solve, not an explicit inverse): identical numbers.
    out[:, idx] = np.linalg.solve(spill.matrix.T.astype(dtype), out[:, idx].T).T
    return out
