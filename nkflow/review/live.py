"""The review model behind ``nkflow review``: a finished run, its queue, and live re-gating.

Contract
--------
:class:`ReviewRun` reads a finished run (``results/`` of the configuration, from the directory
snakemake ran in) and never writes into it. It offers, without any web code:

* :meth:`ReviewRun.queue` -- every tube with its key gates, counts, QC and review state, sorted
  by risk (:data:`RISKS`, highest first);
* :meth:`ReviewRun.open` -- a tube read once (:func:`nkflow.tube.prepare_tube`) and gated with
  the overrides on disk, its editable boundaries (rectangle bounds) and what they feed;
* :meth:`ReviewRun.preview` -- the tube re-gated with a reviewer's candidate boundaries, with
  counts, %, QC status, the visit's donor NK/uL and the patient's verdict recomputed by the
  same functions the workflow runs (gate_tube, the collect date check, build_visits,
  build_endpoints), so the numbers are the ones a rerun will write;
* :meth:`ReviewRun.save` -- the candidate written as override files (reason mandatory,
  concurrent saves refused) and ``override`` events appended to the audit log;
* :meth:`ReviewRun.sign` -- a signature on what the patient's endpoint will rest on after the
  rerun: for tubes whose override files are not yet applied by the run, the basis is
  recomputed exactly as the rerun will write it (counts.tsv, qc.tsv, visit and endpoint rows),
  so a rerun that produces those bytes keeps the signature, and anything else voids it.
"""

from __future__ import annotations

import io
import logging
import math
import os
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nkflow.clinical.endpoint_settings import EndpointSettings
from nkflow.errors import ReviewError
from nkflow.gating import override_files as overrides
from nkflow.provenance import sha256_file
from nkflow.review import audit, basis, signing
from nkflow.review.settings import review_settings
from nkflow.review.users import authenticate, load_users
from nkflow.tables import read_tsv

logger = logging.getLogger(__name__)

#: risk order of the queue, highest first
RISKS = (
    "verdict_unstable",
    "not_evaluable",
    "borderline",
    "gate_fit_flag",
    "qc_fail",
    "qc_warn",
    "low_counts",
)
LOW_COUNT_CODES = ("low_numerator_events", "low_lymphocyte_events", "low_total_events")
#: candidate key of a polygon's vertices: ``(gate, VERTICES, "")`` -> ((x, y), ...)
VERTICES = "vertices"
OPEN_TUBES = 4


def _frame(text: str, as_text: bool = False) -> Any:
    return read_tsv(io.StringIO(text), text=as_text)


def is_pending(rec: basis.TubeRecord, overrides_dir: Path) -> bool:
    """True when a tube's override files on disk differ from those its run applied."""
    applied = {o["gate"]: o["sha256"] for o in rec.provenance.get("overrides") or []}
    disk = {
        p.stem: overrides.file_sha256(p)
        for p in overrides.tube_files(overrides_dir, rec.sample_id, rec.tube)
    }
    return applied != disk


def as_request(candidate: dict[tuple[str, str, str], Any]) -> list[dict[str, Any]]:
    """Candidate boundaries as a request sends them (the inverse of ``parse_candidate``)."""
    return [
        {"gate": g, "vertices": [list(x) for x in v]}
        if m == VERTICES
        else {"gate": g, "marker": m, "side": s, "value": v}
        for (g, m, s), v in candidate.items()
    ]


def _vertices(i: int, raw: Any) -> tuple[tuple[float, float], ...]:
    """Polygon vertices from a request: at least 3 pairs of finite numbers."""
    if not isinstance(raw, list) or len(raw) < 3:
        raise ReviewError(f"bounds[{i}]: vertices: expected a list of at least 3 [x, y] pairs")
    out = []
    for v in raw:
        if not isinstance(v, list | tuple) or len(v) != 2:
            raise ReviewError(f"bounds[{i}]: vertex {v!r} is not an [x, y] pair")
        try:
            x, y = float(v[0]), float(v[1])
        except (TypeError, ValueError):
            raise ReviewError(f"bounds[{i}]: vertex {v!r} is not a pair of numbers") from None
        if not (math.isfinite(x) and math.isfinite(y)):
            raise ReviewError(f"bounds[{i}]: vertex {v!r} is not a pair of finite numbers")
        out.append((x, y))
    return tuple(out)


@dataclass
class OpenTube:
    """One tube being reviewed: prepared once, and its state at open time."""

    sample_id: str
    tube: str
    patient_id: str
    prep: Any
    #: gate -> sha256 of its override file when the tube was opened (None: no file)
    file_sha: dict[str, str | None] = field(default_factory=dict)
    #: the candidate on disk when opened: {(gate, marker, side): value} and, for a polygon,
    #: {(gate, VERTICES, ""): ((x, y), ...)}
    on_disk: dict[tuple[str, str, str], Any] = field(default_factory=dict)
    #: gate -> its override file on disk when opened, named as the workflow names it
    overrides: dict[str, Any] = field(default_factory=dict)
    #: the last gating result (its unchanged leading gates are reused by the next preview)
    last: Any = None


#: the run tables the app reads at start and a signature rests on
RUN_TABLES = ("cohort/endpoints.tsv", "cohort/visits.tsv", "cohort/tubes.tsv")


class ReviewRun:
    """A finished run opened for review (see the module contract)."""

    def __init__(self, config: dict[str, Any], base_dir: Path | None = None) -> None:
        from nkflow.config import Study, tube_settings

        self.config = config
        self.base = Path.cwd() if base_dir is None else Path(base_dir)
        self.rs = review_settings(config, self.base)
        res = self.rs.results
        for rel in RUN_TABLES:
            if not (res / rel).is_file():
                raise ReviewError(
                    f"{res / rel} not found: the run is not finished; run snakemake with this "
                    "config first, from the directory you start 'nkflow review' or 'nkflow sign' in"
                )
        # the app reads the run once; a signature must rest on the run that is on disk
        self._run_sha256 = {rel: sha256_file(res / rel) for rel in RUN_TABLES}
        self.endpoints = {r["patient_id"]: r for r in basis.read_rows(res / "cohort/endpoints.tsv")}
        self.visits = basis.read_rows(res / "cohort/visits.tsv")
        self.index = {
            (r["sample_id"], r["tube"]): r for r in basis.read_rows(res / "cohort/tubes.tsv")
        }
        self.qc = read_tsv(res / "qc/tubes.tsv", text=True)
        self.counts = read_tsv(res / "cohort/counts.tsv", text=True)
        # the NK tubes' re-gatings, which the endpoint's uncertainty columns are computed from
        pert = res / "cohort/perturbation.tsv"
        self.perturbation = read_tsv(pert) if pert.is_file() else None
        study = Study(config)
        self.samples = study.samples
        self.inputs = study.visit_inputs
        self.tube_records = {
            (t.sample_id, t.tube): t
            for t in basis.tube_records(list(self.index.values()), self.base)
        }
        self._rows = {
            (str(r["sample_id"]), str(r["tube"])): r for r in self.samples.to_dict(orient="records")
        }
        self._patient_id = {sid: str(r["patient_id"]) for (sid, _), r in self._rows.items()}
        # the basis of every patient as the run wrote it (read once: the run does not change)
        self.run_bases = {
            pid: basis.patient_basis(pid, r, self.visits, self.tube_records.values())
            for pid, r in self.endpoints.items()
        }
        self._settings = {
            key: tube_settings(config, r["panel"], r["gating"]) for key, r in self._rows.items()
        }
        self._open: OrderedDict[tuple[str, str], OpenTube] = OrderedDict()
        self._predicted: dict[str, tuple[Any, basis.Basis]] = {}
        self.endpoint_settings = EndpointSettings.from_config(config)

    # ------------------------------------------------------------------ identifiers

    def check_tube(self, sample_id: str, tube: str) -> tuple[str, str]:
        """``(sample_id, tube)`` of a tube of this run (ids validated, no traversal)."""
        overrides.check_id("sample_id", sample_id)
        overrides.check_id("tube", tube)
        if (sample_id, tube) not in self.index:
            raise ReviewError(f"tube {sample_id}/{tube} is not in this run's tube index")
        return sample_id, tube

    def check_patient(self, patient_id: str) -> str:
        """``patient_id`` if it is a safe id of this run's endpoints.tsv; ReviewError otherwise."""
        overrides.check_id("patient_id", patient_id)
        if patient_id not in self.endpoints:
            raise ReviewError(
                f"patient {patient_id!r} is not in this run's {self.rs.results}/cohort/"
                f"endpoints.tsv; known: {', '.join(sorted(self.endpoints))}"
            )
        return patient_id

    def patient_of(self, sample_id: str) -> str:
        """The patient a sample belongs to (from the sample sheet)."""
        return self._patient_id[sample_id]

    # ------------------------------------------------------------------ queue

    def _role_population(self, tube: str) -> str | None:
        pops = self.endpoint_settings.populations
        for role, name in self.endpoint_settings.tubes.items():
            if name == tube:
                return pops.get(role)
        return None

    def key_gates(self, sample_id: str, tube: str) -> list[str]:
        """The gates the tube's endpoint populations rest on, in tree order (thumbnails)."""
        from nkflow.tube import cached_tree, critical_gates, endpoint_populations

        prov = self.tube_records[(sample_id, tube)].provenance
        tree = cached_tree(str(self.base / prov["gating_file"]))
        crit = critical_gates(tree, endpoint_populations(self._settings[(sample_id, tube)]))
        return [g.id for g in tree.gates if g.type != "boolean" and g.id in crit]

    def figure_gates(self, sample_id: str, tube: str) -> list[str]:
        """Gate ids in the order the gating figure draws them (one panel each)."""
        from nkflow.tube import cached_tree

        prov = self.tube_records[(sample_id, tube)].provenance
        tree = cached_tree(str(self.base / prov["gating_file"]))
        return [g.id for g in tree.gates if g.type != "boolean"]

    def pending(self, sample_id: str, tube: str) -> bool:
        """True when the override files on disk differ from those the run applied."""
        return is_pending(self.tube_records[(sample_id, tube)], self.rs.overrides)

    def queue(self) -> list[dict[str, Any]]:
        """One item per tube, sorted by risk (then patient, sample, tube)."""
        states = self.review_states()
        visit_by = {v["sample_id"]: v for v in self.visits}
        qc_by: dict[tuple[str, str], list[dict[str, str]]] = {}
        for r in self.qc.to_dict(orient="records"):
            qc_by.setdefault((r["sample_id"], r["tube"]), []).append(r)
        counts_by = {
            (r["sample_id"], r["tube"], r["population"]): r
            for r in self.counts.to_dict(orient="records")
        }
        low = self.endpoint_settings.low_event_count
        items = []
        for (sid, tube), idx in self.index.items():
            pid = self.patient_of(sid)
            ep = self.endpoints.get(pid, {})
            visit = visit_by.get(sid, {})
            day14 = ep.get("sample_id") == sid
            risks = []
            unstable = ep.get("verdict_unstable", "") == "true"
            p_above = ep.get("p_above_threshold", "")
            if p_above:
                try:
                    p = float(p_above)
                except ValueError:
                    p = math.nan  # a probability nkflow cannot read is not a stable verdict
                unstable = unstable or not math.isfinite(p) or 0.05 < p < 0.95
            if day14 and unstable:
                risks.append("verdict_unstable")
            if visit.get("status") == "not_evaluable" or (
                day14 and ep.get("verdict") == "NOT_EVALUABLE"
            ):
                risks.append("not_evaluable")
            if (day14 and ep.get("borderline") == "true") or visit.get(
                "interval_contains_threshold"
            ) == "true":
                risks.append("borderline")
            qrows = qc_by.get((sid, tube), [])
            gate_flags = [
                r["reason_code"]
                for r in qrows
                if r["reason_code"].startswith("gate_") and r["status"] in ("WARN", "FAIL")
            ]
            if gate_flags:
                risks.append("gate_fit_flag")
            status = idx.get("qc_status", "")
            if status == "FAIL":
                risks.append("qc_fail")
            elif status == "WARN":
                risks.append("qc_warn")
            pop = self._role_population(tube)
            crow = counts_by.get((sid, tube, pop or ""), {})
            events = crow.get("events", "")
            if any(r["reason_code"].split(":")[0] in LOW_COUNT_CODES for r in qrows) or (
                events != "" and int(float(events)) < low
            ):
                risks.append("low_counts")
            rank = min((RISKS.index(r) for r in risks), default=len(RISKS))
            items.append(
                {
                    "sample_id": sid,
                    "tube": tube,
                    "patient_id": pid,
                    "study_day": visit.get("study_day", ""),
                    "day14": day14,
                    "qc_status": status,
                    "risks": risks,
                    "rank": rank,
                    "gate_flags": gate_flags,
                    "population": pop or "",
                    "events": events,
                    "pct_of_parent": crow.get("pct_of_parent", ""),
                    "verdict": ep.get("verdict", "") if day14 else "",
                    "donor_nk_per_ul": ep.get("donor_nk_per_ul", "") if day14 else "",
                    "review_status": states[pid].status if pid in states else "",
                    "overridden": bool(overrides.tube_files(self.rs.overrides, sid, tube)),
                    "pending": self.pending(sid, tube),
                    "key_gates": self.key_gates(sid, tube),
                }
            )
        items.sort(key=lambda i: (i["rank"], i["patient_id"], i["sample_id"], i["tube"]))
        return items

    def bases(self) -> dict[str, basis.Basis]:
        """Every patient's basis as a rerun will write it.

        The run's basis, except for patients with override files the run has not applied
        (:meth:`predicted_basis`, cached per set of files).
        """
        out = dict(self.run_bases)
        for pid in out:
            keys = self._pending(pid)
            if not keys:
                continue
            stamp = tuple(
                (
                    k,
                    tuple(
                        overrides.file_sha256(p)
                        for p in overrides.tube_files(self.rs.overrides, *k)
                    ),
                )
                for k in keys
            )
            hit = self._predicted.get(pid)
            if hit is None or hit[0] != stamp:
                hit = (stamp, self.predicted_basis(pid)[0])
                self._predicted[pid] = hit
            out[pid] = hit[1]
        return out

    def review_states(self) -> dict[str, signing.ReviewState]:
        """Each patient's review state: the audit log's signatures against the run."""
        return signing.review_states(audit.read(self.rs.audit_log), self.bases())

    # ------------------------------------------------------------------ one tube

    def _prepare(self, sample_id: str, tube: str) -> Any:
        from nkflow.tube import prepare_tube

        row = self._rows[(sample_id, tube)]
        return prepare_tube(
            fcs=Path(os.path.relpath(row["fcs_path"], self.base)),
            panel=Path(self.config["panels"][row["panel"]]),
            gating=Path(self.config["gating"][row["gating"]]),
            sample_id=sample_id,
            tube=tube,
            settings=self._settings[(sample_id, tube)],
            fmo={m: Path(os.path.relpath(p, self.base)) for m, p in row["fmo_paths"].items()},
        )

    def open(self, sample_id: str, tube: str) -> OpenTube:
        """The tube read and readied (kept for the next previews; a few tubes are kept)."""
        key = self.check_tube(sample_id, tube)
        ot = self._open.get(key)
        if ot is None:
            prep = self._prepare(*key)
            if prep.failure is not None:
                raise ReviewError(
                    f"tube {sample_id}/{tube} cannot be gated ({prep.failure[0]}: "
                    f"{prep.failure[1]}); nothing to review on its gates"
                )
            ot = OpenTube(sample_id, tube, self.patient_of(sample_id), prep)
            self._open[key] = ot
            while len(self._open) > OPEN_TUBES:
                self._open.popitem(last=False)
        self._open.move_to_end(key)
        ot.file_sha, ot.on_disk, ot.overrides = {}, {}, {}
        for p in overrides.tube_files(self.rs.overrides, sample_id, tube):
            # named as the workflow names it (relative to the run directory): the name
            # reaches qc.tsv, whose bytes a signature on the predicted basis rests on
            ov = overrides.read_override(p, label=os.path.relpath(p, self.base))
            ot.overrides[ov.gate] = ov
            ot.file_sha[ov.gate] = ov.info["sha256"]
            for (m, s), v in ov.bounds.items():
                ot.on_disk[(ov.gate, m, s)] = v
            if ov.vertices is not None:
                ot.on_disk[(ov.gate, VERTICES, "")] = tuple(tuple(v) for v in ov.vertices)
        return ot

    def _overrides(
        self,
        ot: OpenTube,
        candidate: dict[tuple[str, str, str], Any],
        author: str = "reviewer (unsaved)",
    ) -> dict[str, Any]:
        from nkflow.gating.override import GateOverride, check_override

        by_gate: dict[str, dict[tuple[str, str], float]] = {}
        verts: dict[str, Any] = {}
        for (g, m, s), v in candidate.items():
            if m == VERTICES:
                verts[g] = v
            else:
                by_gate.setdefault(g, {})[(m, s)] = v
        out = {}
        for g in sorted(set(by_gate) | set(verts)):
            ov = GateOverride(
                gate=g,
                bounds=by_gate.get(g, {}),
                vertices=verts.get(g),
                source="candidate",
                info={"author": author},
            )
            check_override(ot.prep.tree, ov)
            out[g] = ov
        return out

    def parse_candidate(self, raw: Any) -> dict[tuple[str, str, str], Any]:
        """The boundaries a request sends, validated (finite numbers, at least 3 vertices).

        The request sends ``[{gate, marker, side, value} | {gate, vertices: [[x, y], ...]}]``.
        """
        if not isinstance(raw, list):
            raise ReviewError("bounds: expected a list of {gate, marker, side, value}")
        out: dict[tuple[str, str, str], Any] = {}
        for i, b in enumerate(raw):
            if isinstance(b, dict) and "vertices" in b:
                out[(str(b.get("gate", "")), VERTICES, "")] = _vertices(i, b["vertices"])
                continue
            if not isinstance(b, dict) or not {"gate", "marker", "side", "value"} <= set(b):
                raise ReviewError(f"bounds[{i}]: expected gate, marker, side and value")
            try:
                v = float(b["value"])
            except (TypeError, ValueError):
                raise ReviewError(f"bounds[{i}]: value {b['value']!r} is not a number") from None
            if not math.isfinite(v):
                raise ReviewError(f"bounds[{i}]: value {b['value']!r} is not a finite number")
            out[(str(b["gate"]), str(b["marker"]), str(b["side"]))] = v
        return out

    def gate(self, ot: OpenTube, candidate: dict[tuple[str, str, str], Any]) -> Any:
        """The tube gated with ``candidate`` boundaries (GatedTube)."""
        from nkflow.errors import GatingError
        from nkflow.tube import gate_tube

        try:
            gated = gate_tube(ot.prep, self._overrides(ot, candidate), reuse=ot.last)
        except GatingError as exc:
            raise ReviewError(str(exc)) from None
        ot.last = gated.result
        return gated

    def _tube_text(self, ot: OpenTube, gated: Any) -> tuple[str, str, str, str, str | None]:
        """The tables of a gating, as the tube job and then ``nkflow collect`` would write them.

        A tuple: counts.tsv, qc.tsv, cohort counts rows, cohort qc rows, and perturbation.tsv or
        None.
        """
        from nkflow import qc
        from nkflow.tables import format_frame
        from nkflow.tube import date_check, perturbation_table

        counts_tsv = format_frame(gated.counts)
        qc_table = qc.checks_table(ot.sample_id, ot.tube, gated.checks, ot.prep.qc_cfg)
        qc_tsv = format_frame(qc_table)
        cfg = qc.QcConfig.from_dict(self.config.get("qc", {}))
        table = _frame(qc_tsv)
        row = self._rows[(ot.sample_id, ot.tube)]
        prov = dict(ot.prep.prov)
        table = qc.add_checks(
            table, ot.sample_id, ot.tube, [date_check(prov, row["collection_date"], cfg)], cfg
        )
        ep = ot.prep.endpoint
        pert, _record = perturbation_table(
            gated.result, ot.prep.settings, ot.sample_id, ot.tube, ep.denominator_population,
            nk=ep.populations["nk"],
        )  # fmt: skip
        pert_tsv = None if pert is None else format_frame(pert)
        return (
            counts_tsv,
            qc_tsv,
            format_frame(_frame(counts_tsv)),
            format_frame(table),
            pert_tsv,
        )

    def _patient(
        self, pid: str, replaced: dict[tuple[str, str], tuple[str, str, str | None]]
    ) -> tuple[list[dict[str, str]], dict[str, str]]:
        """The patient's visit rows and endpoint row with the ``replaced`` tubes recomputed.

        The rows are text cells, as written; the cohort counts/QC/perturbation rows of the
        ``replaced`` tubes are swapped for recomputed ones.
        """
        import pandas as pd

        from nkflow.clinical.endpoints import ENDPOINT_COLUMNS, build_endpoints
        from nkflow.clinical.sheets import load_adverse_events, load_response, sheet
        from nkflow.clinical.visits import (
            VISIT_COLUMNS,
            build_visits,
            format_cell,
            read_visits,
            table_bytes,
        )

        samples = self.samples[self.samples["patient_id"] == pid]
        sids = set(samples["sample_id"])
        counts = self.counts[self.counts["sample_id"].isin(sids)]
        qcdf = self.qc[self.qc["sample_id"].isin(sids)]
        for (sid, tube), (ctext, qtext, _ptext) in replaced.items():
            counts = pd.concat(
                [counts[~((counts["sample_id"] == sid) & (counts["tube"] == tube))],
                 _frame(ctext, as_text=True)], ignore_index=True,
            )  # fmt: skip
            qcdf = pd.concat(
                [qcdf[~((qcdf["sample_id"] == sid) & (qcdf["tube"] == tube))],
                 _frame(qtext, as_text=True)], ignore_index=True,
            )  # fmt: skip
        inp = self.inputs
        infusions = inp.infusions[inp.infusions["patient_id"] == pid]
        visits = build_visits(
            self.config, samples, counts, qcdf, infusions, inp.cbc, inp.chimerism,
            inp.str_results,
        )  # fmt: skip
        # the endpoints step reads visits.tsv back: round-trip through its bytes
        visits = read_visits(io.BytesIO(table_bytes(visits, VISIT_COLUMNS)))  # type: ignore[arg-type]
        response = adverse = None
        rp = sheet(self.config, "response")
        if rp is not None:
            response, _ = load_response(rp, Path(self.endpoint_settings.response_vocab), [pid])
        ap = sheet(self.config, "adverse_events")
        if ap is not None:
            adverse, _ = load_adverse_events(ap, [pid])
        eps = build_endpoints(
            self.config, visits, infusions, response, adverse, self._perturbation(sids, replaced)
        )
        rec = eps.to_dict(orient="records")[0]
        ep = {c: format_cell(c, rec.get(c)) for c in ENDPOINT_COLUMNS}
        vrows = [
            {c: format_cell(c, r.get(c)) for c in VISIT_COLUMNS}
            for r in visits.to_dict(orient="records")
        ]
        return vrows, ep

    def _perturbation(
        self, sids: set[str], replaced: dict[tuple[str, str], tuple[str, str, str | None]]
    ) -> Any:
        """The patient's cohort perturbation table with the ``replaced`` tubes re-gated.

        As ``nkflow collect`` would write it; None when the run has none.
        """
        import pandas as pd

        from nkflow.tables import format_frame

        if self.perturbation is None:
            return None
        cohort = self.perturbation
        keep = cohort["sample_id"].astype(str).isin(sids)
        for sid, tube in replaced:
            keep &= ~((cohort["sample_id"].astype(str) == sid) & (cohort["tube"] == tube))
        parts = [cohort[keep]]
        parts += [_frame(p) for _c, _q, p in replaced.values() if p is not None]
        # through the bytes the endpoints step reads (collect's concat, write, read back)
        return _frame(format_frame(pd.concat(parts, ignore_index=True)))

    def editable(self, gated: Any) -> list[dict[str, Any]]:
        """The rectangle bounds of the gating that a reviewer can move, with what set them."""
        res = gated.result
        rec_by = {}
        for f in res.fits:
            if f["side"] in ("min", "max"):
                rec_by[(f["gate"], f["markers"][0], f["side"])] = f
        out: list[dict[str, Any]] = []
        for g in res.tree.gates:
            if g.type == "polygon" and g.id not in res.not_computed:
                f = next((x for x in res.fits if x["gate"] == g.id and x["side"] == "shape"), None)
                fitted = [list(v) for v in g.vertices]
                if f is not None and f["method"] == "override":
                    fitted = f["stats"].get("fitted")
                out.append(
                    {
                        "gate": g.id,
                        "markers": [d.marker for d in g.dims],
                        "vertices": [[float(x) for x in v] for v in g.vertices],
                        "fitted": fitted,
                        "method": "declared" if f is None else f["method"],
                    }
                )
                continue
            if g.type != "rectangle" or g.id in res.not_computed:
                continue
            for d in g.dims:
                for side in ("min", "max"):
                    v = getattr(d, side)
                    if v is None:
                        continue
                    f = rec_by.get((g.id, d.marker, side))
                    method = "declared" if f is None else f["method"]
                    fitted = v if f is None else f["value"]
                    if f is not None and f["method"] == "override":
                        fitted = f["stats"].get("fitted")
                    out.append(
                        {
                            "gate": g.id,
                            "marker": d.marker,
                            "side": side,
                            "value": float(v),
                            "fitted": None if fitted is None else float(fitted),
                            "method": method,
                        }
                    )
        return out

    def preview(self, sample_id: str, tube: str, raw_candidate: Any) -> dict[str, Any]:
        """Numbers of the tube and of the patient's endpoint with candidate boundaries."""
        t0 = time.perf_counter()
        ot = self.open(sample_id, tube)
        candidate = self.parse_candidate(raw_candidate)
        gated = self.gate(ot, candidate)
        t_gate = time.perf_counter()
        counts_tsv, _qc_tsv, crow, qrow, ptext = self._tube_text(ot, gated)
        vrows, ep = self._patient(ot.patient_id, {(sample_id, tube): (crow, qrow, ptext)})
        visit = next((v for v in vrows if v["sample_id"] == sample_id), {})
        shown = ["population", "parent", "events", "pct_of_parent", "status", "reason"]
        pops = _frame(counts_tsv, as_text=True)[shown].to_dict(orient="records")
        status = str(_frame(qrow, as_text=True)["tube_status"].iloc[0])
        return {
            "sample_id": sample_id,
            "tube": tube,
            "patient_id": ot.patient_id,
            "populations": pops,
            "bounds": [b for b in self.editable(gated) if "side" in b],
            "polygons": [b for b in self.editable(gated) if "vertices" in b],
            "qc_status": status,
            "flags": [f["message"] for f in gated.result.flags],
            "visit": {
                k: visit.get(k, "")
                for k in (
                    "status",
                    "reason",
                    "nk_events",
                    "lymphocyte_events",
                    "nk_pct_of_lymphocytes",
                    "donor_nk_per_ul",
                    "donor_nk_per_ul_lo95",
                    "donor_nk_per_ul_hi95",
                    "treg_pct_of_cd4",
                )
            },  # fmt: skip
            "endpoint": {
                k: ep.get(k, "")
                for k in (
                    "sample_id",
                    "donor_nk_per_ul",
                    "verdict",
                    "reason",
                    "borderline",
                    "donor_nk_per_ul_lo95",
                    "donor_nk_per_ul_hi95",
                    "verdict_basis",
                )
            },  # fmt: skip
            "gate_ms": round(1000 * (t_gate - t0), 1),
            "elapsed_ms": round(1000 * (time.perf_counter() - t0), 1),
        }

    def figure(self, sample_id: str, tube: str, raw_candidate: Any) -> tuple[bytes, dict[str, Any]]:
        """The tube's gating figure with candidate boundaries (PNG) and each panel's axes."""
        import tempfile

        from nkflow.figures import FigureSettings, gating_figure

        ot = self.open(sample_id, tube)
        gated = self.gate(ot, self.parse_candidate(raw_candidate))
        layout: dict[str, Any] = {}
        with tempfile.TemporaryDirectory(prefix="nkflow-review-") as tmp:
            out = Path(tmp) / "gating.png"
            gating_figure(
                gated.result,
                out,
                title=f"{sample_id} / {tube} (candidate)",
                settings=FigureSettings.from_dict(ot.prep.settings.get("figures")),
                layout=layout,
            )
            return out.read_bytes(), layout

    # ------------------------------------------------------------------ saving

    def save(
        self,
        user: str,
        sample_id: str,
        tube: str,
        raw_candidate: Any,
        reason: str,
        expected: dict[str, str | None],
        raw_old: Any = None,
    ) -> dict[str, Any]:
        """Write the candidate as override files and log each change.

        ``expected`` is gate -> the sha256 of its override file when the reviewer opened the
        tube (None: none). ``raw_old`` gives, per bound, the value the reviewer saw before the
        change. Gates whose candidate bounds equal the files on disk are left alone; a gate
        whose override was reset (no candidate bound) has its file removed.

        Raises
        ------
        ReviewError
            No reason, nothing changed, or a file changed since it was opened (the message
            names it; ``conflicts`` in :meth:`conflicts` shows both versions).
        """
        if not str(reason or "").strip():
            raise ReviewError("a reason is mandatory to save a gate correction; nothing was saved")
        ot = self.open(sample_id, tube)
        candidate = self.parse_candidate(raw_candidate)
        old = dict(self.parse_candidate(raw_old or []).items())
        gated = self.gate(ot, candidate)  # validates against the tree
        fits = {
            (f["gate"], f["markers"][0], f["side"])
            if f["side"] in ("min", "max")
            else (f["gate"], VERTICES, ""): f
            for f in gated.result.fits
        }
        gates = sorted({g for g, _, _ in candidate} | set(ot.file_sha))
        conflicts = self.conflicts(ot, expected)
        if conflicts:
            raise ConflictError(conflicts, candidate)
        written = []
        now = audit.utc_now()
        users = load_users(self.rs.users)
        for g in gates:
            mine = {(m, s): v for (gg, m, s), v in candidate.items() if gg == g}
            disk = {(m, s): v for (gg, m, s), v in ot.on_disk.items() if gg == g}
            if mine == disk:
                continue
            path = overrides.override_path(self.rs.overrides, sample_id, tube, g)
            if not mine:
                sha = overrides.remove_override(path, expected_sha256=expected.get(g))
                data: dict[str, Any] = {"sample_id": sample_id, "tube": tube, "gate": g, "action": "removed",
                        "change": "override removed (the fitted boundary applies)",
                        "reason": reason, "file": str(path), "removed_sha256": sha}  # fmt: skip
                audit.append(self.rs.audit_log, "override", user=user,
                             patient_id=ot.patient_id, data=data)  # fmt: skip
                written.append(data)
                continue
            bounds = []
            shape: dict[str, Any] | None = None
            for (m, s), v in sorted(mine.items()):
                f = fits.get((g, m, s), {})
                st = f.get("stats", {})
                if m == VERTICES:
                    was = old.get((g, m, s))
                    shape = {"old": None if was is None else [list(x) for x in was],
                             "new": [list(x) for x in v]}  # fmt: skip
                    if st.get("fitted") is not None:
                        shape["fitted"] = [list(map(float, x)) for x in st["fitted"]]
                    continue
                b: dict[str, Any] = {"marker": m, "side": s, "old": old.get((g, m, s)), "new": v}
                if st.get("fitted") is not None:
                    b["fitted"] = float(st["fitted"])
                bounds.append(b)
            doc: dict[str, Any] = {
                "sample_id": sample_id,
                "tube": tube,
                "gate": g,
                **({"vertices": shape} if shape is not None else {"bounds": bounds}),
                "author": user,
                "author_name": users[user].name if user in users else user,
                "time_utc": now,
                "reason": reason.strip(),
                "supersedes": expected.get(g),
            }
            path, sha = overrides.write_override(
                self.rs.overrides, doc, expected_sha256=expected.get(g)
            )
            data = {
                "sample_id": sample_id,
                "tube": tube,
                "gate": g,
                "action": "saved",
                "change": overrides.describe_change(doc),
                **({"vertices": shape} if shape is not None else {"bounds": bounds}),
                "reason": doc["reason"],
                "file": str(path),
                "sha256": sha,
                "supersedes": expected.get(g),
            }
            audit.append(
                self.rs.audit_log, "override", user=user, patient_id=ot.patient_id, data=data
            )
            written.append(data)
        if not written:
            raise ReviewError(
                f"tube {sample_id}/{tube}: the boundaries equal the saved ones; nothing to save"
            )
        self.open(sample_id, tube)  # refresh what is on disk
        return {"saved": written, "file_sha": dict(ot.file_sha)}

    def conflicts(self, ot: OpenTube, expected: dict[str, str | None]) -> list[dict[str, Any]]:
        """Override files of the tube that changed since ``expected`` (what the page saw)."""
        out = []
        on_disk = {
            p.stem: p for p in overrides.tube_files(self.rs.overrides, ot.sample_id, ot.tube)
        }
        for g in sorted(set(on_disk) | set(expected)):
            now = overrides.file_sha256(on_disk[g]) if g in on_disk else None
            if now != expected.get(g):
                theirs = overrides.load_doc(on_disk[g]) if g in on_disk else None
                out.append({"gate": g, "expected_sha256": expected.get(g), "sha256": now,
                            "theirs": theirs})  # fmt: skip
        return out

    # ------------------------------------------------------------------ signing

    def _pending(self, pid: str) -> list[tuple[str, str]]:
        """The patient's tubes with override files the run has not applied."""
        return [k for k in self.index if self.patient_of(k[0]) == pid and self.pending(*k)]

    def predicted_basis(self, pid: str) -> tuple[basis.Basis, list[str]]:
        """The basis the patient's endpoint will rest on after a rerun, and the tubes behind it.

        The tubes are those whose pending override files were applied to predict the basis.
        """
        pending = self._pending(pid)
        if not pending:
            return self.run_bases[pid], []
        from nkflow.tube import gate_tube

        replaced, tube_files = {}, {}
        for key in pending:
            ot = self.open(*key)
            gov = dict(ot.overrides)
            gated = gate_tube(ot.prep, gov)
            counts_tsv, qc_tsv, crow, qrow, ptext = self._tube_text(ot, gated)
            replaced[key] = (crow, qrow, ptext)
            tube_files[key] = (counts_tsv, qc_tsv, gov)
        vrows, ep = self._patient(pid, replaced)
        tubes = [rec for key, rec in self.tube_records.items() if key not in tube_files]
        b = basis.patient_basis(pid, ep, vrows, tubes)
        items, authors = dict(b.items), dict(b.override_authors)
        for (sid, tube), (counts_tsv, qc_tsv, gov) in tube_files.items():
            rec = self.tube_records[(sid, tube)]
            prov = dict(rec.provenance)
            prov["overrides"] = [
                {"gate": o.gate, "sha256": o.info["sha256"], "author": o.info["author"]}
                for o in gov.values()
            ]
            ti, ta = basis.tube_items(basis.TubeRecord(sid, tube, prov, Path("/nonexistent")))
            ti[f"counts:{sid}/{tube}"] = basis.sha256_text(counts_tsv)
            ti[f"qc:{sid}/{tube}"] = basis.sha256_text(qc_tsv)
            items.update(ti)
            authors.update(ta)
        return (
            basis.Basis(pid, b.endpoint, dict(sorted(items.items())), authors),
            [f"{s}/{t}" for s, t in pending],
        )

    def check_run_unchanged(self) -> None:
        """Refuse to go on when the run's tables changed on disk since the app read them.

        Raises
        ------
        ReviewError
            Naming the table, its sha256 when the app started and now, and the fix.
        """
        for rel, was in self._run_sha256.items():
            now = sha256_file(self.rs.results / rel)
            if now != was:
                raise ReviewError(
                    f"{self.rs.results / rel}: the run changed since 'nkflow review' read it "
                    f"(sha256 {was[:12]} then, {now[:12]} now), so a signature would rest on "
                    "numbers no longer on disk; fix: restart 'nkflow review' to review the "
                    "new run"
                )

    def sign(self, user_id: str, password: str, pid: str, meaning: str) -> dict[str, Any]:
        """Sign the patient's (predicted) endpoint; voids are logged first."""
        self.check_patient(pid)
        users = load_users(self.rs.users)
        authenticate(users, user_id, password)  # before any work, and before any log write
        self.check_run_unchanged()
        bases = self.bases()
        signing.sync_voids(self.rs.audit_log, bases)
        b, pending = bases[pid], [f"{s}/{t}" for s, t in self._pending(pid)]
        entry = signing.sign(
            self.rs.audit_log,
            users,
            user_id=user_id,
            password=password,
            meaning=meaning,
            basis=b,
            two_person_rule=self.rs.two_person_rule,
        )
        return {"entry": entry, "pending": pending, "endpoint": b.summary()}

    def record_run(self, by: str = "nkflow-review") -> dict[str, Any] | None:
        """A ``run`` event for this run's results, unless the last one names the same run."""
        from nkflow import __version__
        from nkflow.config import config_digest

        sha = sha256_file(self.rs.results / "cohort/endpoints.tsv")
        runs = [e for e in audit.read(self.rs.audit_log) if e["event"] == "run"]
        if runs and runs[-1]["data"].get("endpoints_sha256") == sha:
            return None
        data = {
            "results": str(self.rs.results),
            "endpoints_sha256": sha,
            "config_digest": config_digest(self.config),
            "nkflow_version": __version__,
        }
        return audit.append(self.rs.audit_log, "run", user=by, data=data)


class ConflictError(ReviewError):
    """A save refused because an override file changed since the tube was opened.

    It carries both versions: ``conflicts``, what is on disk now; ``candidate``, what was to be
    saved.
    """

    def __init__(self, conflicts: list[dict[str, Any]], candidate: dict[Any, Any]) -> None:
        gates = ", ".join(c["gate"] for c in conflicts)
        super().__init__(
            f"the tube changed since you opened it: override(s) of gate(s) {gates} were saved "
            "by someone else in the meantime; nothing was saved. Compare both versions, reload "
            "and save again"
        )
        self.conflicts = conflicts
        self.candidate = as_request(candidate)
