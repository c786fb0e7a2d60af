"""Sheet loading and validation: schemas, hostile ids, duplicates, row-level warnings."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from nkflow.clinical import sheets
from nkflow.errors import ConfigError

FIX = Path(__file__).parent / "clinical_fixtures"
SAMPLE_HEADER = "sample_id\tpatient_id\tcollection_date\ttube\tpanel\tgating\tfcs_file\n"
PANELS, GATINGS = ["nk_v1", "treg_v1"], ["nk_v1", "treg_v1"]
VOCAB_PATH = Path(__file__).parents[2] / "config" / "vocab" / "chimerism_fractions.yaml"
FRACTIONS = sheets.load_fraction_vocab(VOCAB_PATH)


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def samples(tmp_path: Path, *rows: str) -> Path:
    return write(tmp_path, "samples.tsv", SAMPLE_HEADER + "".join(r + "\n" for r in rows))


def row(sid="S1", pid="P001", date="2024-01-15", tube="nk", fcs="fcs/S1.fcs"):
    return "\t".join([sid, pid, date, tube, "nk_v1", "nk_v1", fcs])


def test_valid_sample_sheet_resolves_fcs_paths_against_the_sheet(tmp_path):
    p = samples(tmp_path, row(), row(tube="treg", fcs="fcs/S1_treg.fcs"))
    df = sheets.load_samples(p, PANELS, GATINGS)
    assert list(df["row"]) == [1, 2]
    assert df.loc[0, "fcs_path"] == str((tmp_path / "fcs" / "S1.fcs").resolve())
    assert str(df.loc[0, "collection_date"]) == "2024-01-15"
    assert df.loc[0, "beads_per_test"] is None


@pytest.mark.parametrize(
    "bad",
    [
        "S1;rm -rf ~",
        "../S1",
        "S1/..",
        "a/b",
        "S 1",
        'S"1',
        "S'1",
        "S1..x",
        ".S1",
        "S1`id`",
        "S1$(id)",
    ],
)
def test_hostile_sample_id_is_refused_naming_the_row(tmp_path, bad):
    p = samples(tmp_path, row(), row(sid=bad))
    msg = (
        f"samples.tsv: row 2 (sample_id={bad!r}, tube='nk'): column 'sample_id': found {bad!r}; "
        "expected sample id (letters, digits, '.', '_', '-'; starts with a letter or digit; no '..');"
        " fix: rename the sample"
    )
    with pytest.raises(ConfigError, match=re.escape(msg)):
        sheets.load_samples(p, PANELS, GATINGS)


@pytest.mark.parametrize("bad", ["P;1", "P/1", "..", "P 1", "P'1"])
def test_hostile_patient_id_is_refused(tmp_path, bad):
    p = samples(tmp_path, row(pid=bad))
    with pytest.raises(
        ConfigError,
        match=re.escape(f"row 1 (sample_id='S1', tube='nk'): column 'patient_id': found {bad!r}"),
    ):
        sheets.load_samples(p, PANELS, GATINGS)


def test_duplicate_sample_is_refused_naming_both_rows(tmp_path):
    p = samples(tmp_path, row(), row(sid="S2"), row(fcs="other.fcs"))
    msg = (
        "samples.tsv: rows 1 and 3: duplicate key (sample_id='S1', tube='nk') in columns "
        "sample_id, tube; expected each key once"
    )
    with pytest.raises(ConfigError, match=re.escape(msg)):
        sheets.load_samples(p, PANELS, GATINGS)


def test_unknown_panel_lists_known_ones(tmp_path):
    p = samples(tmp_path, row().replace("nk_v1\tnk_v1", "nk_v9\tnk_v1"))
    with pytest.raises(
        ConfigError, match=r"column 'panel': found 'nk_v9'; expected one of nk_v1, treg_v1"
    ):
        sheets.load_samples(p, PANELS, GATINGS)


def test_impossible_date_and_bad_tube(tmp_path):
    with pytest.raises(
        ConfigError,
        match=r"row 1 \(sample_id='S1', tube='nk'\): column 'collection_date': found '2024-02-30'; expected a real calendar date",
    ):
        sheets.load_samples(samples(tmp_path, row(date="2024-02-30")), PANELS, GATINGS)
    with pytest.raises(
        ConfigError,
        match=r"column 'tube': found 'NK'; expected tube role: nk or treg \(one FCS file holding "
        r"several stains lists them: nk;treg\); allowed: nk, treg; fix:",
    ):
        sheets.load_samples(samples(tmp_path, row(tube="NK")), PANELS, GATINGS)


def test_tubes_of_one_sample_must_agree_on_patient(tmp_path):
    p = samples(tmp_path, row(), row(pid="P002", tube="treg"))
    with pytest.raises(
        ConfigError,
        match=r"rows 1 and 2 \(sample_id='S1'\): column 'patient_id': found 'P001' and 'P002'",
    ):
        sheets.load_samples(p, PANELS, GATINGS)


def test_missing_column_is_named(tmp_path):
    p = write(tmp_path, "samples.tsv", "sample_id\tpatient_id\nS1\tP1\n")
    with pytest.raises(
        ConfigError,
        match=r"header: required column\(s\) collection_date, tube, panel, gating, fcs_file missing",
    ):
        sheets.load_samples(p, PANELS, GATINGS)


def test_infusions_cells_per_kg(tmp_path):
    p = write(
        tmp_path,
        "infusions.tsv",
        "patient_id\tinfusion_number\tinfusion_date\tcells_infused\tbody_weight_kg\tnk_donor_id\thsct_donor_id\n"
        "P1\t1\t2024-01-01\t1.4e8\t70\tD1\tH1\nP1\t2\t2024-01-08\t3.5e8\t70\tD1\tH1\n",
    )
    df, warnings = sheets.load_infusions(p)
    assert list(df["cells_per_kg"]) == [pytest.approx(2.0e6), pytest.approx(5.0e6)]
    assert warnings == []


CBC_HEADER = "patient_id\tdate\talc_value\talc_unit\n"


def test_cbc_qns_empty_negative_are_kept_flagged_never_zero(tmp_path):
    p = write(
        tmp_path,
        "cbc.tsv",
        CBC_HEADER + "P1\t2024-01-15\t0.45\t10^9/L\nP2\t2024-01-15\tQNS\tcells/uL\n"
        "P3\t2024-01-15\t\tcells/uL\nP4\t2024-01-15\t-300\tcells/uL\nP9\t2024-01-15\t5\tcells/uL\n",
    )
    df, warnings = sheets.load_cbc(p, ["P1", "P2", "P3", "P4"])
    assert list(df["patient_id"]) == ["P1", "P2", "P3", "P4"]
    assert list(df["alc_status"]) == ["ok", "missing", "missing", "invalid"]
    assert df.loc[0, "alc_per_ul"] == pytest.approx(450.0)
    assert [v is None for v in df["alc_per_ul"][1:]] == [True, True, True]
    assert list(df["alc_source_value"]) == ["0.45", "QNS", "", "-300"]
    assert warnings[0].endswith(
        "cbc.tsv: row 5 (patient_id='P9', date='2024-01-15'): unknown_patient: patient is not in "
        "infusions.tsv; row ignored (no fuzzy matching); fix: correct the patient id or add the "
        "patient's infusions"
    )
    assert (
        "row 2 (patient_id='P2', date='2024-01-15'): column 'alc_value': found 'QNS'; missing_alc"
        in warnings[1]
    )
    assert (
        "row 3 (patient_id='P3', date='2024-01-15'): column 'alc_value': found ''; missing_alc"
        in warnings[2]
    )
    assert (
        "row 4 (patient_id='P4', date='2024-01-15'): column 'alc_value': found '-300'; invalid_alc"
        in warnings[3]
    )


def test_cbc_unknown_unit_lists_allowed(tmp_path):
    p = write(tmp_path, "cbc.tsv", CBC_HEADER + "P1\t2024-01-15\t450\tmm3\n")
    with pytest.raises(
        ConfigError,
        match=r"row 1 \(patient_id='P1', date='2024-01-15'\): column 'alc_unit': found 'mm3'; expected unit of alc_value.*allowed: cells/uL, /uL",
    ):
        sheets.load_cbc(p)


def test_cbc_duplicate_day_refused(tmp_path):
    p = write(
        tmp_path,
        "cbc.tsv",
        CBC_HEADER + "P1\t2024-01-15\t450\tcells/uL\nP1\t2024-01-15\t500\tcells/uL\n",
    )
    with pytest.raises(
        ConfigError, match=r"rows 1 and 2: duplicate key \(patient_id='P1', date='2024-01-15'\)"
    ):
        sheets.load_cbc(p)


def test_chimerism_unknown_patient_ignored_and_out_of_range_invalid(tmp_path):
    p = write(
        tmp_path,
        "chimerism.tsv",
        "patient_id\tdate\tfraction\tdonor_pct\nP1\t2024-01-15\tCD56\t72\nP1\t2024-01-15\tPB\t120\n"
        "PX\t2024-01-15\tCD56\t50\n",
    )
    df, warnings = sheets.load_chimerism(p, ["P1"], fractions=FRACTIONS)
    assert list(df["chimerism_status"]) == ["ok", "invalid"]
    assert df.loc[1, "donor_pct_value"] is None
    assert (
        "row 3 (patient_id='PX', date='2024-01-15', fraction='CD56'): unknown_patient"
        in warnings[0]
    )
    assert (
        "row 2 (patient_id='P1', date='2024-01-15', fraction='PB'): column 'donor_pct': found '120'; invalid_chimerism"
        in warnings[1]
    )


RESP_HEADER = "patient_id\tassessment_date\tcriteria\tcriteria_version\tcategory\tmrd_status\n"
VOCAB = Path(__file__).parents[2] / "config" / "vocab" / "response_categories.yaml"


def test_response_unknown_category_lists_allowed(tmp_path):
    p = write(
        tmp_path,
        "response.tsv",
        RESP_HEADER
        + "P1\t2024-02-01\tIWG-AML\t2003\tCR\tnegative\nP1\t2024-03-01\tIWG-AML\t2003\tsCR\t\n",
    )
    msg = (
        "row 2 (patient_id='P1', assessment_date='2024-03-01'): column 'category': found 'sCR'; "
        "expected one of IWG-AML 2003: CR, CRi, CRp, MLFS, PR, resistant_disease, relapse"
    )
    with pytest.raises(ConfigError, match=re.escape(msg)):
        sheets.load_response(p, VOCAB)


def test_response_unknown_version_and_valid_load(tmp_path):
    p = write(tmp_path, "response.tsv", RESP_HEADER + "P1\t2024-02-01\tIWG-AML\t2099\tCR\t\n")
    with pytest.raises(
        ConfigError, match=r"found 'IWG-AML' '2099'; expected one of: BBMT-ALL 2010, ELN-AML 2017"
    ):
        sheets.load_response(p, VOCAB)
    p = write(
        tmp_path, "response.tsv", RESP_HEADER + "P1\t2024-02-01\tBBMT-ALL\t2010\tCRi\tpositive\n"
    )
    df, _ = sheets.load_response(p, VOCAB)
    assert (df.loc[0, "category"], df.loc[0, "mrd_status"]) == ("CRi", "positive")


def test_adverse_event_grade_enum(tmp_path):
    p = write(
        tmp_path,
        "ae.tsv",
        "patient_id\tonset_date\tterm\tctcae_grade\trelation\nP1\t2024-01-02\tFever\t6\tpossible\n",
    )
    with pytest.raises(
        ConfigError,
        match=r"column 'ctcae_grade': found '6'; expected CTCAE grade 1-5; allowed: 1, 2, 3, 4, 5",
    ):
        sheets.load_adverse_events(p)


def test_str_peak_file_missing_from_mapping(tmp_path):
    shutil.copy(FIX / "str_samples.tsv", tmp_path)
    text = (FIX / "str_peaks.tsv").read_text() + "mystery.fsa\tTH01\t9\t\t100\t1000\n"
    p = write(tmp_path, "str_peaks.tsv", text)
    with pytest.raises(
        ConfigError,
        match=r"column 'Sample File Name': found 'mystery.fsa'; expected a file listed in",
    ):
        sheets.load_str_peaks(p, tmp_path / "str_samples.tsv", fractions=FRACTIONS)


def fixture_copy(tmp_path: Path) -> tuple[dict, Path]:
    d = tmp_path / "cohort"
    shutil.copytree(FIX, d)
    return yaml.safe_load((d / "config.yaml").read_text()), d


def test_validate_all_on_the_fixture_cohort_reports_row_warnings(tmp_path):
    cfg, d = fixture_copy(tmp_path)
    warnings = sheets.validate_all(cfg, d)
    kinds = [Path(w.split(": ")[0]).name for w in warnings if "fcs_file" not in w]
    assert kinds == ["cbc.tsv", "cbc.tsv", "chimerism.tsv"]
    assert sum("not found" in w for w in warnings) == 16


def test_validate_all_sample_patient_must_have_infusions(tmp_path):
    cfg, d = fixture_copy(tmp_path)
    text = (d / "samples.tsv").read_text().replace("P013-D14\tP013", "P013-D14\tP014")
    (d / "samples.tsv").write_text(text)
    with pytest.raises(
        ConfigError,
        match=r"row 16 \(sample_id='P013-D14', tube='nk'\): column 'patient_id': found 'P014'; expected a patient listed in",
    ):
        sheets.validate_all(cfg, d)


@pytest.mark.parametrize("bad", ["P001-D14;touch pwned", "../P001-D14", "P001 D14", "P001'D14"])
def test_hostile_id_never_reaches_a_command(tmp_path, monkeypatch, bad):
    """Validation refuses the row before anything could run: no process is started at all."""
    cfg, d = fixture_copy(tmp_path)
    text = (d / "samples.tsv").read_text().replace("P001-D14\t", f"{bad}\t", 1)
    (d / "samples.tsv").write_text(text)

    def forbidden(*a, **k):
        raise AssertionError(f"a command was started: {a!r}")

    monkeypatch.setattr(subprocess, "Popen", forbidden)
    monkeypatch.setattr("os.system", forbidden)
    monkeypatch.setattr("os.execvp", forbidden)
    with pytest.raises(
        ConfigError, match=re.escape(f"row 3 (sample_id={bad!r}, tube='nk'): column 'sample_id'")
    ):
        sheets.validate_all(cfg, d)
    assert not (d / "pwned").exists()


@pytest.mark.workflow
def test_hostile_id_stops_snakemake_before_any_job(tmp_path):
    """A real (not dry) Snakemake run on a sheet with an injected id fails while the workflow is
    parsed: the error names the row, and the injected command never ran."""
    import os
    import sys

    repo = Path(__file__).parents[2]
    cfg = yaml.safe_load((repo / "config" / "config.yaml").read_text())
    for name, rel in cfg["sheets"].items():
        shutil.copy(repo / rel, tmp_path / Path(rel).name)
        cfg["sheets"][name] = str(tmp_path / Path(rel).name)
    for block in ("panels", "gating"):
        cfg[block] = {k: str(repo / v) for k, v in cfg[block].items()}
    cfg["results"] = str(tmp_path / "results")
    bad = "P01-D07;touch${IFS}" + str(tmp_path / "pwned")
    sheet = tmp_path / "samples.tsv"
    sheet.write_text(sheet.read_text().replace("P01-D07\t", bad + "\t", 1))
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    snakemake = Path(sys.executable).with_name("snakemake")
    proc = subprocess.run(
        [str(snakemake), "-s", str(repo / "Snakefile"), "--configfile", str(tmp_path / "config.yaml"),
         "--cores", "1", "--directory", str(repo)],
        capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONHASHSEED": "0"},
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert f"row 3 (sample_id={bad!r}, tube='nk'): column 'sample_id'" in out
    assert not (tmp_path / "pwned").exists()
    assert not (tmp_path / "results").exists()


def test_spreadsheet_export_with_bom_and_crlf_loads(tmp_path):
    p = tmp_path / "samples.tsv"
    p.write_bytes(("\ufeff" + SAMPLE_HEADER + row() + "\n").replace("\n", "\r\n").encode("utf-8"))
    df = sheets.load_samples(p, PANELS, GATINGS)
    assert (list(df.columns[:2]), df.loc[0, "fcs_file"]) == (["row", "sample_id"], "fcs/S1.fcs")


# --- chimerism fraction vocabulary: aliases canonicalised, unknown spellings refused

CHIM_HEADER = "patient_id\tdate\tfraction\tdonor_pct\n"


def test_fraction_aliases_are_canonical_and_the_spelling_is_kept(tmp_path):
    p = write(
        tmp_path,
        "chimerism.tsv",
        CHIM_HEADER + "P1\t2024-01-15\tCD56+\t72\nP1\t2024-01-15\t whole  BLOOD\t60\n"
        "P1\t2024-01-16\tcd56 sorted\t70\nP1\t2024-01-17\tT cells\t40\nP1\t2024-01-18\tPBMC\t65\n",
    )
    df, warnings = sheets.load_chimerism(p, ["P1"], fractions=FRACTIONS)
    assert list(df["fraction"]) == ["CD56", "PB", "CD56", "CD3", "PBMC"]
    assert list(df["fraction_as_written"]) == [
        "CD56+",
        " whole  BLOOD",
        "cd56 sorted",
        "T cells",
        "PBMC",
    ]
    assert warnings == []


@pytest.mark.parametrize(
    ("spelling", "canonical"),
    [
        ("CD56+", "CD56"),
        ("CD56 sorted", "CD56"),
        ("NK", "CD56"),
        ("CD3+", "CD3"),
        ("T cells", "CD3"),
        ("CD33+", "CD33"),
        ("myeloid", "CD33"),
        ("PB", "PB"),
        ("whole blood", "PB"),
        ("PBMC", "PBMC"),
        ("BM", "BM"),
    ],
)
def test_default_vocabulary_covers_the_spellings_labs_use(spelling, canonical):
    assert FRACTIONS.canonical(spelling) == canonical
    assert FRACTIONS.canonical(spelling.lower()) == canonical


def test_negative_fraction_is_not_an_alias():
    assert FRACTIONS.canonical("CD56-") is None


def test_unknown_fraction_is_refused_naming_rows_value_and_allowed_names(tmp_path):
    p = write(
        tmp_path,
        "chimerism.tsv",
        CHIM_HEADER + "P1\t2024-01-15\tPB\t72\nP1\t2024-01-15\tCD65\t60\nP2\t2024-01-16\tCD65\t50\n"
        "P2\t2024-01-16\tgranulocytes\t50\n",
    )
    msg = (
        f"{p}: column 'fraction': found 'CD65' in 2 row(s): row 2 (patient_id='P1', "
        "date='2024-01-15', fraction='CD65'), row 3 (patient_id='P2', date='2024-01-16', "
        "fraction='CD65'); found 'granulocytes' in 1 row(s): row 4 (patient_id='P2', "
        f"date='2024-01-16', fraction='granulocytes'); expected a fraction of {VOCAB_PATH} "
        "(case and whitespace ignored): PB (aliases whole blood, peripheral blood, unseparated "
        "blood), PBMC (aliases mononuclear cells), BM (aliases bone marrow), CD56 (aliases "
        "CD56+, CD56 sorted, NK, NK cells, CD3-CD56+), CD3 (aliases CD3+, CD3 sorted, T cells), "
        "CD33 (aliases CD33+, CD33 sorted, myeloid), CD19 (aliases CD19+, CD19 sorted, B cells), "
        "CD34 (aliases CD34+, CD34 sorted); fix: correct the cell, or add the lab's spelling as "
        "an alias of the fraction it means in that file (named by endpoints.chimerism_fractions "
        "in config.yaml)"
    )
    with pytest.raises(ConfigError) as exc:
        sheets.load_chimerism(p, fractions=FRACTIONS)
    assert str(exc.value) == msg


def test_alias_and_canonical_on_one_date_are_a_duplicate(tmp_path):
    p = write(
        tmp_path,
        "chimerism.tsv",
        CHIM_HEADER + "P1\t2024-01-15\tCD56\t72\nP1\t2024-01-15\tNK\t70\n",
    )
    with pytest.raises(
        ConfigError,
        match=re.escape(
            "rows 1 and 2: duplicate key (patient_id='P1', date='2024-01-15', fraction='CD56')"
        ),
    ):
        sheets.load_chimerism(p, fractions=FRACTIONS)


def test_str_samples_fraction_goes_through_the_vocabulary(tmp_path):
    shutil.copy(FIX / "str_peaks.tsv", tmp_path)
    text = (FIX / "str_samples.tsv").read_text().replace("\tCD56\n", "\tCD56 sorted\n", 1)
    (tmp_path / "str_samples.tsv").write_text(text)
    peaks, _ = sheets.load_str_peaks(
        tmp_path / "str_peaks.tsv", tmp_path / "str_samples.tsv", fractions=FRACTIONS
    )
    post = peaks[peaks["role"] == "post"]
    assert set(post["fraction"]) <= set(FRACTIONS.names)
    assert "CD56" in set(post["fraction"])
    (tmp_path / "str_samples.tsv").write_text(text.replace("\tCD56 sorted\n", "\tNK-ish\n", 1))
    with pytest.raises(
        ConfigError,
        match=r"str_samples.tsv: column 'fraction': found 'NK-ish' in 1 row\(s\): row 3 "
        r"\(sample_file='P012_d14_cd56.fsa'\); expected a fraction of",
    ):
        sheets.load_str_peaks(
            tmp_path / "str_peaks.tsv", tmp_path / "str_samples.tsv", fractions=FRACTIONS
        )


def test_vocabulary_spelling_under_two_fractions_is_refused(tmp_path):
    vp = write(
        tmp_path,
        "fr.yaml",
        "fractions:\n  PB: {description: blood, aliases: [whole blood]}\n"
        "  PBMC: {description: mononuclear, aliases: [Whole Blood]}\n",
    )
    with pytest.raises(
        ConfigError,
        match=re.escape(
            f"{vp}: field 'fractions.PBMC.aliases': spelling 'Whole Blood' already stands for "
            "fraction 'PB' (matching ignores case and whitespace)"
        ),
    ):
        sheets.load_fraction_vocab(vp)


def test_vocabulary_schema_errors_name_the_field(tmp_path):
    vp = write(tmp_path, "fr.yaml", "fractions:\n  CD56: {aliases: [CD56+]}\n")
    with pytest.raises(
        ConfigError, match=r"fr.yaml: field 'fractions.CD56': required key\(s\) description missing"
    ):
        sheets.load_fraction_vocab(vp)
    with pytest.raises(ConfigError, match=r"nope.yaml: chimerism fraction vocabulary not found"):
        sheets.load_fraction_vocab(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    ("pref", "msg"),
    [
        (
            ["CD65", "PB"],
            "config: field 'endpoints.chimerism_preference[0]': found 'CD65'; expected a fraction "
            f"of {VOCAB_PATH}: PB, PBMC, BM, CD56, CD3, CD33, CD19, CD34; fix: use one of these "
            "names, or add the fraction to the vocabulary",
        ),
        (
            ["CD56", "whole blood"],
            "config: field 'endpoints.chimerism_preference[1]': found 'whole blood', an alias of "
            f"'PB' in {VOCAB_PATH}; expected a canonical fraction name; fix: write PB",
        ),
    ],
)
def test_preference_must_name_canonical_fractions(pref, msg):
    with pytest.raises(ConfigError) as exc:
        sheets.check_preference(pref, FRACTIONS)
    assert str(exc.value) == msg


def test_unknown_preference_in_config_stops_validate_all(tmp_path):
    cfg, d = fixture_copy(tmp_path)
    cfg["endpoints"]["chimerism_preference"] = ["CD56+", "PB"]
    with pytest.raises(
        ConfigError, match=r"'endpoints.chimerism_preference\[0\]': found 'CD56\+', an alias"
    ):
        sheets.validate_all(cfg, d)


def test_preferred_fraction_that_never_occurs_is_a_warning(tmp_path):
    cfg, d = fixture_copy(tmp_path)
    cfg["endpoints"]["chimerism_preference"] = ["CD33", "CD56", "PB"]
    warnings = sheets.validate_all(cfg, d)
    msg = (
        f"{d / 'chimerism.tsv'} and {d / 'str_samples.tsv'}: column 'fraction': preferred "
        "fraction 'CD33' (endpoints.chimerism_preference) never occurs; fractions found: CD3, "
        "CD56, PB; visits use CD56 instead; fix: if the lab names CD33 differently, add that "
        "spelling as an alias of CD33 in the fraction vocabulary (endpoints.chimerism_fractions), "
        "otherwise remove CD33 from endpoints.chimerism_preference"
    )
    assert msg in warnings
    assert sum("never occurs" in w for w in warnings) == 1


def test_preference_warning_when_no_preferred_fraction_occurs():
    got = sheets.preference_warnings(["CD56"], {"PB": {"PB", "whole blood"}}, "chim.tsv")
    assert got == [
        "chim.tsv: column 'fraction': preferred fraction 'CD56' (endpoints.chimerism_preference) "
        "never occurs; fractions found: PB (as PB, whole blood); no visit has chimerism; fix: if "
        "the lab names CD56 differently, add that spelling as an alias of CD56 in the fraction "
        "vocabulary (endpoints.chimerism_fractions), otherwise remove CD56 from "
        "endpoints.chimerism_preference"
    ]


# --- audit: values nkflow cannot use are named, never silently replaced


def test_unknown_gate_tree_name_lists_known_ones(tmp_path):
    p = samples(tmp_path, row().replace("nk_v1\tnk_v1", "nk_v1\tnk_v9"))
    with pytest.raises(
        ConfigError,
        match=r"row 1 \(sample_id='S1', tube='nk'\): column 'gating': found 'nk_v9'; expected "
        r"one of nk_v1, treg_v1; fix: use a name defined under 'gating:'",
    ):
        sheets.load_samples(p, PANELS, GATINGS)


def test_response_category_is_case_sensitive_never_guessed(tmp_path):
    p = write(tmp_path, "response.tsv", RESP_HEADER + "P1\t2024-02-01\tIWG-AML\t2003\tcr\t\n")
    with pytest.raises(ConfigError, match=r"column 'category': found 'cr'; expected one of"):
        sheets.load_response(p, VOCAB)
    p = write(tmp_path, "response.tsv", RESP_HEADER + "P1\t2024-02-01\tIWG-AML\t2003\tCR\tneg\n")
    with pytest.raises(ConfigError, match=r"column 'mrd_status': found 'neg'; expected"):
        sheets.load_response(p, VOCAB)


@pytest.mark.parametrize("unit", ["cells/mm3", "10^6/L", "x10e3"])
def test_unknown_alc_unit_is_refused_with_the_row(tmp_path, unit):
    p = write(tmp_path, "cbc.tsv", CBC_HEADER + f"P1\t2024-01-15\t450\t{unit}\n")
    with pytest.raises(
        ConfigError,
        match=re.escape(
            f"row 1 (patient_id='P1', date='2024-01-15'): column 'alc_unit': found {unit!r}"
        ),
    ):
        sheets.load_cbc(p)


def test_columns_nkflow_does_not_read_are_warned(tmp_path):
    cfg, d = fixture_copy(tmp_path)
    for name, col, val in (
        ("samples.tsv", "cytometer", "LSRFortessa"),
        ("chimerism.tsv", "method", "qPCR"),
    ):
        lines = (d / name).read_text().splitlines()
        lines = [lines[0] + f"\t{col}"] + [ln + f"\t{val}" for ln in lines[1:]]
        (d / name).write_text("\n".join(lines) + "\n")
    warnings = [w for w in sheets.validate_all(cfg, d) if "is not read by nkflow" in w]
    n_samples = len((d / "samples.tsv").read_text().splitlines()) - 1
    assert warnings[0].startswith(
        f"{d / 'samples.tsv'}: header: column 'cytometer' is not read by nkflow; its value in all "
        f"{n_samples} row(s) is ignored; the instrument is taken from each FCS file's $CYT keyword"
    )
    assert warnings[1].startswith(
        f"{d / 'chimerism.tsv'}: header: column 'method' is not read by nkflow; its value in all "
        "16 row(s) is ignored; every row is read as a % donor result whatever its method"
    )
    assert warnings[1].endswith(
        "columns read: date, donor_pct, fraction, patient_id; fix: remove the column, rename it, "
        "or map it with sheet_format.chimerism.columns if it was meant to be one of those"
    )
    assert len(warnings) == 2
