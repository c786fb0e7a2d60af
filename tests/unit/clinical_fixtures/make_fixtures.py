"""Write the hand-designed clinical fixture cohort (run once; the TSVs are committed).

Every number is chosen so the expected endpoint can be computed by hand (see test_endpoints.py):

P001 PASS      ALC 450 cells/uL, NK 3800/10000 live, CD56 chimerism 72 % (PB 50 % ignored)
               -> 450 x 0.38 x 0.72 = 123.12; day 7 visit with a Treg tube (Treg 80/2000 CD4)
P002 FAIL      ALC 0.5 10^9/L = 500, NK 2000/10000, PB only 100 % -> exactly 100.0 (borderline)
P003 FAIL      ALC 0.2 10^3/uL = 200, NK 1000/10000, CD56 90 % -> 18
P004 PASS      ALC 1000, NK 110/1000, CD56 100 % -> 110, few events -> borderline
P005 N_E       only a day-20 sample -> no_sample_in_window
P006 N_E       ALC 'QNS' -> missing_alc
P007 N_E       ALC -300 -> invalid_alc
P008 N_E       NK tube QC FAIL (flow_rate_unstable) -> qc_fail:flow_rate_unstable
P009 PASS      day 13 and day 15 samples (tie, the earlier wins); NK donor = HSCT donor; dose 1e6/kg
P010 N_E       only CD3 chimerism -> missing_chimerism
P011 N_E       nk population not computed (missing_marker:CD56)
P012 FAIL      chimerism from raw STR peaks (CD56 fraction, 4 informative loci, mean 60 %)
P013 N_E       FCS unreadable
"""

from pathlib import Path

HERE = Path(__file__).parent
D0 = "2024-01-01"


def day(n: int) -> str:
    import datetime as dt

    return (dt.date(2024, 1, 1) + dt.timedelta(days=n)).isoformat()


def tsv(name: str, header: list[str], rows: list[list[object]]) -> None:
    lines = ["\t".join(header)] + ["\t".join(str(x) for x in r) for r in rows]
    (HERE / name).write_text("\n".join(lines) + "\n", encoding="utf-8")


# patient -> list of (sample_id, study day, tubes, (live, nk, bright), alc (value, unit))
visits = {
    "P001": [
        ("P001-D07", 7, ["nk", "treg"], (10000, 1000, 600), ("300", "cells/uL")),
        ("P001-D14", 14, ["nk"], (10000, 3800, 1900), ("450", "cells/uL")),
    ],
    "P002": [("P002-D14", 14, ["nk"], (10000, 2000, 1000), ("0.5", "10^9/L"))],
    "P003": [("P003-D14", 14, ["nk"], (10000, 1000, 500), ("0.2", "10^3/uL"))],
    "P004": [("P004-D14", 14, ["nk"], (1000, 110, 55), ("1000", "cells/uL"))],
    "P005": [("P005-D20", 20, ["nk"], (10000, 3000, 1500), ("500", "cells/uL"))],
    "P006": [("P006-D14", 14, ["nk"], (10000, 3000, 1500), ("QNS", "cells/uL"))],
    "P007": [("P007-D14", 14, ["nk"], (10000, 3000, 1500), ("-300", "cells/uL"))],
    "P008": [("P008-D14", 14, ["nk"], (10000, 3000, 1500), ("500", "cells/uL"))],
    "P009": [
        ("P009-D13", 13, ["nk"], (10000, 3000, 1500), ("500", "cells/uL")),
        ("P009-D15", 15, ["nk"], (10000, 1000, 500), ("500", "cells/uL")),
    ],
    "P010": [("P010-D14", 14, ["nk"], (10000, 3000, 1500), ("500", "cells/uL"))],
    "P011": [("P011-D14", 14, ["nk"], (10000, None, None), ("500", "cells/uL"))],
    "P012": [("P012-D14", 14, ["nk"], (5000, 500, 250), ("1000", "cells/uL"))],
    "P013": [("P013-D14", 14, ["nk"], (None, None, None), ("500", "cells/uL"))],
}

samples, counts, qc, cbc = [], [], [], []
for pid, vs in visits.items():
    for sid, d, tubes, (live, nk, br), (alc, unit) in vs:
        cbc.append([pid, day(d), alc, unit])
        for tube in tubes:
            panel = "nk_v1" if tube == "nk" else "treg_v1"
            samples.append([sid, pid, day(d), tube, panel, panel, f"fcs/{sid}_{tube}.fcs", "", ""])
            status, codes = "PASS", []
            if sid == "P008-D14":
                status, codes = "FAIL", [("flow_rate", "FAIL", "flow_rate_unstable")]
            elif sid == "P001-D14":
                status, codes = "WARN", [("fcs_date", "WARN", "date_mismatch")]
            elif sid == "P013-D14":
                status, codes = "FAIL", [("read", "FAIL", "fcs_unreadable")]
            qc.append([sid, tube, status, "events", "PASS", "", "20000", "5000", "enough events"])
            for check, st, code in codes:
                qc.append([sid, tube, status, check, st, code, "", "", f"{code} detected"])
            if sid == "P013-D14":
                for pop, par in [
                    ("singlets", ""),
                    ("lymphocytes", "singlets"),
                    ("live", "lymphocytes"),
                    ("nk", "live"),
                    ("nk_cd56bright", "nk"),
                    ("nk_cd56dim", "nk"),
                ]:
                    counts.append(
                        [
                            sid,
                            tube,
                            pop,
                            par,
                            "",
                            "",
                            "",
                            "",
                            "not_computed",
                            "fcs_unreadable",
                        ]
                    )
                continue
            if tube == "treg":
                for pop, par, ev in [
                    ("singlets", "", 20000),
                    ("lymphocytes", "singlets", 12000),
                    ("live", "lymphocytes", 10000),
                    ("cd3", "live", 6000),
                    ("cd4", "cd3", 2000),
                    ("treg", "cd4", 80),
                    ("treg_ki67", "treg", 20),
                ]:
                    counts.append([sid, tube, pop, par, ev, "", "", "", "ok", ""])
                continue
            rows = [
                ("singlets", "", 20000),
                ("lymphocytes", "singlets", 12000),
                ("live", "lymphocytes", live),
                ("nk", "live", nk),
                ("nk_cd56bright", "nk", br),
                ("nk_cd56dim", "nk", None if nk is None else nk - br),
            ]
            for pop, par, ev in rows:
                if ev is None:
                    counts.append(
                        [sid, tube, pop, par, "", "", "", "", "not_computed", "missing_marker:CD56"]
                    )
                else:
                    counts.append([sid, tube, pop, par, ev, "", "", "", "ok", ""])

tsv(
    "samples.tsv",
    [
        "sample_id",
        "patient_id",
        "collection_date",
        "tube",
        "panel",
        "gating",
        "fcs_file",
        "beads_per_test",
        "sample_volume_ul",
    ],
    samples,
)
tsv(
    "counts.tsv",
    [
        "sample_id",
        "tube",
        "population",
        "parent",
        "events",
        "parent_events",
        "pct_of_parent",
        "pct_of_lymphocytes",
        "status",
        "reason",
    ],
    counts,
)
tsv(
    "qc.tsv",
    [
        "sample_id",
        "tube",
        "tube_status",
        "check",
        "status",
        "reason_code",
        "value",
        "threshold",
        "message",
    ],
    qc,
)
tsv("cbc.tsv", ["patient_id", "date", "alc_value", "alc_unit"], cbc)

inf = []
for pid in visits:
    nk_donor, hsct = f"D{pid[1:]}", f"H{pid[1:]}"
    cells, n = 2.1e8, 3
    if pid == "P009":
        nk_donor = hsct = "D009"
        cells = 7.0e7
    for k in range(n):
        inf.append([pid, k + 1, day(7 * k), f"{cells:.6g}", "70", nk_donor, hsct])
tsv(
    "infusions.tsv",
    [
        "patient_id",
        "infusion_number",
        "infusion_date",
        "cells_infused",
        "body_weight_kg",
        "nk_donor_id",
        "hsct_donor_id",
    ],
    inf,
)

chim = [
    ["P001", day(7), "CD56", "60"],
    ["P001", day(14), "CD56", "72"],
    ["P001", day(14), "PB", "50"],
    ["P002", day(14), "PB", "100"],
    ["P003", day(14), "CD56", "90"],
    ["P004", day(14), "CD56", "100"],
    ["P005", day(20), "CD56", "80"],
    ["P006", day(14), "CD56", "80"],
    ["P007", day(14), "CD56", "80"],
    ["P008", day(14), "CD56", "80"],
    ["P009", day(13), "CD56", "80"],
    ["P009", day(15), "CD56", "80"],
    ["P010", day(14), "CD3", "95"],
    ["P011", day(14), "CD56", "80"],
    ["P013", day(14), "CD56", "80"],
    ["P999", day(14), "CD56", "99"],
]
tsv("chimerism.tsv", ["patient_id", "date", "fraction", "donor_pct"], chim)

tsv(
    "str_samples.tsv",
    ["sample_file", "patient_id", "role", "date", "fraction"],
    [
        ["P012_donor.fsa", "P012", "donor", "2023-06-01", ""],
        ["P012_recipient.fsa", "P012", "recipient", "2023-06-01", ""],
        ["P012_d14_cd56.fsa", "P012", "post", day(14), "CD56"],
    ],
)
peaks = []
# donor / recipient reference genotypes (heights), post areas
ref = {
    "D8S1179": ({"10": 1000, "12": 900, "9": 100}, {"12": 1000, "14": 950}),
    "D21S11": ({"8": 1000, "9": 980}, {"9": 2000}),
    "TH01": ({"11": 2000}, {"11": 1000, "13": 1000}),
    "FGA": ({"15": 1000, "16": 1000}, {"18": 1000, "20": 1000}),
    "VWA": ({"7": 1000, "9": 1000}, {"7": 1000, "9": 1000}),
    "D3S1358": ({"12": 1000, "13": 1000}, {"14": 1000, "15": 1000}),
    "AMEL": ({"X": 1000, "Y": 1000}, {"X": 2000}),
}
post = {
    "D8S1179": {"10": 600, "12": 1000, "14": 400},
    "D21S11": {"8": 620, "9": 1380},
    "TH01": {"11": 1580, "13": 420},
    "FGA": {"15": 300, "16": 300, "18": 200, "20": 200, "OL": 50},
    "VWA": {"7": 1000, "9": 1000},
    "D3S1358": {"12": 500, "13": 500, "14": 500, "15": 500},
    "AMEL": {"X": 1500, "Y": 500},
}
for marker, (don, rec) in ref.items():
    for a, h in don.items():
        peaks.append(["P012_donor.fsa", marker, a, "", h, h * 10])
    for a, h in rec.items():
        peaks.append(["P012_recipient.fsa", marker, a, "", h, h * 10])
    for a, area in post[marker].items():
        peaks.append(["P012_d14_cd56.fsa", marker, a, "", area // 10, area])
tsv("str_peaks.tsv", ["Sample File Name", "Marker", "Allele", "Size", "Height", "Area"], peaks)

tsv(
    "response.tsv",
    ["patient_id", "assessment_date", "criteria", "criteria_version", "category", "mrd_status"],
    [
        ["P001", day(28), "IWG-AML", "2003", "CR", "negative"],
        ["P003", day(28), "IWG-AML", "2003", "resistant_disease", ""],
    ],
)
tsv(
    "adverse_events.tsv",
    ["patient_id", "onset_date", "term", "ctcae_grade", "relation"],
    [
        ["P001", day(1), "Fever", "1", "probable"],
        ["P001", day(2), "Headache", "2", "possible"],
        ["P003", day(3), "Sepsis", "3", "unrelated"],
    ],
)
