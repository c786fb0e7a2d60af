"""Donor chimerism: choosing the configured fraction for a visit, and % donor from raw STR peaks.

Contract
--------
* Fractions come from a controlled vocabulary (:class:`FractionVocab`, loaded from
  ``config/vocab/chimerism_fractions.yaml`` by :func:`nkflow.clinical.sheets.load_fraction_vocab`):
  canonical names with the spellings labs use as aliases, matched ignoring case and whitespace.
  A spelling that matches nothing is never passed on (:meth:`FractionVocab.canonical` returns
  None and the sheet loader refuses the rows).
* Fractions (PB, CD56, CD3, ...) are never combined. :func:`select_result` walks the configured
  preference order and returns the first fraction that has a usable result dated within the
  tolerance of the visit (closest date, then the earlier one); the fraction is returned with it.
* Peaks (DOMAIN.md section 4): off-ladder alleles (``OL``) and sex markers are dropped; a
  reference genotype keeps the peaks with height >= ``ref_min_frac`` x the locus maximum. Per
  informative locus, with Ad, Ar, As the post-sample areas of donor-only, recipient-only and
  shared alleles:

  ===========================================================  ==========================
  genotypes                                                     % donor
  ===========================================================  ==========================
  identical                                                     non-informative (excluded)
  both heterozygous, one allele shared                          Ad / (Ad + Ar)
  donor heterozygous, recipient homozygous for the shared one   2 Ad / (Ad + As)
  recipient heterozygous, donor homozygous for the shared one   1 - 2 Ar / (Ar + As)
  no shared allele                                              sum(Ad) / (sum(Ad) + sum(Ar))
  ===========================================================  ==========================

  A locus is excluded for stutter when a recipient-only allele is one repeat (n-1 or n+1) from a
  donor allele. Values are not clipped to 0-100. Loci further than ``outlier_sd`` sample SDs
  (ddof=1) from the mean are excluded in one pass; mean, SD, CV and the number of loci are then
  recomputed. Fewer than ``min_loci`` informative loci -> ``not_computable``.
  Note: with n loci the largest possible z-score is (n - 1)/sqrt(n), so the 2-SD rule can only
  exclude anything when n >= 6.
* Pure functions; the caller writes the per-locus table.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

LOCUS_COLUMNS = (
    "patient_id",
    "date",
    "fraction",
    "marker",
    "donor_alleles",
    "recipient_alleles",
    "pattern",
    "area_donor_only",
    "area_recipient_only",
    "area_shared",
    "donor_pct",
    "status",
)
RESULT_COLUMNS = (
    "patient_id",
    "date",
    "fraction",
    "donor_pct",
    "donor_pct_sd",
    "donor_pct_cv",
    "n_loci",
    "n_loci_excluded_outlier",
    "status",
)


def fraction_key(spelling: str) -> str:
    """Matching key of a fraction spelling: case folded, all whitespace removed.

    ``+`` and ``-`` are kept: ``CD56-`` (negative) is not ``CD56``.
    """
    return "".join(spelling.split()).casefold()


@dataclass(frozen=True)
class FractionVocab:
    """Chimerism fractions: canonical names and the spellings accepted for each.

    Attributes
    ----------
    source : str
        The vocabulary file, for messages.
    names : tuple of str
        Canonical fractions, in file order.
    spellings : Mapping[str, str]
        :func:`fraction_key` of every canonical name and alias -> canonical name.
    aliases : Mapping[str, tuple of str]
        Canonical name -> its aliases as written in the file.
    """

    source: str
    names: tuple[str, ...]
    spellings: Mapping[str, str]
    aliases: Mapping[str, tuple[str, ...]]

    def canonical(self, spelling: str) -> str | None:
        """The canonical fraction ``spelling`` stands for, or None when it matches nothing."""
        return self.spellings.get(fraction_key(spelling))

    def allowed(self) -> str:
        """``CD56 (aliases CD56+, NK), PB (...)``: every accepted spelling, for messages."""
        return ", ".join(
            f"{n} (aliases {', '.join(self.aliases[n])})" if self.aliases[n] else n
            for n in self.names
        )


@dataclass(frozen=True)
class LocusResult:
    """% donor at one locus (``donor_pct`` None unless ``status == 'ok'``)."""

    marker: str
    donor_alleles: tuple[str, ...]
    recipient_alleles: tuple[str, ...]
    pattern: str
    area_donor_only: float
    area_recipient_only: float
    area_shared: float
    donor_pct: float | None
    status: str  # ok | non_informative | stutter_conflict | no_signal | unsupported_genotype


@dataclass(frozen=True)
class Combined:
    """Sample-level % donor from the informative loci."""

    donor_pct: float | None
    sd: float | None
    cv: float | None
    n_loci: int
    n_excluded: int
    status: str  # ok | not_computable
    outliers: tuple[int, ...] = ()


def reference_genotype(peaks: dict[str, float], ref_min_frac: float = 0.5) -> tuple[str, ...]:
    """Alleles of a reference profile at one locus: height >= ``ref_min_frac`` x locus max."""
    if not peaks:
        return ()
    top = max(peaks.values())
    return tuple(sorted((a for a, h in peaks.items() if h >= ref_min_frac * top), key=_allele_key))


def _allele_key(a: str) -> tuple[int, float, str]:
    try:
        return (0, float(a), a)
    except ValueError:
        return (1, 0.0, a)


def _is_stutter(r: str, d: str) -> bool:
    try:
        return math.isclose(abs(float(r) - float(d)), 1.0, abs_tol=1e-9)
    except ValueError:
        return False


def locus_donor_pct(
    marker: str,
    donor: Sequence[str],
    recipient: Sequence[str],
    post_areas: dict[str, float],
    stutter_exclusion: bool = True,
) -> LocusResult:
    """% donor at one locus from reference genotypes and the post-sample peak areas.

    Parameters
    ----------
    marker
        Locus name (for the record).
    donor, recipient
        Reference alleles (1 = homozygous, 2 = heterozygous).
    post_areas
        Allele -> area in the post-transplant sample; an allele without a peak counts 0.
    stutter_exclusion
        Exclude the locus when a recipient-only allele is one repeat from a donor allele.
    """
    d, r = set(donor), set(recipient)
    d_only, r_only, shared = sorted(d - r), sorted(r - d), sorted(d & r)
    ad = sum(post_areas.get(a, 0.0) for a in d_only)
    ar = sum(post_areas.get(a, 0.0) for a in r_only)
    as_ = sum(post_areas.get(a, 0.0) for a in shared)
    dt_ = tuple(sorted(d, key=_allele_key))
    rt_ = tuple(sorted(r, key=_allele_key))

    def res(pattern: str, pct: float | None, status: str) -> LocusResult:
        return LocusResult(marker, dt_, rt_, pattern, ad, ar, as_, pct, status)

    if d == r:
        return res("identical", None, "non_informative")
    if len(d) > 2 or len(r) > 2 or not d or not r:
        return res("unsupported", None, "unsupported_genotype")
    pattern = _pattern(d, r, shared)
    if stutter_exclusion and any(_is_stutter(ra, da) for ra in r_only for da in d):
        return res(pattern, None, "stutter_conflict")
    if pattern == "donor_het_recipient_hom":
        den = ad + as_
        pct = None if den <= 0 else 100.0 * 2.0 * ad / den
    elif pattern == "recipient_het_donor_hom":
        den = ar + as_
        pct = None if den <= 0 else 100.0 * (1.0 - 2.0 * ar / den)
    else:  # het_het_one_shared, no_shared: Ad / (Ad + Ar)
        den = ad + ar
        pct = None if den <= 0 else 100.0 * ad / den
    return res(pattern, pct, "ok" if pct is not None else "no_signal")


def _pattern(d: set[str], r: set[str], shared: list[str]) -> str:
    if not shared:
        return "no_shared"
    if len(d) == 2 and len(r) == 2:
        return "het_het_one_shared"
    if len(d) == 2:
        return "donor_het_recipient_hom"
    return "recipient_het_donor_hom"


def combine_loci(values: Sequence[float], min_loci: int = 3, outlier_sd: float = 2.0) -> Combined:
    """Mean % donor over loci after one-pass exclusion of loci > ``outlier_sd`` SD from the mean.

    SD is the sample SD (ddof=1); CV = SD / mean (None when the mean is 0). Fewer than
    ``min_loci`` remaining loci -> ``not_computable`` (numbers still None).
    """
    vals = [float(v) for v in values]
    outliers: tuple[int, ...] = ()
    if len(vals) >= 2:
        m, s = _mean(vals), _sd(vals)
        if s > 0:
            outliers = tuple(i for i, v in enumerate(vals) if abs(v - m) > outlier_sd * s)
    kept = [v for i, v in enumerate(vals) if i not in outliers]
    n = len(kept)
    if n < max(min_loci, 1):
        return Combined(None, None, None, n, len(outliers), "not_computable", outliers)
    m = _mean(kept)
    s = _sd(kept) if n >= 2 else 0.0
    cv = s / m if m != 0 else None
    return Combined(m, s, cv, n, len(outliers), "ok", outliers)


def _mean(v: Sequence[float]) -> float:
    return sum(v) / len(v)


def _sd(v: Sequence[float]) -> float:
    m = _mean(v)
    return math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1))


def compute_from_peaks(
    peaks: pd.DataFrame,
    *,
    min_loci: int,
    outlier_sd: float,
    ref_min_frac: float,
    exclude_markers: Iterable[str],
    stutter_exclusion: bool,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """% donor for every post-transplant sample in a peak table from ``sheets.load_str_peaks``.

    The settings are the ``endpoints`` block's STR settings (their defaults are the schema's;
    :func:`nkflow.clinical.visits.compute_str_results` passes them).

    Returns
    -------
    (results, loci)
        ``results``: one row per (patient_id, date, fraction) with :data:`RESULT_COLUMNS`;
        ``loci``: per-locus detail with :data:`LOCUS_COLUMNS` (an outlier's status: ``outlier_2sd``).
    """
    import pandas as pd

    excl = {m.upper() for m in exclude_markers}
    pk = peaks[(peaks["allele"] != "OL") & (~peaks["marker"].str.upper().isin(excl))]
    res_rows: list[dict[str, Any]] = []
    loc_rows: list[dict[str, Any]] = []
    for pid in sorted(pk["patient_id"].unique()):
        pp = pk[pk["patient_id"] == pid]
        ref = {}
        for role in ("donor", "recipient"):
            rp = pp[pp["role"] == role]
            ref[role] = {
                m: reference_genotype(
                    dict(zip(g["allele"], g["height"], strict=True)), ref_min_frac
                )
                for m, g in rp.groupby("marker", sort=True)
            }
        post = pp[pp["role"] == "post"]
        for (date, frac), ps in post.groupby(["date", "fraction"], sort=True):
            markers = sorted(set(ref["donor"]) & set(ref["recipient"]))
            loci = []
            for m in markers:
                g = ps[ps["marker"] == m]
                areas = dict(zip(g["allele"], g["area"], strict=True))
                loci.append(
                    locus_donor_pct(
                        m, ref["donor"][m], ref["recipient"][m], areas, stutter_exclusion
                    )
                )
            ok = [lr for lr in loci if lr.status == "ok"]
            comb = combine_loci([lr.donor_pct for lr in ok], min_loci, outlier_sd)  # type: ignore[misc]
            out_markers = {ok[i].marker for i in comb.outliers}
            for lr in loci:
                status = "outlier_2sd" if lr.marker in out_markers else lr.status
                loc_rows.append(
                    {
                        "patient_id": pid,
                        "date": date,
                        "fraction": frac,
                        **vars(lr),
                        "donor_alleles": ",".join(lr.donor_alleles),
                        "recipient_alleles": ",".join(lr.recipient_alleles),
                        "status": status,
                    }
                )
            res_rows.append(
                {
                    "patient_id": pid,
                    "date": date,
                    "fraction": frac,
                    "donor_pct": comb.donor_pct,
                    "donor_pct_sd": comb.sd,
                    "donor_pct_cv": comb.cv,
                    "n_loci": comb.n_loci,
                    "n_loci_excluded_outlier": comb.n_excluded,
                    "status": comb.status,
                }
            )
    return (
        pd.DataFrame(res_rows, columns=list(RESULT_COLUMNS)),
        pd.DataFrame(loc_rows, columns=list(LOCUS_COLUMNS)),
    )


@dataclass(frozen=True)
class Selected:
    """The chimerism result chosen for a visit (all None when none qualifies).

    ``candidate`` is the chosen candidate itself (with whatever keys the caller gave it, e.g.
    the table row), for reports of which result was used; it takes no part in comparisons.
    """

    fraction: str | None
    date: dt.date | None
    donor_pct: float | None
    sd: float | None
    source: str | None  # 'str_peaks' | 'table'
    reason: str  # '' or 'missing_chimerism'
    candidate: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)


def select_result(
    candidates: Iterable[dict[str, Any]],
    visit_date: dt.date,
    preference: Sequence[str],
    tolerance_days: int = 3,
) -> Selected:
    """Choose the chimerism result for one visit of one patient.

    Parameters
    ----------
    candidates
        Usable results of this patient: dicts with ``fraction``, ``date``, ``donor_pct``, ``sd``
        (None for table rows) and ``source``. Peak-derived (``str_peaks``) results come before
        table results for the same fraction and date.
    visit_date
        Collection date of the visit.
    preference
        Fractions in order of preference, e.g. ``['CD56', 'PB']``. Other fractions are ignored.
    tolerance_days
        Largest |result date - visit date| accepted.

    Returns
    -------
    Selected
        The first preferred fraction with a result in tolerance; inside it the closest date, then
        the earlier date, then ``str_peaks`` before ``table``. Never a mix of fractions.
    """
    cands = list(candidates)
    for frac in preference:
        pool = [
            c
            for c in cands
            if c["fraction"] == frac
            and c["donor_pct"] is not None
            and abs((c["date"] - visit_date).days) <= tolerance_days
        ]
        if not pool:
            continue
        pool.sort(
            key=lambda c: (
                abs((c["date"] - visit_date).days),
                c["date"],
                0 if c["source"] == "str_peaks" else 1,
            )
        )
        c = pool[0]
        return Selected(frac, c["date"], c["donor_pct"], c.get("sd"), c["source"], "", c)
    return Selected(None, None, None, None, None, "missing_chimerism")
