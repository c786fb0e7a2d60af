"""The per-tube pipeline: read -> resolve markers -> spillover -> time QC -> gate -> QC -> tables.

Contract: :func:`run_tube` always writes its four outputs (counts, QC, figure, provenance) and
returns the tube's QC status. Bad *data* (an unreadable or truncated file, a missing or
ambiguous marker, a broken spillover matrix) never raises out of it: the tube is recorded as
FAIL with a reason code, its populations as ``not_computed``, and the rest of the cohort goes
on. Only a broken *configuration* (gate tree, panel file) raises.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nkflow.clinical.endpoint_settings import EndpointSettings
from nkflow.errors import CompensationError, FcsError, NkflowError, PanelError
from nkflow.gating.evaluate import COUNT_COLUMNS as GATING_COUNT_COLUMNS

logger = logging.getLogger(__name__)

#: Columns of a tube's counts.tsv: the tube's ids, then the gating engine's counts table.
COUNT_COLUMNS = ["sample_id", "tube", *GATING_COUNT_COLUMNS]


@dataclass(frozen=True)
class TubeOutputs:
    """Paths of the files one tube produces (``perturbation``: the NK tube's re-gatings)."""

    counts: Path
    qc: Path
    figure: Path
    provenance: Path
    #: the gates actually used for this tube as Gating-ML 2.0 (None: not written)
    gatingml: Path | None = None
    perturbation: Path | None = None


def _not_computed_counts(tree: Any, sample_id: str, tube: str, reason: str):
    import pandas as pd

    rows = [
        {
            "sample_id": sample_id,
            "tube": tube,
            "population": pop,
            "parent": tree.population(pop).parent or "",
            "events": None,
            "parent_events": None,
            "pct_of_parent": None,
            "pct_of_lymphocytes": None,
            "status": "not_computed",
            "reason": reason,
            "boundary": "",
        }
        for pop in tree.populations
    ]
    return pd.DataFrame(rows, columns=COUNT_COLUMNS)


def _placeholder_figure(path: Path, title: str, message: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 2.5), dpi=80)
    ax.axis("off")
    ax.text(0.5, 0.65, title, ha="center", va="center", fontsize=12, weight="bold")
    ax.text(0.5, 0.35, message, ha="center", va="center", fontsize=9, wrap=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)


@dataclass
class PreparedTube:
    """A tube read and readied for gating: everything :func:`gate_tube` needs, computed once.

    The review app keeps one per open tube and re-gates it with a reviewer's candidate
    boundaries; :func:`run_tube` prepares, gates once and writes.

    Attributes
    ----------
    failure
        ``(reason code, error)`` when the tube cannot be gated (unreadable file, ambiguous
        panel, broken spillover); the other event fields are then None.
    checks, prov
        The QC checks and provenance recorded so far (reader, markers, compensation, time QC,
        margins, FMO controls).
    endpoint
        The endpoint settings of ``settings``, built once per tube.
    """

    sample_id: str
    tube: str
    fcs: Path
    settings: dict[str, Any]
    tree: Any
    pnl: Any
    qc_cfg: Any
    endpoint: EndpointSettings
    prov: dict[str, Any]
    checks: list[Any]
    failure: tuple[str, NkflowError] | None = None
    sample: Any = None
    marker_index: dict[str, int] | None = None
    spill: Any = None
    keep: Any = None
    controls: dict[str, Any] | None = None
    channel_ranges: dict[str, float] | None = None


@dataclass
class GatedTube:
    """One gating of a prepared tube: the engine's result, counts table, QC checks and status."""

    result: Any
    counts: Any
    checks: list[Any]
    status: str


def prepare_tube(
    *,
    fcs: Path,
    panel: Path,
    gating: Path,
    sample_id: str,
    tube: str,
    settings: dict[str, Any],
    fmo: dict[str, Path] | None = None,
) -> PreparedTube:
    """Read one tube and do everything before gating (see :func:`run_tube` for the arguments).

    Bad data never raises: it becomes :attr:`PreparedTube.failure`.
    """
    import numpy as np

    from nkflow import qc
    from nkflow.config import config_digest
    from nkflow.fcs import compensation, io
    from nkflow.fcs import panel as panel_mod
    from nkflow.provenance import sha256_file, software_versions

    endpoint = EndpointSettings.from_config(settings)
    qc_cfg = _qc_config(settings, endpoint.denominator_population)
    tree = cached_tree(str(gating))
    pnl = _cached_panel(str(panel))

    prov: dict[str, Any] = {
        "sample_id": sample_id,
        "tube": tube,
        "fcs_file": str(fcs),
        # filled from the read (read_fcs hashes the bytes it decodes); hashed here only if
        # the file cannot be read
        "fcs_sha256": None,
        "panel_file": str(panel),
        "panel_sha256": sha256_file(panel),
        "gating_file": str(gating),
        "gating_sha256": sha256_file(gating),
        "settings_sha256": config_digest(settings),
        "software": software_versions(),
    }
    checks: list[Any] = []
    prep = PreparedTube(
        sample_id, tube, Path(fcs), settings, tree, pnl, qc_cfg, endpoint, prov, checks
    )

    def note(check: str, code: str, message: str) -> None:
        """Record a finding of the pipeline itself (its severity: ``qc.severity``)."""
        checks.append(qc.make_check(qc_cfg, check, code, None, None, message))

    def fail(code: str, exc: NkflowError) -> PreparedTube:
        prep.failure = (code, exc)
        return prep

    # ---- read
    try:
        sample = io.read_fcs(fcs)
    except FcsError as exc:
        return fail("fcs_unreadable", exc)
    prov.update(
        {
            "fcs_sha256": sample.sha256,
            "fcs_version": sample.version,
            "n_events": int(sample.n_events),
            "instrument": sample.keywords.get("$CYT", ""),
            # as written (None: no $DATE); nkflow collect compares it with collection_date
            "fcs_date": sample.keywords.get("$DATE"),
            "reader_warnings": list(sample.warnings),
        }
    )
    for warning in sample.warnings:
        note("reader", "fcs_tolerance", warning)
    # events the instrument detected but did not write (FCS $LOST, $ABRT), as written
    prov["acquisition_losses"] = {k: sample.keywords.get(k) for k in ("$TOT", "$LOST", "$ABRT")}
    checks.append(qc.events_lost_check(sample.keywords, sample.n_events, qc_cfg))

    # ---- the gate tree validated for this instrument, if the lab declared one
    cyt = str(sample.keywords.get("$CYT", "")).strip()
    chosen = instrument_tree(settings, cyt)
    if chosen is not None:
        gating = chosen
        tree = prep.tree = cached_tree(str(gating))
        prov["gating_file"], prov["gating_sha256"] = str(gating), sha256_file(gating)
    prov["gating_selected_by"] = f"$CYT {cyt!r} (gating_by_instrument)" if chosen else "default"

    # ---- markers
    try:
        resolution = panel_mod.resolve(pnl, sample)
    except PanelError as exc:
        return fail("panel_ambiguous", exc)
    marker_index = _marker_index(pnl, resolution)
    prov["panel_resolution"] = [list(map(str, row)) for row in resolution.table()]
    missing = _missing_markers(tree, pnl, resolution.missing)
    prov["missing_markers"] = missing
    for marker, needed_by in missing.items():
        checks.append(_missing_marker_check(qc_cfg, marker, needed_by, fcs.name, tree, pnl))

    # ---- spillover
    try:
        spill = compensation.spillover_for(sample, settings.get("spillover") or None)
    except CompensationError as exc:
        return fail("compensation_invalid", exc)
    prov["spillover_source"] = spill.source if spill is not None else "none"
    if spill is not None:
        spill_cols = [sample.channel_names.index(c) for c in spill.channels]
        comp = compensation.compensate(sample.events[:, spill_cols], list(spill.channels), spill)
        ranges = [sample.channels[i].pnr for i in spill_cols]
        checks.extend(qc.compensation_sanity(comp, list(spill.channels), qc_cfg, ranges=ranges))
        del comp
    else:
        note(
            "compensation",
            "no_spillover",
            f"{fcs.name} has no spillover matrix ($SPILLOVER/$SPILL/SPILL) and none is configured",
        )

    # ---- time QC and margins
    # Key signals: scatter plus every marker the gate tree uses (the populations at stake).
    time_markers = [m for m, spec in pnl.markers.items() if spec.time and m in marker_index]
    key_markers = [
        m
        for m, spec in pnl.markers.items()
        if not spec.time and m in marker_index and (spec.scatter or m in set(tree.markers()))
    ]
    time_idx = marker_index[time_markers[0]] if time_markers else None
    signals = {m: sample.events[:, marker_index[m]] for m in key_markers}
    time_result = qc.time_qc(
        sample.events[:, time_idx] if time_idx is not None else None,
        signals,
        sample.timestep,
        qc_cfg,
        time_pnn=sample.channels[time_idx].pnn if time_idx is not None else "Time",
    )
    checks.extend(time_result.checks)
    keep = np.asarray(time_result.keep, dtype=bool).copy()
    prov["time_qc"] = {
        "assessed": bool(time_result.assessed),
        "n_removed": int(time_result.n_removed),
        "removed_ranges_s": [[float(a), float(b)] for a, b in time_result.removed_ranges],
    }
    margins = qc.margin_events(
        sample.events, sample.channels, qc_cfg, [marker_index[m] for m in key_markers]
    )
    checks.extend(margins.checks)
    if margins.keep is not None:
        keep &= margins.keep

    # ---- FMO control tubes: the events that set the boundaries declared fmo_percentile
    prep.controls = _fmo_controls(tree, pnl, fmo or {}, settings, prov, note)
    prep.sample, prep.marker_index, prep.spill, prep.keep = sample, marker_index, spill, keep
    # transforms declared `t: range` take each channel's $PnR
    prep.channel_ranges = {m: float(sample.channels[i].pnr) for m, i in marker_index.items()}
    return prep


def gate_tube(
    prep: PreparedTube, overrides: dict[str, Any] | None = None, reuse: Any = None
) -> GatedTube:
    """Gate a prepared tube and check the result.

    Boundaries declared ``fit:`` are fitted on it; ``overrides`` are a reviewer's corrections,
    :class:`~nkflow.gating.override.GateOverride` by gate id. ``prep`` is not modified: it can be
    gated again; ``reuse`` is the ``result`` of an earlier gating of the same ``prep`` (see
    :func:`nkflow.gating.gate_sample`).
    """
    from nkflow import gating as gating_mod
    from nkflow import qc

    assert prep.failure is None and prep.sample is not None
    sample, tree, qc_cfg = prep.sample, prep.tree, prep.qc_cfg
    checks = list(prep.checks)
    result = gating_mod.gate_sample(
        tree,
        sample.events,
        prep.marker_index or {},
        spill=prep.spill,
        keep=prep.keep,
        tube=f"{prep.sample_id}/{prep.tube}",
        channel_names=sample.channel_names,
        ranges=prep.channel_ranges,
        controls=prep.controls,
        overrides=overrides,
        reuse=reuse,
    )
    counts = result.counts_table(denominator=prep.endpoint.denominator_population)
    counts = counts.assign(sample_id=prep.sample_id, tube=prep.tube)[COUNT_COLUMNS]
    endpoint_pops = _endpoint_populations(prep.endpoint, qc_cfg)
    checks.extend(
        qc.gate_flag_checks(result.flags, qc_cfg, critical=critical_gates(tree, endpoint_pops))
    )
    checks.extend(qc.gate_fit_checks(result.fits, qc_cfg))
    checks.extend(qc.event_floor_checks(counts, qc_cfg, endpoint_pops, n_total=sample.n_events))
    viability = _viability_counts(tree, result, qc_cfg.viability.populations)
    if viability is not None:
        checks.append(qc.viability_check(viability[0], viability[1], qc_cfg))
    status, _reasons = qc.tube_status(checks, qc_cfg)
    return GatedTube(result, counts, checks, status)


def run_tube(
    *,
    fcs: Path,
    panel: Path,
    gating: Path,
    sample_id: str,
    tube: str,
    settings: dict[str, Any],
    outputs: TubeOutputs,
    fmo: dict[str, Path] | None = None,
    overrides: list[Path] | None = None,
) -> str:
    """Process one tube and write its outputs.

    Parameters
    ----------
    fcs, panel, gating
        The FCS file, the panel YAML and the gate-tree YAML.
    sample_id, tube
        Identifiers carried into every output row.
    settings
        ``{"qc": {...}, "endpoints": {...}, "figures": {...}, "spillover": path or None}``.
    outputs
        Where to write.
    fmo
        Marker -> FMO control FCS of this tube (the sample sheet's ``fmo`` column): the
        boundaries the tree sets from an FMO tube (``fmo_percentile``) come from it.
    overrides
        This tube's gate override files (:mod:`nkflow.gating.override_files`): each replaces a
        boundary of one gate where it is fixed for the tube; recorded in provenance.json
        (``overrides``) and in the counts' ``boundary`` column.

    Returns
    -------
    str
        The tube's QC status, PASS, WARN or FAIL.
    """
    from nkflow import qc
    from nkflow.provenance import sha256_file, write_json
    from nkflow.tables import write_tsv

    prep = prepare_tube(
        fcs=fcs,
        panel=panel,
        gating=gating,
        sample_id=sample_id,
        tube=tube,
        settings=settings,
        fmo=fmo,
    )
    prov, tree, qc_cfg = prep.prov, prep.tree, prep.qc_cfg
    if prep.failure is not None:
        code, exc = prep.failure
        logger.error("%s/%s: %s", sample_id, tube, exc)
        if prov["fcs_sha256"] is None and fcs.is_file():
            prov["fcs_sha256"] = sha256_file(fcs)
        checks = [*prep.checks, qc.make_check(qc_cfg, "input", code, None, None, str(exc))]
        # the counts carry the code alone; its message is in the check above and provenance
        counts = _not_computed_counts(tree, sample_id, tube, code)
        status, _reasons = qc.tube_status(checks, qc_cfg)
        _placeholder_figure(outputs.figure, f"{sample_id} / {tube}: not analysed", str(exc))
        prov["error"] = {"code": code, "message": str(exc)}
    else:
        # ---- reviewers' corrections (a malformed override is a configuration error: it raises)
        gate_overrides = _load_overrides(tree, overrides or [])
        if gate_overrides:
            from nkflow.gating.override_files import provenance_record

            prov["overrides"] = [provenance_record(o) for o in gate_overrides.values()]

        gated = gate_tube(prep, gate_overrides)
        result, counts, checks, status = gated.result, gated.counts, gated.checks, gated.status
        prov["scales"] = {
            tid: result.tree.transforms[tid].to_dict()
            for tid in sorted(
                {d.transform for g in result.tree.gates for d in g.dims if d.transform}
            )
        }
        prov["fitted_gates"] = result.fits
        _write_perturbation(result, prep, outputs, prov)
        from nkflow.figures import FigureSettings, gating_figure

        gating_figure(
            result,
            outputs.figure,
            title=f"{sample_id} / {tube} ({fcs.name})",
            settings=FigureSettings.from_dict(settings.get("figures")),
        )
        if outputs.gatingml is not None:
            _write_gatingml(result.tree, outputs.gatingml, prov)
    write_tsv(counts, outputs.counts)
    write_tsv(qc.checks_table(sample_id, tube, checks, qc_cfg), outputs.qc)
    prov["qc_status"] = status
    write_json(prov, outputs.provenance)
    return status


def _load_overrides(tree: Any, files: list[Path]) -> dict[str, Any]:
    """Gate id -> GateOverride from a tube's override files, each checked against ``tree``."""
    from nkflow.gating.override import check_override
    from nkflow.gating.override_files import read_override

    out: dict[str, Any] = {}
    for f in sorted(files):
        ov = read_override(Path(f))
        check_override(tree, ov)
        if ov.gate in out:
            raise NkflowError(
                f"{f}: a second override of gate {ov.gate!r} for this tube (the first is "
                f"{out[ov.gate].source}); keep one file per tube and gate"
            )
        out[ov.gate] = ov
    return out


def _write_gatingml(tree: Any, path: Path, prov: dict[str, Any]) -> None:
    """The gates as evaluated on this tube, as Gating-ML 2.0.

    Fitted and overridden boundaries are in place; a gate left without coordinates (its fit failed)
    makes the export fail, recorded in provenance instead.
    """
    from nkflow import gating as gating_mod

    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        gating_mod.to_gatingml(tree, path)
        prov["gatingml_file"] = path.name
    except Exception as exc:  # noqa: BLE001 -- FlowKit raises unrelated classes on a template gate
        path.unlink(missing_ok=True)
        prov["gatingml_error"] = f"{type(exc).__name__}: {exc}"
        logger.warning("gates of %s not exported as Gating-ML: %s", path.parent, exc)


def perturbation_table(
    result: Any,
    settings: dict[str, Any],
    sample_id: str,
    tube: str,
    denominator: str,
    *,
    nk: str | None = None,
) -> tuple[Any, dict[str, Any] | None]:
    """The tube's re-gatings as a table, and the ``perturbation`` record of its provenance.

    ``(None, None)`` when the tube's tree does not define the NK population (``nk``, default
    the one ``settings`` names); ``(None, record)`` when it cannot be perturbed (the record says
    why). The tube job writes the table as ``perturbation.tsv``; the review app recomputes it
    for a corrected tube.
    """
    from nkflow.gating import perturb

    if nk is None:
        nk = EndpointSettings.from_config(settings).populations["nk"]
    if nk not in result.tree.populations:
        return None, None
    s = perturb.PerturbSettings.from_dict(settings.get("perturbation"))
    out = perturb.perturb_counts(result, nk, denominator, s, perturb.tube_seed(sample_id, tube))
    if isinstance(out, str):
        logger.warning("%s/%s: gate perturbation not computed: %s", sample_id, tube, out)
        return None, {"computed": False, "reason": out}
    table = out.table
    table.insert(0, "tube", tube)
    table.insert(0, "sample_id", sample_id)
    return table, {"computed": True, "populations": [nk, denominator], **out.record()}


def _write_perturbation(
    result: Any, prep: PreparedTube, outputs: TubeOutputs, prov: dict[str, Any]
) -> None:
    """The tube's re-gatings (``perturbation.tsv``) when its tree defines the NK population.

    The table feeds the endpoint's uncertainty (docs/uncertainty.md); a tube whose NK or
    denominator population was not computed, or whose tree cannot be perturbed, writes none and
    says why in ``provenance.json`` under ``perturbation`` (the endpoint then flags
    ``uncertainty_not_computed``).
    """
    from nkflow.tables import write_tsv

    if outputs.perturbation is None:
        return
    table, record = perturbation_table(
        result,
        prep.settings,
        prep.sample_id,
        prep.tube,
        prep.endpoint.denominator_population,
        nk=prep.endpoint.populations["nk"],
    )
    if record is not None:
        prov["perturbation"] = record
    if table is not None:
        write_tsv(table, outputs.perturbation)


def endpoint_populations(settings: dict[str, Any]) -> tuple[str, ...]:
    """The populations an endpoint and its floors count, by their configured names.

    Their numerators get the endpoint event floor (``low_numerator_events``); renaming the NK
    population in the config must not move it to the laxer floor of other populations.
    """
    ep = EndpointSettings.from_config(settings)
    return _endpoint_populations(ep, _qc_config(settings, ep.denominator_population))


def _endpoint_populations(ep: EndpointSettings, qc_cfg: Any) -> tuple[str, ...]:
    """:func:`endpoint_populations` from the settings a tube built once."""
    p = ep.populations
    pops = [p["nk"], ep.denominator_population, qc_cfg.floors.lymphocyte_floor_population]
    return tuple(dict.fromkeys([*pops, p["cd4"], p["treg"], p["treg_ki67"]]))


def _missing_markers(tree: Any, pnl: Any, missing: tuple[str, ...]) -> dict[str, list[str]]:
    """Each panel marker the file lacks -> what needs it.

    The gates of ``tree`` that read it, and ``required`` when the panel declares it so (empty:
    nothing needs it).
    """
    return {
        marker: [g.id for g in tree.gates if marker in tree.gate_markers(g)]
        + (["required"] if marker in pnl.required else [])
        for marker in missing
    }


def _missing_marker_check(
    cfg: Any, marker: str, needed_by: list[str], fcs_name: str, tree: Any, pnl: Any
) -> Any:
    """The QC check of a missing marker: ``missing_marker`` or ``unused_marker_missing``.

    ``missing_marker`` (WARN) for a marker a gate or the panel needs; otherwise
    ``unused_marker_missing`` (PASS): a panel marker no gate reads changes no number.
    """
    from nkflow import qc

    gates = [g for g in needed_by if g != "required"]
    why = []
    if gates:
        why.append(f"gate(s) {', '.join(gates)} of tree {tree.name} read it")
    if "required" in needed_by:
        why.append(f"panel {pnl.name} declares it required")
    return qc.make_check(
        cfg,
        "panel",
        "missing_marker" if needed_by else "unused_marker_missing",
        None,
        None,
        f"marker {marker} not found in {fcs_name} ({'; '.join(why)}); populations that need it "
        "are not computed"
        if needed_by
        else f"marker {marker} of panel {pnl.name} not found in {fcs_name}; no gate of tree "
        f"{tree.name} reads it, so no population is affected",
    )


def _marker_index(pnl: Any, resolution: Any) -> dict[str, int]:
    """Marker -> event column, for the markers this file has."""
    found = {m: resolution.index_for(m) for m in pnl.markers if m not in resolution.missing}
    return {m: idx for m, idx in found.items() if idx is not None}


def _fmo_controls(
    tree: Any, pnl: Any, fmo: dict[str, Path], settings: dict[str, Any], prov: dict, note: Any
) -> dict[str, Any]:
    """``{"<gate>.<marker>": raw values}`` from each FMO tube, for gate_sample's controls.

    An FMO tube that cannot be read or gated is a WARN naming it; that boundary is then
    fitted on the tube itself, as without an FMO tube.
    """
    from nkflow.fcs import compensation, io
    from nkflow.fcs import panel as panel_mod
    from nkflow.gating import fmo_values
    from nkflow.provenance import sha256_file

    controls: dict[str, Any] = {}
    used: dict[str, Any] = {}
    for marker, path in sorted(fmo.items()):
        gates = [
            g.id
            for g in tree.gates
            for d in g.dims
            if d.marker == marker
            and any(b is not None and b.fmo_percentile is not None for b in (d.fit_min, d.fit_max))
        ]
        try:
            f = io.read_fcs(path)
            mi = _marker_index(pnl, panel_mod.resolve(pnl, f))
            spill = compensation.spillover_for(f, settings.get("spillover") or None)
            ranges = {m: float(f.channels[i].pnr) for m, i in mi.items()}
            for gid in gates:
                controls[f"{gid}.{marker}"] = fmo_values(
                    tree, gid, marker, f.events, mi, spill=spill,
                    channel_names=f.channel_names, ranges=ranges,
                )  # fmt: skip
            used[marker] = {"file": str(path), "sha256": f.sha256, "gates": gates}
        except NkflowError as exc:
            used[marker] = {
                "file": str(path),
                "sha256": sha256_file(path) if path.is_file() else None,
                "error": str(exc),
            }
            note(
                "fmo",
                "fmo_unusable",
                f"FMO tube for {marker} ({path}) could not be used ({exc}); the {marker} boundary "
                "was fitted on the tube itself",
            )
    if used:
        prov["fmo"] = used
    return controls


def instrument_tree(settings: dict[str, Any], cytometer: str) -> Path | None:
    """The tree declared for this ``$CYT`` under ``gating_by_instrument`` (case-insensitive)."""
    key = cytometer.strip().casefold()
    for cyt, tree in settings.get("instrument_trees", []):
        if key and str(cyt).strip().casefold() == key:
            return Path(tree)
    return None


def _qc_config(settings: dict[str, Any], denominator: str) -> Any:
    """QC settings; the lymphocyte floor checks the endpoint's denominator unless configured.

    The endpoint divides by ``endpoints.denominator_population`` (``live``); a floor on the
    larger ``lymphocytes`` gate let a tube with 366 denominator events pass a 500-event floor.
    """
    from dataclasses import replace

    from nkflow import qc

    cfg = qc.QcConfig.from_dict(settings.get("qc"))
    if cfg.floors.lymphocyte_floor_population is None:
        cfg = replace(cfg, floors=replace(cfg.floors, lymphocyte_floor_population=denominator))
    return cfg


def critical_gates(tree: Any, populations: tuple[str, ...]) -> set[str]:
    """Gates that define an endpoint population or one of its ancestors."""
    out: set[str] = set()
    for pop in populations:
        if pop not in tree.populations:
            continue
        p: str | None = pop
        while p is not None:
            node = tree.population(p)
            out.add(node.gate)
            p = node.parent
    return out


@functools.lru_cache(maxsize=8)
def cached_tree(path: str) -> Any:
    """A batch shares one gate tree: parse and validate it once per process."""
    from nkflow import gating

    return gating.load_tree(Path(path))


@functools.lru_cache(maxsize=8)
def _cached_panel(path: str) -> Any:
    from nkflow.fcs import panel

    return panel.load_panel(Path(path))


def _viability_counts(
    tree: Any, result: Any, populations: tuple[str, ...]
) -> tuple[int, int] | None:
    """(dead, denominator) from the first of ``populations`` that the tree defines and computed.

    ``populations`` is ``qc.viability.populations``; dead is its parent's events minus its own, the
    denominator its parent's.
    """
    for pop in populations:
        if pop in tree.populations and pop not in result.not_computed:
            parent = tree.population(pop).parent
            if parent is None:
                return None
            n_parent = int(result.count(parent))
            return n_parent - int(result.count(pop)), n_parent
    return None


def date_check(prov: dict[str, Any], collection_date: Any, cfg: Any) -> Any:
    """The ``acquisition_date`` check of one tube from its ``provenance.json``."""
    from nkflow import qc

    name = Path(str(prov.get("fcs_file", ""))).name or "the FCS file"
    unknown = None
    if "fcs_date" not in prov:
        unknown = (
            f"{name} could not be read ({prov['error'].get('code', 'error')})"
            if isinstance(prov.get("error"), dict)
            else f"the provenance.json of {name} records no $DATE (written before nkflow "
            "recorded it); re-run the tube to check it"
        )
    return qc.acquisition_date_check(
        prov.get("fcs_date"), collection_date, cfg, name, unknown=unknown
    )
