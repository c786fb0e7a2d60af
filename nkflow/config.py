"""Loading and validating the nkflow configuration.

Contract: every function here either returns validated data or raises
:class:`~nkflow.errors.ConfigError` with a message that names the file, the field (as a dotted
path), what was found, what was expected and how to fix it. Defaults declared in the JSON
schemas are filled in, so downstream code never guesses. The same checks run in
``nkflow validate`` and when the Snakefile is parsed, before any job runs.

:func:`load_study` is the one loader of a run's settings: a ``config.yaml`` or a mapping is
validated; the ``validated/config.json`` that ``nkflow validate`` wrote is trusted as it is
(the cohort commands of the workflow read it). The :class:`Study` it returns reads each sheet
once, when first asked for it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import yaml

from nkflow.clinical.endpoint_settings import EndpointSettings
from nkflow.errors import ConfigError
from nkflow.schemas import check_against_schema, fill_defaults, load_schema

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

#: top-level blocks checked against the sub-schema of the same name
_BLOCKS = ("qc", "endpoints", "uncertainty")


def validate_config(data: Any, *, source: str) -> dict[str, Any]:
    """A new, validated copy of a parsed configuration, with the schemas' defaults filled in.

    ``source`` says where it came from (a path or an option name), for messages.
    """
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: expected a mapping of settings (sheets, panels, gating, ...), "
            f"found {type(data).__name__}"
        )
    cfg = json.loads(json.dumps(data, default=str))
    schema = load_schema("config")
    check_against_schema(cfg, schema, source=source)
    fill_defaults(cfg, schema)
    for block in _BLOCKS:
        sub_schema = load_schema(block)
        cfg.setdefault(block, {})
        check_against_schema(cfg[block], sub_schema, source=source, prefix=block)
        fill_defaults(cfg[block], sub_schema)
    return cfg


def load_config(path: Path) -> dict[str, Any]:
    """Read and validate a ``config.yaml``."""
    if not path.exists():
        raise ConfigError(f"{path}: config file not found (give the path of your config.yaml)")
    try:
        with path.open(encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return validate_config(data, source=str(path))


def config_digest(cfg: dict[str, Any]) -> str:
    """sha256 of the canonical JSON form of a configuration (key order does not matter)."""
    canonical = json.dumps(cfg, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def tube_settings(
    cfg: dict[str, Any], panel: str | None = None, gating: str | None = None
) -> dict[str, Any]:
    """The part of a validated configuration that a tube's results depend on.

    The workflow hands exactly this to ``nkflow tubes`` (so a change elsewhere, say the visit
    window, does not re-gate tubes), each tube records its digest in ``provenance.json``, and
    the report recomputes it to tell whether the tubes ran under the current configuration.

    Parameters
    ----------
    cfg
        A configuration returned by :func:`validate_config`.
    panel
        The tube's panel: a spillover CSV configured for it is part of its settings.
    gating
        The tube's gate-tree name: its per-instrument trees (``gating_by_instrument``) are part
        of its settings, as ``instrument_trees: [[cytometer, tree path], ...]``.
    """
    endpoints = cfg.get("endpoints", {})
    out: dict[str, Any] = {k: cfg.get(k, {}) for k in ("qc", "figures")}
    # qc.dates is applied by `nkflow collect` (it needs the sample sheet), never by a tube
    out["qc"] = {k: v for k, v in out["qc"].items() if k != "dates"}
    out["endpoints"] = {
        k: endpoints[k] for k in ("denominator_population", "populations") if k in endpoints
    }
    # the re-gatings of the NK tube (docs/uncertainty.md) are written by the tube job
    out["perturbation"] = cfg.get("uncertainty", {}).get("perturbation", {})
    spill = cfg.get("spillover", {}).get(panel) if panel else None
    if spill:
        out["spillover"] = spill
    by_instrument = cfg.get("gating_by_instrument", {}).get(gating) if gating else None
    if by_instrument:
        out["instrument_trees"] = [[e["cytometer"], e["tree"]] for e in by_instrument]
    return out


def _check_file(kind: str, name: str, path_text: str, base_dir: Path) -> Path:
    path = (base_dir / path_text).resolve()
    if not path.is_file():
        raise ConfigError(
            f"config: {kind} '{name}': file '{path_text}' not found (looked in {path}); "
            f"fix the path under '{kind}:' in the config"
        )
    return path


def validate_inputs(study: Study) -> list[str]:
    """Check every file the configuration names, and every sheet, before any job runs.

    Parameters
    ----------
    study
        A run's settings (from :func:`load_study`); relative paths in them are relative to
        ``study.base_dir``. Its sample sheet and infusions are read once, here, and kept.

    Returns
    -------
    list of str
        Warnings about rows that are kept but flagged (e.g. a QNS lymphocyte count).

    Raises
    ------
    ConfigError
        On the first hard error, naming file, row and column.
    """
    from nkflow import gating
    from nkflow.clinical import sheets
    from nkflow.fcs import panel

    cfg, base_dir = study.config, study.base_dir
    panels = {}
    for name, path_text in cfg["panels"].items():
        path = _check_file("panels", name, path_text, base_dir)
        panels[name] = panel.load_panel(path)
    trees = {}
    for name, path_text in cfg["gating"].items():
        path = _check_file("gating", name, path_text, base_dir)
        trees[name] = gating.load_tree(path)
    for name, entries in cfg.get("gating_by_instrument", {}).items():
        if name not in cfg["gating"]:
            raise ConfigError(
                f"config: field 'gating_by_instrument.{name}': no gate tree of that name under "
                f"'gating:'; known: {', '.join(sorted(cfg['gating']))}; fix: use one of those"
            )
        for i, entry in enumerate(entries):
            where = f"gating_by_instrument.{name}[{i}]"
            alt = gating.load_tree(
                _check_file("gating_by_instrument", where, entry["tree"], base_dir)
            )
            missing = sorted(set(trees[name].populations) - set(alt.populations))
            if missing:
                raise ConfigError(
                    f"config: field '{where}': tree {entry['tree']} lacks population(s) "
                    f"{', '.join(missing)} of '{name}'; expected the same populations, so that "
                    "every instrument's tubes feed the same endpoints"
                )
    for name, path_text in cfg.get("spillover", {}).items():
        if name not in cfg["panels"]:
            raise ConfigError(
                f"config: spillover '{name}': no panel of that name; "
                f"known panels: {', '.join(sorted(cfg['panels']))}"
            )
        _check_file("spillover", name, path_text, base_dir)
    for key, path_text in cfg["sheets"].items():
        _check_file("sheets", key, path_text, base_dir)
    for key in cfg.get("sheet_format") or {}:
        if not cfg["sheets"].get(key):
            raise ConfigError(
                f"config: field 'sheet_format.{key}': describes a sheet that 'sheets:' does not "
                f"name, so it would never be used; expected one of: "
                f"{', '.join(sorted(k for k, v in cfg['sheets'].items() if v))}; fix: add "
                f"'sheets: {{{key}: path}}' or remove 'sheet_format.{key}'"
            )
    samples = study.samples
    warnings = list(sheets.validate_all(cfg, base_dir, samples=samples, infusions=study.infusions))
    _check_roles(cfg, samples, trees)
    for row in samples.itertuples(index=False):
        tree = trees[row.gating]
        pnl = panels[row.panel]
        unknown = sorted(set(tree.markers()) - set(pnl.markers))
        if unknown:
            raise ConfigError(
                f"{cfg['sheets']['samples']}: sample {row.sample_id} tube {row.tube}: gate tree "
                f"'{row.gating}' uses marker(s) {', '.join(unknown)} that panel '{row.panel}' "
                f"does not declare; add them to the panel or pick a matching gate tree"
            )
        fmo_markers = sorted(
            {d.marker for g in tree.gates for d in g.dims for b in (d.fit_min, d.fit_max)
             if b is not None and b.fmo_percentile is not None}
        )  # fmt: skip
        for marker in row.fmo_paths:
            if marker not in fmo_markers:
                raise ConfigError(
                    f"{cfg['sheets']['samples']}: sample {row.sample_id} tube {row.tube}: column "
                    f"'fmo': found an FMO tube for {marker!r}; expected a marker whose boundary "
                    f"gate tree '{row.gating}' sets from an FMO tube (fmo_percentile): "
                    f"{', '.join(fmo_markers) or 'none'}; fix: correct the marker name, or "
                    "remove the FMO tube, which would otherwise be unused"
                )
    return warnings


def _check_roles(cfg: dict[str, Any], samples: Any, trees: dict[str, Any]) -> None:
    """Refuse a configured tube or population name that the sheets and gate trees never have.

    Without this, a misspelt ``endpoints.tubes`` entry made every visit ``no_nk_tube`` and a
    misspelt subset population left its column empty without a reason.

    Raises
    ------
    ConfigError
        Naming the field, the value, and the names that are allowed.
    """
    s = EndpointSettings.from_config(cfg)
    allowed_tubes = load_schema("samples")["properties"]["tube"]["roles"]
    for role, name in s.tubes.items():
        if name not in allowed_tubes:
            raise ConfigError(
                f"config: field 'endpoints.tubes.{role}': found {name!r}; expected a tube name "
                f"the sample sheet allows: {', '.join(allowed_tubes)}; fix: use one of those"
            )
    beads = ["beads"] if s.absolute_count_method == "single_platform_beads" else []
    roles = {"nk": ["nk", "nk_cd56bright", "nk_cd56dim"], "treg": ["cd4", "treg", "treg_ki67"]}
    needs = {
        s.tubes[tube]: [
            ("denominator_population", s.denominator_population),
            *((f"populations.{r}", s.populations[r]) for r in [*pops, *beads]),
        ]
        for tube, pops in roles.items()
    }
    seen: set[tuple[str, str]] = set()
    for row in samples.itertuples(index=False):
        if (row.tube, row.gating) in seen:
            continue
        seen.add((row.tube, row.gating))
        defined = trees[row.gating].populations
        for field, pop in needs.get(row.tube, []):
            if pop not in defined:
                raise ConfigError(
                    f"config: field 'endpoints.{field}': found {pop!r}, which gate tree "
                    f"'{row.gating}' ({row.tube} tube, e.g. sample {row.sample_id}) does not "
                    f"define; expected one of its populations: {', '.join(defined)}; fix: name "
                    "a population of the tree or add it to the tree"
                )


def write_resolved(cfg: dict[str, Any], warnings: list[str], path: Path) -> None:
    """Write the validated configuration and its digest as canonical JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"config": cfg, "config_sha256": config_digest(cfg), "warnings": warnings}
    path.write_text(json.dumps(doc, sort_keys=True, indent=2) + "\n", encoding="utf-8")


class VisitInputs(NamedTuple):
    """The sheets behind visits.tsv, loaded as the merge step loads them."""

    samples: pd.DataFrame
    infusions: pd.DataFrame
    cbc: pd.DataFrame
    chimerism: pd.DataFrame
    peaks: pd.DataFrame | None
    str_results: pd.DataFrame | None
    str_loci: pd.DataFrame | None
    warnings: list[str]


@dataclass(frozen=True)
class Study:
    """A run's validated settings and the sheets they name, each sheet read once on first use.

    Attributes
    ----------
    config
        The validated configuration (defaults filled in).
    base_dir
        Directory the configuration's paths are relative to (the run directory).
    """

    config: dict[str, Any]
    base_dir: Path = Path(".")

    @functools.cached_property
    def samples(self) -> pd.DataFrame:
        """The sample sheet, one row per tube (:func:`~nkflow.clinical.sheets.load_samples`)."""
        from nkflow.clinical import sheets

        return sheets.load_configured_samples(self.config, self.base_dir)

    @functools.cached_property
    def infusions(self) -> tuple[pd.DataFrame, list[str]]:
        """The infusion sheet and its row warnings."""
        from nkflow.clinical import sheets

        return sheets.load_configured_infusions(self.config, self.base_dir)

    @property
    def patients(self) -> list[str]:
        """Every patient of the infusion sheet, sorted: each gets an endpoint row and a page."""
        return sorted(set(self.infusions[0]["patient_id"]))

    @functools.cached_property
    def visit_inputs(self) -> VisitInputs:
        """The sheets that :func:`~nkflow.clinical.visits.build_visits` joins.

        Their % donor is computed from STR peaks when those are configured.

        ``warnings`` lists the kept-but-flagged or ignored rows and the unread columns, in the
        order ``sheet_warnings.tsv`` gives them.
        """
        from nkflow.clinical import sheets
        from nkflow.clinical.visits import compute_str_results

        cfg, base = self.config, self.base_dir
        infusions, warnings = self.infusions
        warnings = list(warnings)
        cbc, w = sheets.load_cbc(sheets.required_sheet(cfg, "cbc", base), self.patients)
        warnings += w
        chimerism, peaks, w = sheets.load_chimerism_sources(cfg, base, self.patients)
        warnings += w
        str_results = loci = None
        if peaks is not None:
            str_results, loci = compute_str_results(peaks, EndpointSettings.from_config(cfg))
        warnings += sheets.unused_column_warnings(cfg, base)
        return VisitInputs(
            self.samples, infusions, cbc, chimerism, peaks, str_results, loci, warnings
        )


#: the keys of the document :func:`write_resolved` writes
_RESOLVED_KEYS = {"config", "config_sha256", "warnings"}


def _read_resolved(path: Path) -> dict[str, Any]:
    """The configuration of a ``validated/config.json``, trusted without re-validation."""
    fix = (
        f"fix: run `nkflow validate --config CONFIG --write-resolved {path}` (the workflow's "
        "validate rule does) with this nkflow, or give the config itself with --config"
    )
    if not path.is_file():
        raise ConfigError(
            f"{path}: validated configuration not found; expected the file that `nkflow "
            f"validate --write-resolved` writes; {fix}"
        )
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot be read as JSON ({exc}); {fix}") from None
    keys = sorted(doc) if isinstance(doc, dict) else type(doc).__name__
    if (
        not isinstance(doc, dict)
        or set(doc) != _RESOLVED_KEYS
        or not isinstance(doc["config"], dict)
    ):
        raise ConfigError(
            f"{path}: not written by `nkflow validate`: found {keys}; expected a mapping of "
            f"{', '.join(sorted(_RESOLVED_KEYS))}; {fix}"
        )
    if doc["config_sha256"] != config_digest(doc["config"]):
        raise ConfigError(
            f"{path}: config_sha256 {doc['config_sha256']!r} is not the digest of its config "
            f"({config_digest(doc['config'])}): the file was changed after `nkflow validate` "
            f"wrote it; {fix}"
        )
    return doc["config"]


def load_study(
    *,
    config: Path | None = None,
    data: Any = None,
    validated: Path | None = None,
    source: str = "config",
    base_dir: Path = Path("."),
) -> Study:
    """Load a run's settings from exactly one source; the sheets are read when first used.

    Parameters
    ----------
    config
        A ``config.yaml``: read and validated (a user running a command by hand).
    data
        A configuration mapping (the Snakefile's ``config``, ``--config-json``): validated.
    validated
        The ``validated/config.json`` that ``nkflow validate --write-resolved`` wrote: read as
        it is, without re-validating (the workflow's cohort commands).
    source
        Where ``data`` came from, for messages.
    base_dir
        Directory the configuration's paths are relative to.

    Raises
    ------
    ConfigError
        When the source is invalid, or ``validated`` is missing or was not written by
        ``nkflow validate``.
    """
    given = [x is not None for x in (config, data, validated)]
    if sum(given) != 1:
        raise TypeError("load_study: give exactly one of config, data, validated")
    if validated is not None:
        cfg = _read_resolved(Path(validated))
    elif config is not None:
        cfg = load_config(Path(config))
    else:
        cfg = validate_config(data, source=source)
    return Study(cfg, Path(base_dir))
