"""FCS input and deterministic table output: the only module that opens FCS files.

Contract
--------
``read_fcs(path)`` returns an :class:`FcsSample` whose ``events`` equal FlowKit's
``Sample(path).get_events(source='raw')`` (``$PnE`` log amplification, ``$PnG`` gain and
``$TIMESTEP`` applied) for every file FlowKit reads, or raises :class:`~nkflow.errors.FcsError`
naming the file and the exact problem. Nothing else escapes: a reader exception of any other
type is turned into an ``FcsError`` at this boundary. Where FlowKit departs from the FCS
standard nkflow follows the standard (docs/fcs-conformance.md, clause by clause): float data
(``$DATATYPE`` F or D) is linear by FCS 3.1, so a ``$PnE`` with log decades on a float channel
is not applied (FlowKit applies it: stored 1 to 10,000 become 1 to 1e39, inf in float32); the
stored values are kept and the non-compliance is recorded as ``float_pne_ignored``. A
``$TIMESTEP`` <= 0 and a ``$PnG`` <= 0 are not applied (FlowKit multiplies by the first and
divides by a negative gain), both recorded. FCS 3.2 files are read, including layouts whose
columns differ in value type (``$PnDATATYPE``), which FlowKit misreads.

nkflow parses the HEADER and TEXT segments itself (keywords keep their ``$``; keys are
upper-cased) and checks integrity before any event is decoded:

* the DATA segment must hold exactly ``$TOT x $PAR x bytes per value`` bytes and lie inside
  the file (a truncated file or a wrong ``$TOT`` is refused; partial data is never analysed);
* known recoverable defects are read with FlowIO's tolerance switches
  (``ignore_offset_error``, ``ignore_offset_discrepancy``, ``use_header_offsets``,
  ``nextdata_offset``) and every switch used is recorded in ``FcsSample.warnings``;
* float channels declaring log amplification (``$PnE`` decades > 0, against FCS 3.1) are read
  linear, as stored, and recorded in ``FcsSample.warnings`` (``float_pne_ignored``);
* non-compliant scaling keywords are recorded: ``$PnE`` ``f1,0`` (read as ``f1,1``), a missing
  ``$PnE`` in FCS 3.x (linear), ``$PnG`` with log ``$PnE`` (``log_with_gain``), ``$PnG`` or
  ``$TIMESTEP`` <= 0 (not applied); an integer ``$PnR`` of 0 or a negative ``$PnE`` is refused;
* FCS 3.2 ``$PnTYPE``, ``$PnFEATURE`` and ``$PnANALYTE`` are kept on each :class:`Channel`
  (panel resolution uses them); ``$MODE`` may be absent in FCS 3.2;
* TEXT that is not valid UTF-8 is decoded as Latin-1, with a warning;
* integer widths FlowIO cannot decode (for example 24 bit) are refused with the reason.

FlowIO parses TEXT as a cross-check and decodes unmasked integer DATA; float/double DATA, and
integer DATA that FlowIO would mask or split in a per-byte Python loop (``$PnR`` masks, mixed
``$PnB``, FCS 3.2 mixed value types), are decoded here in numpy with the same semantics. The scaling to "raw" values is done in numpy, in place, with the
same operations and order as FlowIO's ``FlowData.as_array(preprocess=True)``. Peak memory is at
most about two copies of the float64 event matrix (measured 1.3x int16, 1.5x float32, 2.1x
float64 for 1 M x 12 events).
"""

from __future__ import annotations

import logging
import math
import re
import warnings as _warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

from nkflow.errors import FcsError
from nkflow.provenance import sha256_file

logger = logging.getLogger(__name__)

__all__ = [
    "Channel",
    "FcsSample",
    "FcsHeader",
    "read_fcs",
    "read_fcs_metadata",
]

SUPPORTED_VERSIONS = ("FCS2.0", "FCS3.0", "FCS3.1", "FCS3.2")
_HEADER_LEN = 58
_LARGE_FILE_LIMIT = 99_999_999
_MAX_DATASETS = 16
_BYTE_ORDERS = {"1,2,3,4": "little", "1,2": "little", "4,3,2,1": "big", "2,1": "big"}
_INT_WIDTHS = (8, 16, 32)


@dataclass(frozen=True)
class Channel:
    """One parameter (column) of an FCS data set.

    Attributes
    ----------
    index : int
        0-based column in ``FcsSample.events``.
    pnn : str
        ``$PnN`` (short name, the detector).
    pns : str
        ``$PnS`` (stain/marker); ``''`` when absent or whitespace only.
    pnr : float
        ``$PnR`` range.
    pne : tuple of float
        ``$PnE`` (decades, value of log 0) as written; ``(0.0, 0.0)`` when absent.
    png : float
        ``$PnG`` gain; 1.0 when absent.
    pnb : int
        ``$PnB`` bits per value.
    datatype : str
        Value type of this column: ``'I'``, ``'F'`` or ``'D'``; FCS 3.2 ``$PnDATATYPE`` when
        given, else ``$DATATYPE``.
    pntype : str
        FCS 3.2 ``$PnTYPE`` (``Forward_Scatter``, ``Side_Scatter``, ``Raw_Fluorescence``,
        ``Unmixed_Fluorescence``, ``Time``, ...) as written; ``''`` when absent.
    feature : str
        FCS 3.2 ``$PnFEATURE`` (``Area``, ``Height``, ``Width``); ``''`` when absent.
    analyte : str
        FCS 3.2 ``$PnANALYTE`` (the marker measured, e.g. ``CD56``); ``''`` when absent.
    """

    index: int
    pnn: str
    pns: str
    pnr: float
    pne: tuple[float, float]
    png: float
    pnb: int = 0
    datatype: str = ""
    pntype: str = ""
    feature: str = ""
    analyte: str = ""

    @property
    def kind(self) -> str:
        """``$PnTYPE`` reduced to a kind, or ``''`` when the file does not say.

        The kinds are ``'scatter'``, ``'time'``, ``'fluorescence'`` and ``'other'``; case, spaces
        and underscores are ignored.
        """
        return pntype_kind(self.pntype)


@dataclass(frozen=True)
class FcsSample:
    """A read FCS data set: keywords, channels, events and what the reader had to tolerate.

    Attributes
    ----------
    path : Path
        The file read.
    sha256 : str
        Hex sha256 of the whole file.
    version : str
        ``'FCS2.0'``, ``'FCS3.0'``, ``'FCS3.1'`` or ``'FCS3.2'`` (of the data set read).
    keywords : dict of str to str
        TEXT keywords, keys upper-cased with their ``$`` (``'$TOT'``, ``'$SPILLOVER'``,
        ``'SPILL'``), values as written.
    channels : tuple of Channel
        In column order.
    events : numpy.ndarray
        ``(n_events, n_channels)``, ``float64`` unless another dtype was requested.
    warnings : tuple of str
        Tolerance switches used, recoverable defects, decoding fallbacks.
    dataset : int
        0-based index of the data set read when the file holds several.
    n_datasets : int
        Number of data sets found in the file.
    """

    path: Path
    sha256: str
    version: str
    keywords: dict[str, str]
    channels: tuple[Channel, ...]
    events: np.ndarray = field(repr=False)
    warnings: tuple[str, ...] = ()
    dataset: int = 0
    n_datasets: int = 1

    @property
    def n_events(self) -> int:
        """Number of events (rows)."""
        return int(self.events.shape[0])

    @property
    def channel_names(self) -> tuple[str, ...]:
        """``$PnN`` of every channel, in column order."""
        return tuple(c.pnn for c in self.channels)

    @property
    def timestep(self) -> float | None:
        """``$TIMESTEP`` as a float, or None when absent or not a number."""
        return _float_or_none(self.keywords.get("$TIMESTEP"))

    @property
    def instrument(self) -> str:
        """``$CYT`` (instrument), ``''`` when absent."""
        return self.keywords.get("$CYT", "").strip()

    @property
    def datatype(self) -> str:
        """``$DATATYPE`` upper-cased: ``'I'``, ``'F'`` or ``'D'``.

        An FCS 3.2 column may differ: :attr:`Channel.datatype`.
        """
        return self.keywords.get("$DATATYPE", "").strip().upper()

    @property
    def byte_order(self) -> str:
        """``'little'`` or ``'big'``."""
        return _BYTE_ORDERS.get(_norm_byteord(self.keywords.get("$BYTEORD", "")), "unknown")

    @property
    def acquisition_date(self) -> str | None:
        """``$DATE`` as ISO ``YYYY-MM-DD``, else the date of ``$BEGINDATETIME``, else None.

        None when neither parses; ``$BEGINDATETIME`` is FCS 3.2's (ISO 8601), which 3.2 prefers to
        the deprecated ``$DATE``.
        """
        parsed = parse_fcs_date(self.keywords.get("$DATE", ""))
        if parsed is None:
            begin = self.keywords.get("$BEGINDATETIME", "").strip()
            parsed = parse_fcs_date(begin[:10]) if re.match(r"\d{4}-\d{2}-\d{2}", begin) else None
        return parsed.isoformat() if parsed else None


@dataclass(frozen=True)
class FcsHeader:
    """HEADER, TEXT and layout of one data set, before any event is decoded.

    Produced by :func:`read_fcs_metadata`; ``nkflow inspect`` uses it for files whose
    DATA cannot be read.
    """

    path: Path
    version: str
    keywords: dict[str, str]
    channels: tuple[Channel, ...]
    warnings: tuple[str, ...]
    dataset: int
    n_datasets: int
    data_start: int  # absolute file offset of the first DATA byte
    data_stop: int  # absolute file offset of the last DATA byte (inclusive)
    bytes_per_event: int
    reader_options: dict[str, Any]


# --------------------------------------------------------------------------- helpers

_PNTYPE_KINDS = {
    "FORWARDSCATTER": "scatter",
    "SIDESCATTER": "scatter",
    "TIME": "time",
    "RAWFLUORESCENCE": "fluorescence",
    "UNMIXEDFLUORESCENCE": "fluorescence",
}


def pntype_kind(pntype: str) -> str:
    """Reduce an FCS 3.2 ``$PnTYPE`` value to the kind nkflow acts on.

    ``Forward_Scatter``/``Side_Scatter`` -> ``'scatter'``, ``Time`` -> ``'time'``,
    ``Raw_Fluorescence``/``Unmixed_Fluorescence`` -> ``'fluorescence'``, any other value
    (``Mass``, ``Electronic_Volume``, ``Index``, ``Classification``, vendor types) ->
    ``'other'``, absent -> ``''``. Case, spaces, hyphens and underscores are ignored: FCS 3.2
    writers spell the values ``Forward_Scatter`` (Cytek) or ``Forward Scatter``.
    """
    key = re.sub(r"[\s_-]+", "", pntype).upper()
    if not key:
        return ""
    return _PNTYPE_KINDS.get(key, "other")


def _float_or_none(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        out = float(value.strip())
    except ValueError:
        return None
    return out if math.isfinite(out) else None


def _norm_byteord(value: str) -> str:
    return re.sub(r"\s+", "", value)


_DATE_FORMATS = (
    "%d-%b-%Y",
    "%d %b %Y",
    "%Y-%m-%d",
    "%d-%b-%y",
    "%Y-%b-%d",
    "%d-%B-%Y",
    "%d/%m/%Y",
    "%m/%d/%Y",
    "%Y/%m/%d",
    "%d.%m.%Y",
)


def parse_fcs_date(value: str) -> date | None:
    """Parse an FCS ``$DATE`` (``dd-mmm-yyyy`` per the standard, common variants tolerated).

    Returns
    -------
    datetime.date or None
        None when empty, not recognised, or ambiguous: ``03/02/2024`` reads as 3 February
        day-first and 2 March month-first, and the file does not say which it means.
    """
    text = value.strip()
    if not text:
        return None
    readings: set[date] = set()
    for fmt in _DATE_FORMATS:
        try:
            readings.add(datetime.strptime(text, fmt).date())
        except ValueError:
            continue
    return readings.pop() if len(readings) == 1 else None


def _decode_text(raw: bytes, where: int, warns: list[str]) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad = raw[exc.start]
        warns.append(
            f"TEXT segment is not valid UTF-8 (byte 0x{bad:02X} at file offset "
            f"{where + exc.start}); decoded as Latin-1"
        )
        return raw.decode("latin-1")


def _split_text(text: str, name: str, warns: list[str], label: str = "TEXT") -> dict[str, str]:
    """Split a delimited TEXT segment into upper-cased keyword -> value.

    The first character is the delimiter; a doubled delimiter is a literal delimiter.
    """
    if not text:
        raise FcsError(f"{name}: {label} segment is empty; expected delimited keyword/value pairs")
    delim = text[0]
    tokens: list[str] = []
    cur: list[str] = []
    i, n = 1, len(text)
    while i < n:
        j = text.find(delim, i)
        if j < 0:
            cur.append(text[i:])
            break
        cur.append(text[i:j])
        if j + 1 < n and text[j + 1] == delim:
            cur.append(delim)
            i = j + 2
            continue
        tokens.append("".join(cur))
        cur = []
        i = j + 1
    tail = "".join(cur)
    if tail.strip("\x00 \r\n"):
        tokens.append(tail)
        warns.append(f"{label} segment does not end with its delimiter {delim!r}")
    if len(tokens) % 2:
        warns.append(
            f"{label} segment has a keyword without a value ({tokens[-1][:40]!r}); it was ignored"
        )
        tokens.pop()
    out: dict[str, str] = {}
    for k, v in zip(tokens[0::2], tokens[1::2], strict=True):
        key = k.strip().upper()
        if key in out and out[key] != v:
            warns.append(f"{label} keyword {key} appears twice; the last value {v[:40]!r} is used")
        out[key] = v
    return out


def _int_kw(kw: Mapping[str, str], key: str, name: str, *, minimum: int = 0) -> int:
    raw = kw.get(key)
    if raw is None:
        raise FcsError(f"{name}: required keyword {key} is missing from TEXT")
    try:
        value = int(raw.strip())
    except ValueError:
        raise FcsError(f"{name}: keyword {key} is {raw[:40]!r}; expected a whole number") from None
    if value < minimum:
        raise FcsError(f"{name}: keyword {key} is {value}; expected >= {minimum}")
    return value


def _opt_offset(kw: Mapping[str, str], key: str) -> int | None:
    raw = kw.get(key)
    if raw is None:
        return None
    try:
        return int(raw.strip())
    except ValueError:
        return None


def _read_header(fh: Any, base: int, file_size: int, name: str) -> tuple[str, list[int]]:
    fh.seek(base)
    head = fh.read(_HEADER_LEN)
    if len(head) < 42:
        raise FcsError(
            f"{name}: HEADER at byte {base} is {len(head)} bytes long; expected 58 "
            "(file truncated or not an FCS file)"
        )
    version = head[:6].decode("ascii", errors="replace")
    if not re.fullmatch(r"FCS\d\.\d", version):
        raise FcsError(
            f"{name}: does not start with an FCS version (found {head[:6]!r} at byte {base}); "
            "expected 'FCS2.0', 'FCS3.0', 'FCS3.1' or 'FCS3.2'"
        )
    if version not in SUPPORTED_VERSIONS:
        raise FcsError(
            f"{name}: FCS version {version!r} is not supported; expected one of "
            f"{', '.join(SUPPORTED_VERSIONS)}"
        )
    offsets: list[int] = []
    labels = ("TEXT start", "TEXT end", "DATA start", "DATA end", "ANALYSIS start", "ANALYSIS end")
    for k, label in enumerate(labels):
        chunk = head[10 + 8 * k : 18 + 8 * k]
        txt = chunk.decode("ascii", errors="replace").strip()
        # a blank DATA offset stops FlowIO (which reads every file's TEXT for the cross-check)
        if (txt and not txt.isdigit() and k < 4) or (not txt and k in (2, 3)):
            raise FcsError(
                f"{name}: HEADER {label} offset (bytes {10 + 8 * k}-{17 + 8 * k}) is "
                f"{chunk!r}; expected a right-justified ASCII number (FCS 3.x allows 0 when "
                "TEXT gives $BEGINDATA/$ENDDATA); re-export the file from the acquisition "
                "software, or correct these HEADER bytes in a copy of it"
            )
        # a blank TEXT offset reads as 0 (refused below); ANALYSIS offsets that are blank or not
        # numbers read as 0 (optional, often garbage)
        offsets.append(int(txt) if txt.isdigit() else 0)
    t0, t1 = offsets[0], offsets[1]
    if not (_HEADER_LEN - 1 <= t0 <= t1) or base + t1 >= file_size:
        raise FcsError(
            f"{name}: HEADER TEXT offsets {t0}-{t1} are impossible for a file of "
            f"{file_size} bytes (data set at byte {base}); expected 58 <= start <= end < size"
        )
    if t1 - t0 > 50_000_000:
        raise FcsError(f"{name}: TEXT segment of {t1 - t0 + 1} bytes is implausibly large")
    return version, offsets


def _channels_from_keywords(
    kw: Mapping[str, str], name: str, file_datatype: str, version: str, warns: list[str]
) -> list[Channel]:
    par = _int_kw(kw, "$PAR", name, minimum=1)
    if par > 10_000:
        raise FcsError(f"{name}: $PAR is {par}; expected at most 10000 parameters")
    out: list[Channel] = []
    ignored_pndatatype: list[str] = []
    for n in range(1, par + 1):
        pnn = kw.get(f"$P{n}N")
        if pnn is None:
            raise FcsError(
                f"{name}: $PAR is {par} but keyword $P{n}N is missing; every parameter needs "
                "a $PnN name"
            )
        datatype = file_datatype
        pndt = kw.get(f"$P{n}DATATYPE")
        if pndt is not None and version == "FCS3.2":
            # FCS 3.2: $PnDATATYPE overrides $DATATYPE for parameter n (mixed layouts)
            datatype = pndt.strip().upper()
            if datatype not in ("I", "F", "D"):
                raise FcsError(
                    f"{name}: $P{n}DATATYPE (value type of channel {pnn!r}) is {pndt[:40]!r}; "
                    "expected I (integer), F (float) or D (double)"
                )
        elif pndt is not None and pndt.strip().upper() != file_datatype:
            ignored_pndatatype.append(f"$P{n}DATATYPE={pndt.strip()[:10]}")
        pnb_raw = kw.get(f"$P{n}B", "").strip()
        try:
            pnb = int(pnb_raw)
        except ValueError:
            if datatype == "I" or not pnb_raw or pnb_raw != "*":
                raise FcsError(
                    f"{name}: $P{n}B (bits of channel {pnn!r}) is {pnb_raw!r}; expected a "
                    "number of bits (8, 16, 32 or 64)"
                ) from None
            pnb = 0
        pnr_raw = kw.get(f"$P{n}R")
        if pnr_raw is None:
            raise FcsError(f"{name}: $P{n}R (range of channel {pnn!r}) is missing")
        pnr = _float_or_none(pnr_raw)
        if pnr is None or (
            datatype == "I" and (not re.fullmatch(r"\s*\d+\s*", pnr_raw) or pnr < 1)
        ):
            # FCS 3.1 $PnR: integer values lie in 0 .. $PnR - 1 and are masked to it, so a
            # range of 0 would mask every value to 0
            raise FcsError(
                f"{name}: $P{n}R (range of channel {pnn!r}) is {pnr_raw[:40]!r}; expected "
                + ("a whole number >= 1 for integer data" if datatype == "I" else "a number")
            )
        # an absent $PnE reads as linear (0,0), an absent $PnG as a gain of 1
        pne_raw = kw.get(f"$P{n}E", "0,0")
        parts = pne_raw.split(",")
        vals = [_float_or_none(p) for p in parts]
        if len(parts) != 2 or any(v is None for v in vals):
            raise FcsError(
                f"{name}: $P{n}E (amplification of channel {pnn!r}) is {pne_raw[:40]!r}; "
                "expected 'decades,log0' such as '0,0' or '4,1'"
            )
        pne = (float(vals[0]), float(vals[1]))  # type: ignore[arg-type]
        if pne[0] < 0 or pne[1] < 0:
            raise FcsError(
                f"{name}: $P{n}E (amplification of channel {pnn!r}) is {pne_raw[:40]!r}; "
                "FCS 3.1 $PnE/f1,f2/ has f1 (log decades) >= 0 and f2 (log0) >= 0"
            )
        png_raw = kw.get(f"$P{n}G", "1")
        png = _float_or_none(png_raw)
        if png is None:
            raise FcsError(
                f"{name}: $P{n}G (gain of channel {pnn!r}) is {png_raw[:40]!r}; expected a number"
            )
        pns = kw.get(f"$P{n}S", "")
        fcs32 = {
            attr: kw.get(f"$P{n}{key}", "").strip() if version == "FCS3.2" else ""
            for attr, key in (("pntype", "TYPE"), ("feature", "FEATURE"), ("analyte", "ANALYTE"))
        }
        out.append(
            Channel(
                index=n - 1,
                pnn=pnn,
                pns=pns if pns.strip() else "",
                pnr=pnr,
                pne=pne,
                png=png,
                pnb=pnb,
                datatype=datatype,
                **fcs32,
            )
        )
    if ignored_pndatatype:
        warns.append(
            f"{', '.join(ignored_pndatatype)} ignored: $PnDATATYPE is an FCS 3.2 keyword and "
            f"this is an {version} file, whose values are all $DATATYPE {file_datatype}"
        )
    return out


def _value_bytes(c: Channel) -> int:
    """Bytes of one value of channel ``c`` in DATA."""
    if c.datatype == "I":
        return c.pnb // 8
    return 4 if c.datatype == "F" else 8


def _bytes_per_event(channels: list[Channel], name: str, warns: list[str]) -> int:
    bad = [c for c in channels if c.datatype == "I" and c.pnb not in _INT_WIDTHS]
    if bad:
        c = bad[0]
        raise FcsError(
            f"{name}: integer data with {c.pnb}-bit values ($P{c.index + 1}B={c.pnb}, "
            f"channel {c.pnn!r}); the FCS reader (FlowIO) decodes only 8, 16 and 32-bit "
            "integers. Re-export the file from the acquisition software as FCS 3.1 "
            "float data"
        )
    for dt, width in (("F", 4), ("D", 8)):
        odd = [c for c in channels if c.datatype == dt and c.pnb not in (0, width * 8)]
        if odd:
            warns.append(
                f"$DATATYPE {dt} needs {width * 8}-bit values but $PnB is "
                f"{sorted({c.pnb for c in odd})}; read as {width * 8}-bit"
            )
    return sum(_value_bytes(c) for c in channels)


@dataclass
class _Layout:
    version: str
    keywords: dict[str, str]
    channels: list[Channel]
    warnings: list[str]
    base: int
    data_start: int  # relative to base
    data_stop: int
    bytes_per_event: int
    options: dict[str, Any]
    nextdata: int


def _parse_dataset(fh: Any, base: int, file_size: int, name: str) -> _Layout:
    warns: list[str] = []
    version, offsets = _read_header(fh, base, file_size, name)
    t0, t1, h_d0, h_d1 = offsets[:4]
    fh.seek(base + t0)
    raw_text = fh.read(t1 - t0 + 1)
    text = _decode_text(raw_text, base + t0, warns)
    kw = _split_text(text, name, warns)

    # FCS 3.x supplemental TEXT: merged, primary keywords win
    s0, s1 = _opt_offset(kw, "$BEGINSTEXT"), _opt_offset(kw, "$ENDSTEXT")
    if s0 and s1 and s1 > s0 and (s0, s1) != (t0, t1) and base + s1 < file_size:
        fh.seek(base + s0)
        try:
            extra = _split_text(
                _decode_text(fh.read(s1 - s0 + 1), base + s0, warns),
                name,
                warns,
                label="supplemental TEXT",
            )
        except FcsError as exc:
            warns.append(f"supplemental TEXT ignored: {exc}")
            extra = {}
        for k, v in extra.items():
            kw.setdefault(k, v)

    datatype = kw.get("$DATATYPE", "").strip().upper()
    if datatype not in ("I", "F", "D"):
        raise FcsError(
            f"{name}: $DATATYPE is {kw.get('$DATATYPE')!r}; nkflow reads I (integer), "
            "F (float) or D (double) list-mode data"
        )
    mode = kw.get("$MODE", "L").strip().upper()
    if mode != "L":
        raise FcsError(
            f"{name}: $MODE is {mode!r} (histogram data); only list mode 'L' holds events"
        )
    if "$MODE" not in kw and version != "FCS3.2":
        # FCS 3.2 deprecated $MODE (list mode is the only mode left), so it may be absent there
        raise FcsError(f"{name}: required keyword $MODE is missing; expected 'L' (list mode)")
    byteord_raw = kw.get("$BYTEORD", "")
    if _norm_byteord(byteord_raw) not in _BYTE_ORDERS:
        raise FcsError(
            f"{name}: $BYTEORD is {byteord_raw!r}; expected '1,2,3,4' (little endian) "
            "or '4,3,2,1' (big endian)"
        )
    if byteord_raw not in _BYTE_ORDERS:
        # FlowIO compares the raw value; anything else silently decodes in machine order
        raise FcsError(
            f"{name}: $BYTEORD is {byteord_raw!r} (extra spaces); the FCS reader would decode "
            f"it in the machine's byte order, so the file is refused; rewrite the keyword as "
            f"{_norm_byteord(byteord_raw)!r}"
        )
    if kw.get("$TOT", "").strip() == "0":
        raise FcsError(f"{name}: $TOT is 0: the file holds no events")
    tot = _int_kw(kw, "$TOT", name, minimum=1)
    channels = _channels_from_keywords(kw, name, datatype, version, warns)
    no_pne = [c for c in channels if f"$P{c.index + 1}E" not in kw]
    if no_pne and version != "FCS2.0":
        # $PnE is optional in FCS 2.0 but required from FCS 3.0 on
        warns.append(
            f"required keyword $PnE is missing for {', '.join(repr(c.pnn) for c in no_pne)} "
            f"({version} requires it for every parameter); read as linear ($PnE 0,0)"
        )
    bpe = _bytes_per_event(channels, name, warns)
    expected = tot * bpe

    nextdata_raw = kw.get("$NEXTDATA", "0").strip() or "0"
    try:
        nextdata = int(nextdata_raw)
    except ValueError:
        warns.append(f"$NEXTDATA is {nextdata_raw!r}, not a number; treated as 0")
        nextdata = 0

    # Which DATA offsets to use, and which FlowIO tolerance that needs
    options: dict[str, Any] = {
        "ignore_offset_error": False,
        "ignore_offset_discrepancy": False,
        "use_header_offsets": False,
    }
    t_d0, t_d1 = _opt_offset(kw, "$BEGINDATA"), _opt_offset(kw, "$ENDDATA")

    def fits(d0: int, d1: int) -> bool:
        outside_text = d1 < t0 or d0 > t1
        in_file = d0 >= _HEADER_LEN and base + d1 < file_size
        return outside_text and in_file and d1 - d0 + 1 in (expected, expected + 1)

    if version == "FCS2.0":
        d0, d1 = h_d0, h_d1
    elif t_d0 is None or t_d1 is None or (t_d0 == 0 and t_d1 == 0):
        d0, d1 = h_d0, h_d1
        options["use_header_offsets"] = True
        warns.append(
            "$BEGINDATA/$ENDDATA missing or zero in TEXT; DATA offsets taken from the HEADER "
            "(reader option use_header_offsets)"
        )
    elif (t_d0, t_d1) == (h_d0, h_d1) or (h_d0 == 0 and h_d1 == 0 and t_d1 > _LARGE_FILE_LIMIT):
        d0, d1 = t_d0, t_d1
    else:
        hdr, txt = f"{h_d0}-{h_d1}", f"{t_d0}-{t_d1}"
        text_end = max(t1, s1 or 0)
        cands = [
            (lab, a, b, opt)
            for lab, a, b, opt in (
                ("TEXT", t_d0, t_d1, "ignore_offset_discrepancy"),
                ("HEADER", h_d0, h_d1, "use_header_offsets"),
            )
            if fits(a, b)
        ]
        why = "they alone lie outside TEXT, inside the file and hold $TOT x bytes per event"
        if len(cands) == 2:
            # Both have the right length: DATA written straight after TEXT is the only
            # layout evidence left (Beckman Cyan: TEXT offsets shift every column).
            adjacent = [c for c in cands if c[1] == text_end + 1]
            cands = adjacent if len(adjacent) == 1 else cands
            why = f"both hold {expected} bytes; only these start right after TEXT"
        if len(cands) != 1:
            raise FcsError(
                f"{name}: DATA offsets disagree (HEADER {hdr}, TEXT {txt}) and "
                + (
                    "both hold the expected bytes, so nkflow cannot tell which is right"
                    if cands
                    else f"neither holds $TOT x $PAR x bytes per value = {tot} x "
                    f"{len(channels)} x {_bpv_text(channels)} = {expected} bytes "
                    f"outside TEXT and inside the {file_size}-byte file"
                )
                + "; refusing misaligned data. Re-export the file from the acquisition software"
            )
        lab, d0, d1, opt = cands[0]
        options[opt] = True
        warns.append(
            f"DATA offsets disagree: HEADER {hdr} vs TEXT {txt}; the {lab} offsets were used "
            f"because {why} (reader option {opt})"
        )

    seg = d1 - d0 + 1
    if d0 <= 0 or d1 < d0:
        raise FcsError(
            f"{name}: DATA offsets {d0}-{d1} are impossible (data set at byte {base}); "
            f"expected {expected} bytes after the TEXT segment"
        )
    if base + d1 >= file_size:
        have = max(0, file_size - (base + d0))
        raise FcsError(
            f"{name}: file is truncated: DATA segment should span bytes {base + d0}-{base + d1} "
            f"({d1 - d0 + 1} bytes; $TOT x $PAR x bytes per value = {tot} x {len(channels)} x "
            f"{_bpv_text(channels)} = {expected}) but the file has {file_size} bytes, "
            f"so only {have} bytes ({have // bpe if bpe else 0} whole events of {tot}) are present"
        )
    if seg == expected + 1:
        options["ignore_offset_error"] = True
        warns.append(
            f"DATA end offset {d1} is one byte past the last data byte ({seg} bytes for "
            f"{expected} expected); read with reader option ignore_offset_error"
        )
    elif seg != expected:
        found_events = seg / bpe if bpe else 0
        raise FcsError(
            f"{name}: DATA segment length mismatch: bytes {d0}-{d1} hold {seg} bytes but "
            f"$TOT x $PAR x bytes per value = {tot} x {len(channels)} x "
            f"{_bpv_text(channels)} = {expected} bytes "
            f"(the segment holds {found_events:g} events, $TOT says {tot}); "
            "the file is corrupt or $TOT is wrong, refusing partial data"
        )
    return _Layout(
        version=version,
        keywords=dict(kw),
        channels=channels,
        warnings=warns,
        base=base,
        data_start=d0,
        data_stop=d1 - (1 if options["ignore_offset_error"] else 0),
        bytes_per_event=bpe,
        options=options,
        nextdata=nextdata,
    )


def _bpv_text(channels: list[Channel]) -> str:
    widths = [_value_bytes(c) for c in channels]
    if len(set(widths)) == 1:
        return str(widths[0])
    return f"({'+'.join(str(w) for w in widths)})/{len(channels)}"


def _scan(path: Path, dataset: int) -> tuple[_Layout, int]:
    """Parse HEADER/TEXT of every data set (following $NEXTDATA) and return the chosen one."""
    name = path.name
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed in finally
    except OSError as exc:
        raise FcsError(f"{path}: cannot open FCS file ({exc.strerror or exc})") from exc
    try:
        fh.seek(0, 2)
        file_size = fh.tell()
        if file_size < _HEADER_LEN:
            raise FcsError(
                f"{name}: file has {file_size} bytes; an FCS file has at least a 58-byte HEADER"
            )
        bases = [0]  # byte offset of each data set found
        layouts: list[_Layout] = []
        while True:
            if len(bases) > _MAX_DATASETS:
                raise FcsError(f"{name}: more than {_MAX_DATASETS} data sets chained by $NEXTDATA")
            idx, base = len(bases) - 1, bases[-1]
            try:
                lay = _parse_dataset(fh, base, file_size, name)
            except FcsError as exc:
                if idx == dataset or idx == 0:
                    raise
                # a broken later data set does not spoil the one asked for
                layouts[0].warnings.append(
                    f"data set {idx + 1} at byte {base} is unreadable and was ignored ({exc})"
                )
                break
            layouts.append(lay)
            nxt = lay.nextdata
            if nxt <= 0:
                if nxt < 0:
                    lay.warnings.append(f"$NEXTDATA is negative ({nxt}); ignored")
                break
            new_base = base + nxt
            if new_base in bases or new_base + _HEADER_LEN > file_size:
                layouts[0].warnings.append(
                    f"$NEXTDATA points to byte {new_base}, outside the file or back to an "
                    "earlier data set; ignored"
                )
                break
            bases.append(new_base)
        n_sets = len(layouts)
        if not 0 <= dataset < n_sets:
            raise FcsError(
                f"{name}: data set {dataset + 1} was asked for but the file holds {n_sets}"
            )
        chosen = layouts[dataset]
        if n_sets > 1 and dataset == 0:
            sets = ", ".join(
                f"{i + 1}: {lay.version} at byte {lay.base}, "
                f"{lay.keywords.get('$TOT', '?').strip()} events"
                for i, lay in enumerate(layouts)
            )
            chosen.warnings.append(
                f"file holds {n_sets} data sets ({sets}); data set 1 was read "
                "(reader option nextdata_offset=0)"
            )
        elif n_sets > 1:
            chosen.warnings.append(
                f"file holds {n_sets} data sets; data set {dataset + 1} at byte {chosen.base} "
                f"was read (reader option nextdata_offset={chosen.base})"
            )
        chosen.options["nextdata_offset"] = chosen.base
        return chosen, n_sets
    finally:
        fh.close()


def read_fcs_metadata(path: str | Path, *, dataset: int = 0) -> FcsHeader:
    """Read HEADER and TEXT of one data set and check the DATA layout, without decoding events.

    Parameters
    ----------
    dataset : int
        0-based data set index for files holding several (``.lmd``).

    Raises
    ------
    FcsError
        For anything that would make :func:`read_fcs` refuse the file before decoding.
    """
    p = Path(path)
    lay, n_sets = _scan(p, dataset)
    return FcsHeader(
        path=p,
        version=lay.version,
        keywords=lay.keywords,
        channels=tuple(lay.channels),
        warnings=tuple(lay.warnings),
        dataset=dataset,
        n_datasets=n_sets,
        data_start=lay.base + lay.data_start,
        data_stop=lay.base + lay.data_stop,
        bytes_per_event=lay.bytes_per_event,
        reader_options=dict(lay.options),
    )


def _next_pow2(x: int) -> int:
    return 1 if x == 0 else 2 ** (x - 1).bit_length()


def _int_needs_numpy(lay: _Layout) -> bool:
    """True when FlowIO would decode integers in a per-byte Python loop, or cannot decode at all.

    The loop comes with masks or mixed widths; FlowIO cannot decode FCS 3.2 columns of different
    types (it reads every value as $DATATYPE).
    """
    if len({c.datatype for c in lay.channels}) > 1:  # FCS 3.2 mixed value types ($PnDATATYPE)
        return True
    if lay.keywords.get("$DATATYPE", "").strip().upper() != "I":
        return False
    widths = {c.pnb for c in lay.channels}
    if len(widths) > 1:
        return True
    return any(2**c.pnb > _next_pow2(int(c.pnr)) for c in lay.channels)


def _decode_int_numpy(path: Path, lay: _Layout, dtype: np.dtype) -> np.ndarray:
    """Decode integer (or FCS 3.2 mixed-type) DATA with FlowIO's integer semantics in numpy.

    Integer columns are masked to the next power of 2 of $PnR, as FlowIO does in a per-byte
    Python loop (seconds per million events); the public file tests check this path bit for bit
    against FlowIO/FlowKit. Float and double columns of a mixed FCS 3.2 layout are read as
    stored.
    """
    order = "<" if _BYTE_ORDERS[lay.keywords["$BYTEORD"]] == "little" else ">"
    fields = [
        (f"c{c.index}", f"{order}{'u' if c.datatype == 'I' else 'f'}{_value_bytes(c)}")
        for c in lay.channels
    ]
    rec = np.dtype(fields)
    tot = int(lay.keywords["$TOT"].strip())
    offset = lay.base + lay.data_start
    try:
        raw = np.fromfile(path, dtype=rec, count=tot, offset=offset)
    except (OSError, ValueError) as exc:
        raise FcsError(f"{path.name}: cannot read the DATA segment ({exc})") from exc
    if raw.shape[0] != tot:
        raise FcsError(
            f"{path.name}: read {raw.shape[0]} events from DATA but $TOT is {tot}; refusing "
            "partial data"
        )
    events = np.empty((tot, len(lay.channels)), dtype=dtype)
    for c in lay.channels:
        col = raw[f"c{c.index}"]
        if c.datatype != "I":
            events[:, c.index] = col
            continue
        mask = _next_pow2(int(c.pnr)) - 1
        if 2**c.pnb > mask + 1:
            col = col & np.asarray(mask, dtype=col.dtype.newbyteorder("="))
        events[:, c.index] = col
    return events


def _decode_float_numpy(path: Path, lay: _Layout, dtype: np.dtype) -> np.ndarray:
    """Decode float/double DATA straight from the file with ``np.fromfile``.

    The layout (offsets, after any tolerance) has been checked against ``$TOT x $PAR x bytes``
    already; FlowIO would read the whole file into memory and copy it again. float32 -> float64
    is exact, so the result is bit-identical (the public file tests check it against FlowKit).
    """
    order = "<" if _BYTE_ORDERS[lay.keywords["$BYTEORD"]] == "little" else ">"
    width = 4 if lay.keywords["$DATATYPE"].strip().upper() == "F" else 8
    tot = int(lay.keywords["$TOT"].strip())
    par = len(lay.channels)
    try:
        flat = np.fromfile(
            path, dtype=f"{order}f{width}", count=tot * par, offset=lay.base + lay.data_start
        )
    except (OSError, ValueError) as exc:
        raise FcsError(f"{path.name}: cannot read the DATA segment ({exc})") from exc
    if flat.size != tot * par:
        raise FcsError(
            f"{path.name}: read {flat.size} values from DATA but $TOT x $PAR = {tot} x {par} = "
            f"{tot * par}; refusing partial data"
        )
    return flat.reshape(tot, par).astype(dtype)


def _decode_events(path: Path, lay: _Layout, dtype: np.dtype) -> np.ndarray:
    """Decode DATA with FlowIO and return the undecorated (n, par) matrix in ``dtype``."""
    import flowio

    name = path.name
    opts = dict(lay.options)
    fast_int = _int_needs_numpy(lay)
    fast_float = not fast_int and lay.keywords.get("$DATATYPE", "").strip().upper() in ("F", "D")
    try:
        with _warnings.catch_warnings():
            _warnings.simplefilter("ignore")
            # FlowIO always parses TEXT (cross-checked below); DATA is decoded here in numpy
            # where FlowIO would be slow (masked integers) or copy the file twice (floats)
            fd = flowio.FlowData(str(path), only_text=fast_int or fast_float, **opts)
    except Exception as exc:  # FlowIO raises many types; this is the one boundary
        raise FcsError(
            f"{name}: the FCS reader (FlowIO) could not decode the DATA segment: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    raw = fd.events
    fd.events = None
    par = len(lay.channels)
    tot = int(lay.keywords["$TOT"].strip())
    if (fd.channel_count, fd.event_count) != (par, tot) or [
        int(fd.text.get(f"p{c.index + 1}b", "0") or 0) if c.datatype == "I" else 0
        for c in lay.channels
    ] != [c.pnb if c.datatype == "I" else 0 for c in lay.channels]:
        raise FcsError(
            f"{name}: the FCS reader (FlowIO) parsed TEXT differently from nkflow "
            f"($PAR {fd.channel_count} vs {par}, $TOT {fd.event_count} vs {tot}, or $PnB); "
            "the TEXT segment is ambiguous (check delimiter escaping), refusing the file"
        )
    if fast_int:
        return _decode_int_numpy(path, lay, dtype)
    if fast_float:
        return _decode_float_numpy(path, lay, dtype)
    if raw is None:
        raise FcsError(f"{name}: the FCS reader (FlowIO) returned no event data")
    flat = np.asarray(raw)
    if flat.size != tot * par:
        raise FcsError(
            f"{name}: the reader decoded {flat.size} values but $TOT x $PAR = {tot} x {par} = "
            f"{tot * par}; refusing partial data"
        )
    events = flat.astype(dtype, copy=False).reshape(tot, par)  # no copy for float64 DATA
    del flat, raw
    return events


def _apply_scaling(events: np.ndarray, lay: _Layout, name: str, warns: list[str]) -> None:
    """Apply $TIMESTEP, $PnE and $PnG in place as FlowIO's ``as_array`` does, but $PnE on floats.

    FCS 3.1 ($PnE): "If the floating point data type is used (either $DATATYPE/F/ or
    $DATATYPE/D/), then all parameters shall be stored as linear with $PnE/0,0/". A float
    channel whose $PnE names log decades is therefore read as stored and the non-compliance is
    recorded as ``float_pne_ignored``; FlowIO and FlowKit compute ``10 ** (decades * x / $PnR)``,
    about 1e39 for a stored 10,000 with ``4,0`` and ``$PnR`` 1024 (inf in float32). A float
    ``0,f2`` changes no value in any reader and is not recorded. $PnG, the gain of a linear
    amplifier, still divides linear channels, float ones included, as in FlowIO.
    """
    # the last channel named time, as FlowIO
    time_index = next((c.index for c in reversed(lay.channels) if c.pnn.lower() == "time"), None)
    ts_raw = lay.keywords.get("$TIMESTEP")
    if ts_raw is not None and time_index is not None:
        ts = _float_or_none(ts_raw)
        if ts is None:
            why = "empty" if ts_raw.strip() == "" else "not a number, possibly anonymised"
            warns.append(
                f"$TIMESTEP is {ts_raw[:40]!r} ({why}); the time "
                f"channel {lay.channels[time_index].pnn!r} is left in raw units"
            )
        elif ts <= 0:
            # FlowIO multiplies by it: 0 would erase the clock, a negative value reverse it
            warns.append(
                f"$TIMESTEP is {ts_raw.strip()[:40]!r}; a time step must be > 0 seconds per "
                f"unit (FCS 3.1 $TIMESTEP), so the time channel "
                f"{lay.channels[time_index].pnn!r} is left in raw units"
            )
        else:
            events[:, time_index] *= ts
    datatype = lay.keywords.get("$DATATYPE", "").strip().upper()
    float_log = [c for c in lay.channels if c.datatype in ("F", "D") and c.pne[0] > 0]
    # log amplification is applied to integer channels only (a datatype is I, F or D)
    logged = [c for c in lay.channels if c.datatype == "I" and c.pne[0] > 0]
    for ch in lay.channels:
        decades, log0 = ch.pne
        if log0 == 0 and decades != 0:
            log0 = 1.0
        if decades > 0 and ch.datatype == "I":
            col = events[:, ch.index]
            np.multiply(col, decades, out=col)
            np.divide(col, ch.pnr, out=col)
            np.power(10.0, col, out=col)
            np.multiply(col, log0, out=col)
        gain = 1.0 if ch.index == time_index else ch.png
        if gain > 0 and gain != 1.0:
            events[:, ch.index] /= gain
    if float_log:
        found = ", ".join(
            f"$P{c.index + 1}E={c.pne[0]:g},{c.pne[1]:g} ({c.pnn})" for c in float_log
        )
        stores = (
            f"$DATATYPE {datatype} (floating point) data"
            if all(c.datatype == datatype for c in float_log)
            else "floating-point values ($PnDATATYPE F or D)"
        )
        warns.append(
            f"float_pne_ignored: {name} stores {stores} but "
            f"declares log amplification {found}; FCS 3.1 ($PnE): when $DATATYPE is F or D, "
            "all parameters are stored as linear and $PnE shall be 0,0. No log amplification "
            "was applied: the stored values were kept linear"
        )
    zero_log = [f"$P{c.index + 1}E={c.pne[0]:g},0" for c in logged if c.pne[1] == 0]
    if zero_log:
        warns.append(
            f"non-compliant log amplification {', '.join(zero_log)} (log0 must be > 0); read as "
            "log0=1 as the FCS standard prescribes"
        )
    bad_gain = [c for c in lay.channels if c.index != time_index and c.png <= 0]
    if bad_gain:
        found = ", ".join(f"$P{c.index + 1}G={c.png:g} ({c.pnn})" for c in bad_gain)
        warns.append(
            f"{found}: an amplifier gain must be > 0 (FCS 3.1 $PnG); no gain was applied to "
            "these channels (FlowIO skips a gain of 0 and divides by a negative one)"
        )
    log_gain = [c for c in logged if c.index != time_index and c.png > 0 and c.png != 1.0]
    if log_gain:
        found = ", ".join(
            f"$P{c.index + 1}E={c.pne[0]:g},{c.pne[1]:g} with $P{c.index + 1}G={c.png:g} ({c.pnn})"
            for c in log_gain
        )
        warns.append(
            f"log_with_gain: {found}; FCS 3.2 §3.3.46: $PnG shall not be used with logarithmic "
            "$PnE, so the scale of these channels is uncertain. Read as FlowIO/FlowKit do: "
            "10 ** (decades x value / $PnR) x log0, then divided by the gain"
        )


def read_fcs(
    path: str | Path,
    *,
    dtype: DTypeLike = np.float64,
    dataset: int = 0,
) -> FcsSample:
    """Read one FCS file into an :class:`FcsSample` after checking its integrity.

    Parameters
    ----------
    path : str or Path
        FCS 2.0, 3.0, 3.1 or 3.2 file.
    dtype : numpy dtype
        Event dtype. ``float64`` (default) is bit-identical to FlowKit's raw events (except
        a log ``$PnE`` on float data, kept linear: see the module contract); ``float32`` halves
        memory.
    dataset : int
        0-based data set for files holding several (``$NEXTDATA``, Beckman ``.lmd``).

    Raises
    ------
    FcsError
        If the file cannot be opened, its HEADER/TEXT are malformed, its DATA segment does not
        hold exactly ``$TOT x $PAR x bytes per value`` bytes, it is truncated, or its value
        encoding cannot be decoded. The message names the file and the mismatch.
    """
    p = Path(path)
    lay, n_sets = _scan(p, dataset)
    digest = sha256_file(p)  # readable: _scan has read its HEADER and TEXT
    warns = list(lay.warnings)
    events = _decode_events(p, lay, np.dtype(dtype))
    _apply_scaling(events, lay, p.name, warns)
    for w in warns:
        logger.warning("%s: %s", p.name, w)
    return FcsSample(
        path=p,
        sha256=digest,
        version=lay.version,
        keywords=lay.keywords,
        channels=tuple(lay.channels),
        events=events,
        warnings=tuple(warns),
        dataset=dataset,
        n_datasets=n_sets,
    )
