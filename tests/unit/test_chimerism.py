"""Chimerism: fraction preference, STR locus formulas (DOMAIN.md section 4), 2-SD exclusion."""

import datetime as dt
import statistics

import pandas as pd
import pytest

from nkflow.clinical import chimerism as chim
from nkflow.clinical.endpoint_settings import EndpointSettings
from nkflow.clinical.visits import compute_str_results

D14 = dt.date(2024, 1, 15)


def cand(fraction, date, pct, source="table", sd=None):
    return {"fraction": fraction, "date": date, "donor_pct": pct, "sd": sd, "source": source}


def test_preferred_fraction_is_used_and_recorded_when_both_exist():
    sel = chim.select_result([cand("PB", D14, 50.0), cand("CD56", D14, 72.0)], D14, ["CD56", "PB"])
    assert (sel.fraction, sel.donor_pct, sel.source, sel.reason) == ("CD56", 72.0, "table", "")


def test_only_pb_gives_pb_recorded():
    sel = chim.select_result([cand("PB", D14, 50.0)], D14, ["CD56", "PB"])
    assert (sel.fraction, sel.donor_pct) == ("PB", 50.0)


def test_fractions_are_never_mixed_closest_date_then_earlier():
    d12, d16, d17 = (D14 + dt.timedelta(days=k) for k in (-2, 2, 3))
    cands = [cand("CD56", d16, 70.0), cand("CD56", d12, 60.0), cand("PB", D14, 10.0)]
    sel = chim.select_result(cands, D14, ["CD56", "PB"], tolerance_days=3)
    assert (sel.fraction, sel.date, sel.donor_pct) == ("CD56", d12, 60.0)  # tie -> earlier
    sel = chim.select_result(
        [cand("CD56", d17, 70.0), cand("PB", D14, 10.0)], D14, ["CD56", "PB"], 2
    )
    assert (sel.fraction, sel.donor_pct) == ("PB", 10.0)  # CD56 out of tolerance


def test_unlisted_fraction_gives_missing_chimerism():
    sel = chim.select_result([cand("CD3", D14, 95.0)], D14, ["CD56", "PB"])
    assert (sel.fraction, sel.donor_pct, sel.reason) == (None, None, "missing_chimerism")


def test_reference_genotype_keeps_peaks_above_half_the_locus_max():
    assert chim.reference_genotype({"10": 1000, "12": 900, "9": 100}) == ("10", "12")
    assert chim.reference_genotype({"9.3": 1000, "10": 499}) == ("9.3",)


def test_formula_het_het_one_shared():
    r = chim.locus_donor_pct("L", ["10", "12"], ["12", "14"], {"10": 600, "12": 1000, "14": 400})
    assert (r.pattern, r.status, r.donor_pct) == ("het_het_one_shared", "ok", pytest.approx(60.0))


def test_formula_donor_het_recipient_hom():
    r = chim.locus_donor_pct("L", ["8", "9"], ["9"], {"8": 620, "9": 1380})
    assert (r.pattern, r.donor_pct) == (
        "donor_het_recipient_hom",
        pytest.approx(62.0),
    )  # 2*620/2000


def test_formula_recipient_het_donor_hom():
    r = chim.locus_donor_pct("L", ["11"], ["11", "13"], {"11": 1580, "13": 420})
    assert (r.pattern, r.donor_pct) == (
        "recipient_het_donor_hom",
        pytest.approx(58.0),
    )  # 1-840/2000


def test_formula_no_shared_alleles():
    r = chim.locus_donor_pct(
        "L", ["15", "16"], ["18", "20"], {"15": 300, "16": 300, "18": 200, "20": 200}
    )
    assert (r.pattern, r.donor_pct) == ("no_shared", pytest.approx(60.0))


def test_identical_genotypes_are_non_informative():
    r = chim.locus_donor_pct("L", ["7", "9"], ["9", "7"], {"7": 1, "9": 1})
    assert (r.status, r.donor_pct) == ("non_informative", None)


def test_full_recipient_and_full_donor():
    assert chim.locus_donor_pct("L", ["10"], ["14"], {"14": 900}).donor_pct == 0.0
    assert chim.locus_donor_pct("L", ["10"], ["14"], {"10": 900}).donor_pct == 100.0
    assert chim.locus_donor_pct("L", ["10"], ["14"], {}).status == "no_signal"


def test_stutter_conflict_excludes_the_locus():
    # recipient-only 14 sits at n+1 of donor allele 13
    r = chim.locus_donor_pct("L", ["12", "13"], ["14", "15"], {"12": 1, "13": 1, "14": 1, "15": 1})
    assert (r.status, r.donor_pct) == ("stutter_conflict", None)
    r = chim.locus_donor_pct("L", ["12", "13"], ["14", "15"], {"12": 1, "14": 1}, False)
    assert r.status == "ok"


def test_combine_two_sd_exclusion_and_stats():
    vals = [50.0] * 9 + [90.0]  # mean 54, SD sqrt(160) = 12.65; |90 - 54| = 36 > 25.3
    c = chim.combine_loci(vals, min_loci=3)
    assert (c.donor_pct, c.sd, c.n_loci, c.n_excluded, c.outliers) == (50.0, 0.0, 9, 1, (9,))
    assert c.cv == 0.0
    c = chim.combine_loci([60.0, 62.0, 58.0, 60.0])
    assert c.donor_pct == pytest.approx(60.0)
    assert c.sd == pytest.approx(statistics.stdev([60, 62, 58, 60]))
    assert c.cv == pytest.approx(statistics.stdev([60, 62, 58, 60]) / 60)
    assert (c.n_loci, c.n_excluded, c.status) == (4, 0, "ok")


def test_too_few_loci_is_not_computable():
    c = chim.combine_loci([60.0, 61.0], min_loci=3)
    assert (c.status, c.donor_pct, c.n_loci) == ("not_computable", None, 2)


def _peaks(rows):
    return pd.DataFrame(
        rows,
        columns=[
            "sample_file",
            "patient_id",
            "role",
            "date",
            "fraction",
            "marker",
            "allele",
            "height",
            "area",
        ],
    )


def test_compute_from_peaks_drops_ol_and_sex_markers_and_reports_loci():
    rows = []
    ref = {
        "A": (["10", "12"], ["12", "14"]),
        "B": (["8"], ["11"]),
        "C": (["5"], ["7"]),
        "AMEL": (["X", "Y"], ["X"]),
    }
    post = {
        "A": {"10": 300, "12": 500, "14": 700},
        "B": {"8": 100, "11": 300},
        "C": {"5": 250, "7": 750},
        "AMEL": {"X": 10, "Y": 990},
    }
    for m, (d, r) in ref.items():
        rows += [["d", "P1", "donor", None, "PB", m, a, 1000.0, 1.0] for a in d]
        rows += [["r", "P1", "recipient", None, "PB", m, a, 1000.0, 1.0] for a in r]
        rows += [["p", "P1", "post", D14, "PB", m, a, 1.0, float(x)] for a, x in post[m].items()]
    rows.append(["p", "P1", "post", D14, "PB", "C", "OL", 1.0, 5000.0])
    res, loci = compute_str_results(_peaks(rows), EndpointSettings.from_config(None))
    assert list(loci["marker"]) == ["A", "B", "C"]
    assert list(loci["donor_pct"]) == [pytest.approx(300 / 1000 * 100), 25.0, 25.0]
    assert list(loci["status"]) == ["ok", "ok", "ok"]
    r = res.iloc[0]
    assert (r["fraction"], r["n_loci"], r["status"]) == ("PB", 3, "ok")
    assert r["donor_pct"] == pytest.approx(80 / 3)
