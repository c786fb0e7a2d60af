"""Panels: which markers a tube must have, and resolving them to channels of one FCS file.

Contract
--------
``load_panel(path) -> Panel`` reads and validates a panel YAML file (format in
docs/DEVELOPING.md); a malformed file raises :class:`~nkflow.errors.ConfigError` naming the
file and field. ``resolve(panel, sample) -> Resolution`` maps every declared marker to at most
one channel:

1. a per-instrument pin (``channel: {"<$CYT>": "<$PnN>"}``, or ``channel: "<$PnN>"`` for any
   instrument) wins;
2. otherwise ``$PnS`` is searched, then FCS 3.2 ``$PnANALYTE``, then ``$PnN``, comparing
   normalised labels (case, spaces and punctuation ignored, fluorochrome/filter parts split
   off: ``CD56 PE``, ``CD56-PE``, ``BV785 - CD3``, ``CD19;APC-H7;780/60@640/A``, ``Comp-PE-A``,
   ``Ki-67`` = ``KI67``);
3. where an FCS 3.2 file declares ``$PnTYPE``, it decides what a channel can be before any
   label is compared: a ``scatter`` marker only takes a ``Forward_Scatter``/``Side_Scatter``
   channel, a ``time`` marker only a ``Time`` channel, and any other marker never takes
   either (a channel without ``$PnTYPE`` can be anything). A scatter or time marker that no
   label finds is then found by type: the one ``Time`` channel, or the one scatter channel of
   the direction (``FSC``/``FS`` forward, ``SSC``/``SS`` side) and ``$PnFEATURE`` (``-A``/``INT``
   Area, ``-H``/``PEAK`` Height, ``-W`` Width) the marker's name says;
4. two channels for one marker (or one channel claimed by two markers) raise
   :class:`~nkflow.errors.PanelError` listing the candidates and how to pin one;
5. a marker with no channel is listed in ``Resolution.missing``. Nothing is substituted.

Only bad *setup* raises; a tube whose file lacks a marker is not an error here.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from nkflow.errors import ConfigError, PanelError
from nkflow.fcs.io import Channel

logger = logging.getLogger(__name__)

__all__ = ["MarkerSpec", "Panel", "Resolution", "load_panel", "normalise", "resolve"]

_MARKER_KEYS = {"aliases", "scatter", "time", "channel", "description"}
_PANEL_KEYS = {"name", "description", "markers", "required"}
_COMP_PREFIX = re.compile(r"^\s*comp[-_ ]", re.IGNORECASE)
_SEGMENT_SPLIT = re.compile(r"\s*[;|,]\s*|\s+-\s+|\s+/\s+|::")
_TOKEN_SPLIT = re.compile(r"[\s_]+")


class _HasChannels(Protocol):
    @property
    def path(self) -> Path: ...
    @property
    def channels(self) -> tuple[Channel, ...]: ...
    @property
    def keywords(self) -> dict[str, str]: ...


@dataclass(frozen=True)
class MarkerSpec:
    """How to find one marker.

    Attributes
    ----------
    name : str
        Marker name used everywhere downstream (``CD56``).
    aliases : tuple of str
        Labels that mean this marker; the name itself is always included.
    scatter, time : bool
        Scatter or time parameter (not compensated by default).
    channel : dict of str to str
        Exact ``$PnN`` pins per instrument (``$CYT``); key ``"*"`` pins for any instrument.
    """

    name: str
    aliases: tuple[str, ...]
    scatter: bool = False
    time: bool = False
    channel: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Panel:
    """A validated panel file.

    Attributes
    ----------
    name, description : str
    markers : dict of str to MarkerSpec
        In file order.
    required : tuple of str
        Markers whose absence makes the populations needing them not computable.
    source : Path or None
        The file it was read from.
    """

    name: str
    description: str
    markers: dict[str, MarkerSpec]
    required: tuple[str, ...]
    source: Path | None = None


@dataclass(frozen=True)
class Resolution:
    """Markers of one panel resolved against one FCS file.

    Attributes
    ----------
    panel : str
        Panel name.
    file : str
        FCS file name.
    channels : dict of str to Channel or None
        Marker -> channel (None when missing), in panel order.
    how : dict of str to str
        Marker -> how it was found (``"$PnS 'CD56 PE'"``, ``"pinned"``, ``"missing"``).
    file_channels : tuple of Channel
        All channels of the file, for :meth:`table`.
    """

    panel: str
    file: str
    channels: dict[str, Channel | None]
    how: dict[str, str]
    file_channels: tuple[Channel, ...]
    required: tuple[str, ...] = ()

    @property
    def missing(self) -> tuple[str, ...]:
        """Declared markers with no channel, in panel order."""
        return tuple(m for m, c in self.channels.items() if c is None)

    @property
    def missing_required(self) -> tuple[str, ...]:
        """Required markers with no channel."""
        return tuple(m for m in self.missing if m in self.required)

    def channel_for(self, marker: str) -> Channel | None:
        """Return the channel of a marker, None when missing.

        Raises
        ------
        PanelError
            If the marker is not declared in the panel (a setup error).
        """
        if marker not in self.channels:
            raise PanelError(
                f"panel '{self.panel}': marker {marker!r} is not declared; declared markers: "
                f"{', '.join(self.channels)}"
            )
        return self.channels[marker]

    def index_for(self, marker: str) -> int | None:
        """Return the 0-based event column of a marker, None when missing."""
        ch = self.channel_for(marker)
        return None if ch is None else ch.index

    def table(self) -> list[tuple[str, str, str]]:
        """Rows ``(pnn, pns, marker)`` for every channel of the file, in column order.

        The marker is ``''`` for a channel no marker resolved to (:func:`resolve` gives a
        ``$PnN`` to one marker at most).
        """
        marker = {c.pnn: m for m, c in self.channels.items() if c is not None}
        return [(c.pnn, c.pns, marker.get(c.pnn, "")) for c in self.file_channels]


# --------------------------------------------------------------------------- normalisation


def _canon(text: str) -> str:
    return re.sub(r"[^0-9A-Z]", "", text.upper())


def normalise(label: str) -> frozenset[str]:
    """Return the normalised keys a channel label can stand for.

    Parameters
    ----------
    label : str
        A ``$PnS`` or ``$PnN`` value.

    Returns
    -------
    frozenset of str
        Upper-case alphanumeric keys: the whole label, each segment between ``;``, ``|``,
        ``,``, `` - `` and `` / ``, and each part of a segment split at whitespace, ``_`` or
        ``-``. ``Comp-`` is removed first. Empty labels give an empty set.

    Examples
    --------
    >>> sorted(normalise("BV785 - CD3"))
    ['BV785', 'BV785CD3', 'CD3']
    >>> "KI67" in normalise("Ki-67 FITC")
    True
    """
    text = _COMP_PREFIX.sub("", label.strip())
    if not text:
        return frozenset()
    keys = {_canon(text)}
    for seg in _SEGMENT_SPLIT.split(text):
        keys.add(_canon(seg))
        for tok in _TOKEN_SPLIT.split(seg):
            keys.add(_canon(tok))
            if "-" in tok:
                keys.update(_canon(p) for p in tok.split("-"))
        # "Ki-67 FITC" -> "KI67": the segment without its trailing/leading token
        toks = [t for t in _TOKEN_SPLIT.split(seg) if t]
        if len(toks) > 1:
            keys.add(_canon(" ".join(toks[:-1])))
            keys.add(_canon(" ".join(toks[1:])))
    keys.discard("")
    return frozenset(keys)


# --------------------------------------------------------------------------- loading


def _fail(path: Path, where: str, found: Any, expected: str) -> ConfigError:
    return ConfigError(f"{path}: {where}: found {found!r}; expected {expected}")


def panel_from_dict(doc: Any, path: Path) -> Panel:
    """Validate a parsed panel document (see :func:`load_panel`)."""
    if not isinstance(doc, Mapping):
        raise _fail(path, "top level", type(doc).__name__, "a mapping with name, markers")
    unknown = set(doc) - _PANEL_KEYS
    if unknown:
        raise _fail(path, "top-level keys", sorted(unknown), f"only {sorted(_PANEL_KEYS)}")
    name = doc.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise _fail(path, "field 'name'", name, "an id such as nk_v1 (letters, digits, ._-)")
    markers_doc = doc.get("markers")
    if not isinstance(markers_doc, Mapping) or not markers_doc:
        raise _fail(path, "field 'markers'", markers_doc, "a non-empty mapping marker -> spec")
    markers: dict[str, MarkerSpec] = {}
    for mname, spec in markers_doc.items():
        where = f"markers.{mname}"
        if not isinstance(mname, str) or not mname.strip():
            raise _fail(path, "a marker name", mname, "a non-empty string")
        if spec is None:
            spec = {}
        if not isinstance(spec, Mapping):
            raise _fail(path, where, spec, "a mapping such as {aliases: [CD56]}")
        bad = set(spec) - _MARKER_KEYS
        if bad:
            raise _fail(path, f"{where} keys", sorted(bad), f"only {sorted(_MARKER_KEYS)}")
        aliases = spec.get("aliases", [])
        if not isinstance(aliases, list) or not all(
            isinstance(a, str) and a.strip() for a in aliases
        ):
            raise _fail(path, f"{where}.aliases", aliases, "a list of non-empty strings")
        for flag in ("scatter", "time"):
            if not isinstance(spec.get(flag, False), bool):
                raise _fail(path, f"{where}.{flag}", spec.get(flag), "true or false")
        pins = spec.get("channel", {})
        if isinstance(pins, str):
            pins = {"*": pins}
        if not isinstance(pins, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) and v for k, v in pins.items()
        ):
            raise _fail(
                path, f"{where}.channel", pins, 'a $PnN string or {"<$CYT>": "<$PnN>", ...}'
            )
        all_aliases = tuple(dict.fromkeys([mname, *aliases]))
        markers[mname] = MarkerSpec(
            name=mname,
            aliases=all_aliases,
            scatter=bool(spec.get("scatter", False)),
            time=bool(spec.get("time", False)),
            channel=dict(pins),
        )
    required = doc.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        raise _fail(path, "field 'required'", required, "a list of marker names")
    undeclared = [r for r in required if r not in markers]
    if undeclared:
        raise _fail(
            path,
            "field 'required'",
            undeclared,
            f"markers declared under 'markers' ({', '.join(markers)})",
        )
    description = doc.get("description", "")
    return Panel(
        name=name,
        description=str(description or ""),
        markers=markers,
        required=tuple(required),
        source=path,
    )


def load_panel(path: str | Path) -> Panel:
    """Read and validate a panel YAML file.

    Parameters
    ----------
    path : str or Path
        ``config/panels/<name>.yaml``.

    Raises
    ------
    ConfigError
        If the file is missing, not YAML, or a field is wrong (message names file and field).
    """
    import yaml

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read panel file ({exc.strerror or exc})") from exc
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML ({exc})") from exc
    return panel_from_dict(doc, p)


# --------------------------------------------------------------------------- resolution


def _describe(ch: Channel) -> str:
    return f"{ch.pnn!r} ($PnS {ch.pns!r})" if ch.pns else f"{ch.pnn!r}"


def _matches(keys: Iterable[str], label: str) -> bool:
    return bool(set(keys) & normalise(label))


def _eligible(spec: MarkerSpec, ch: Channel) -> bool:
    """Whether the channel's FCS 3.2 ``$PnTYPE`` (when given) allows it to carry ``spec``."""
    kind = ch.kind
    if not kind:
        return True
    if spec.time:
        return kind == "time"
    if spec.scatter:
        return kind == "scatter"
    return kind not in ("scatter", "time")


_FEATURES = (("AREA", ("A", "AREA", "INT")), ("HEIGHT", ("H", "HEIGHT", "PEAK")),
             ("WIDTH", ("W", "WIDTH")))  # fmt: skip


def _scatter_wanted(spec: MarkerSpec) -> tuple[str, str] | None:
    """The (type, measure) of scatter that the scatter marker's name and aliases agree on, or None.

    The type is ``FORWARDSCATTER`` or ``SIDESCATTER``, the measure ``AREA``, ``HEIGHT`` or
    ``WIDTH``; None when the name and aliases do not say or disagree.
    """
    wanted: set[tuple[str, str]] = set()
    for label in spec.aliases:
        toks = [t for t in re.split(r"[\s_\-]+", label.strip().upper()) if t]
        if len(toks) < 2:
            continue
        direction = {"FSC": "FORWARDSCATTER", "FS": "FORWARDSCATTER", "SSC": "SIDESCATTER",
                     "SS": "SIDESCATTER"}.get(toks[0])  # fmt: skip
        feature = next((f for f, names in _FEATURES if toks[-1] in names), None)
        if direction and feature:
            wanted.add((direction, feature))
    return wanted.pop() if len(wanted) == 1 else None


def _by_type(spec: MarkerSpec, chans: Iterable[Channel]) -> tuple[list[Channel], str]:
    """Channels an FCS 3.2 ``$PnTYPE``/``$PnFEATURE`` gives a scatter or time marker."""
    if spec.time:
        return [c for c in chans if c.kind == "time"], "$PnTYPE 'Time'"
    wanted = _scatter_wanted(spec) if spec.scatter else None
    if wanted is None:
        return [], ""
    direction, feature = wanted
    hits = [
        c
        for c in chans
        if c.kind == "scatter" and _canon(c.pntype) == direction and _canon(c.feature) == feature
    ]
    return hits, f"$PnTYPE {hits[0].pntype!r} + $PnFEATURE {hits[0].feature!r}" if hits else ""


def _pin_for(spec: MarkerSpec, instrument: str) -> str | None:
    if instrument in spec.channel:
        return spec.channel[instrument]
    inst = _canon(instrument)
    for k, v in spec.channel.items():
        if k != "*" and _canon(k) == inst:
            return v
    return spec.channel.get("*")


def resolve(panel: Panel, sample: _HasChannels) -> Resolution:
    """Resolve every marker of ``panel`` to a channel of ``sample``.

    Parameters
    ----------
    sample : FcsSample or FcsHeader
        Anything with ``path``, ``channels`` and ``keywords``.

    Raises
    ------
    PanelError
        If a marker matches two or more channels, a channel is claimed by two markers, or a
        pinned ``$PnN`` does not exist in the file.
    """
    fname = Path(sample.path).name
    instrument = sample.keywords.get("$CYT", "").strip()
    chans = sample.channels
    found: dict[str, Channel | None] = {}
    how: dict[str, str] = {}
    for mname, spec in panel.markers.items():
        pin = _pin_for(spec, instrument)
        if pin is not None:
            hits = [c for c in chans if c.pnn == pin]
            if not hits:
                raise PanelError(
                    f"panel '{panel.name}' pins marker {mname} to channel {pin!r} for instrument "
                    f"{instrument!r}, but {fname} has no such $PnN; channels: "
                    f"{', '.join(c.pnn for c in chans)}"
                )
            found[mname], how[mname] = hits[0], f"pinned to $PnN {pin!r}"
            continue
        keys = {_canon(_COMP_PREFIX.sub("", a)) for a in spec.aliases} - {""}
        chosen: Channel | None = None
        eligible = [c for c in chans if _eligible(spec, c)]
        for field_name, label in (("pns", "$PnS"), ("analyte", "$PnANALYTE"), ("pnn", "$PnN")):
            hits = [c for c in eligible if _matches(keys, getattr(c, field_name))]
            by_type = not hits and field_name == "pnn"
            if by_type:
                hits, label = _by_type(spec, eligible)
            if len(hits) > 1:
                listed = " and ".join(_describe(c) for c in hits)
                raise PanelError(
                    f"{fname}: marker {mname} of panel '{panel.name}' matches {len(hits)} "
                    f"channels by {label}: {listed}; pin one in the panel file, e.g. "
                    f'{mname}: {{aliases: [...], channel: {{"{instrument or "*"}": '
                    f'"{hits[0].pnn}"}}}}, or make the aliases more specific'
                )
            if hits:
                chosen = hits[0]
                value = chosen.pnn if by_type else getattr(chosen, field_name)
                how[mname] = f"{label} ($PnN {value!r})" if by_type else f"{label} {value!r}"
                break
        found[mname] = chosen
        if chosen is None:
            how[mname] = "missing"
    claimed: dict[str, str] = {}
    for mname, ch in found.items():
        if ch is None:
            continue
        if ch.pnn in claimed:
            raise PanelError(
                f"{fname}: channel {_describe(ch)} matches two markers of panel "
                f"'{panel.name}': {claimed[ch.pnn]} and {mname}; make the aliases distinct or "
                "pin each marker with channel: {...}"
            )
        claimed[ch.pnn] = mname
    res = Resolution(
        panel=panel.name,
        file=fname,
        channels=found,
        how=how,
        file_channels=tuple(chans),
        required=panel.required,
    )
    if res.missing:
        logger.info("%s: markers not found: %s", fname, ", ".join(res.missing))
    return res
