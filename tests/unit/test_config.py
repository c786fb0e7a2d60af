"""Configuration validation: errors name the file, the field, what was found and expected."""

import json
import shutil
from pathlib import Path

import pytest
import yaml

from nkflow.config import (
    Study,
    config_digest,
    load_config,
    load_study,
    validate_config,
    validate_inputs,
    write_resolved,
)
from nkflow.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def _base() -> dict:
    return yaml.safe_load((ROOT / "config/config.yaml").read_text())


def test_shipped_config_is_valid_and_gets_defaults():
    cfg = load_config(ROOT / "config/config.yaml")
    assert cfg["results"] == "results"
    assert cfg["sheets"]["samples"] == "data/sample/samples.tsv"


def test_unknown_top_level_key_lists_allowed_keys():
    data = _base() | {"sheet": {}}
    with pytest.raises(
        ConfigError,
        match=r"config.yaml: field '\(top level\)': Additional properties .*'sheet'.*allowed keys: .*sheets",
    ):
        validate_config(data, source="my/config.yaml")


def test_wrong_type_names_field_found_and_expected():
    data = _base()
    data["panels"]["nk_v1"] = 7
    with pytest.raises(ConfigError, match=r"my.yaml: field 'panels.nk_v1': found 7; expected text"):
        validate_config(data, source="my.yaml")


def test_missing_required_sheet():
    data = _base()
    del data["sheets"]["cbc"]
    with pytest.raises(
        ConfigError, match=r"field 'sheets': required key\(s\) cbc missing; found keys "
    ):
        validate_config(data, source="c.yaml")


def test_digest_ignores_key_order():
    assert config_digest({"a": 1, "b": [1, 2]}) == config_digest({"b": [1, 2], "a": 1})
    assert config_digest({"a": 1}) != config_digest({"a": 2})


def _copy_project(tmp_path: Path) -> Path:
    for sub in ("config", "data/sample"):
        shutil.copytree(ROOT / sub, tmp_path / sub)
    return tmp_path


def test_missing_panel_file_is_named(tmp_path):
    base = _copy_project(tmp_path)
    cfg = validate_config(_base(), source="config.yaml")
    cfg["panels"]["nk_v1"] = "config/panels/nope.yaml"
    with pytest.raises(
        ConfigError, match=r"panels 'nk_v1': file 'config/panels/nope.yaml' not found"
    ):
        validate_inputs(Study(cfg, base))


def test_unknown_panel_in_sample_sheet_is_named_with_row(tmp_path):
    base = _copy_project(tmp_path)
    sheet = base / "data/sample/samples.tsv"
    lines = sheet.read_text().splitlines()
    header = lines[0].split("\t")
    first = lines[1].split("\t")
    first[header.index("panel")] = "nk_v2"
    lines[1] = "\t".join(first)
    sheet.write_text("\n".join(lines) + "\n")
    cfg = validate_config(_base(), source="config.yaml")
    with pytest.raises(ConfigError, match=r"samples.tsv.*row 1.*panel.*'nk_v2'.*nk_v1, treg_v1"):
        validate_inputs(Study(cfg, base))


def test_yaml_syntax_error_names_the_file(tmp_path):
    bad = tmp_path / "config.yaml"
    bad.write_text("sheets: [unclosed\n")
    with pytest.raises(ConfigError, match=r"config.yaml: not valid YAML"):
        load_config(bad)


def test_a_config_that_is_not_a_mapping(tmp_path):
    with pytest.raises(ConfigError, match=r"my.yaml: expected a mapping of settings .* found list"):
        validate_config(["sheets"], source="my.yaml")


def test_spillover_for_an_unknown_panel(tmp_path):
    base = _copy_project(tmp_path)
    cfg = validate_config(_base(), source="config.yaml")
    cfg["spillover"] = {"nk_v9": "config/config.yaml"}
    with pytest.raises(
        ConfigError, match=r"spillover 'nk_v9': no panel of that name; known panels: nk_v1, treg_v1"
    ):
        validate_inputs(Study(cfg, base))


def test_gate_tree_marker_missing_from_the_panel(tmp_path):
    base = _copy_project(tmp_path)
    panel = base / "config/panels/nk_v1.yaml"
    doc = yaml.safe_load(panel.read_text())
    del doc["markers"]["CD16"]
    doc["required"] = [m for m in doc.get("required", []) if m != "CD16"]
    panel.write_text(yaml.safe_dump(doc, sort_keys=False))
    cfg = validate_config(_base(), source="config.yaml")
    with pytest.raises(
        ConfigError,
        match=r"gate tree 'nk_v1' uses marker\(s\) CD16 that panel 'nk_v1' does not declare",
    ):
        validate_inputs(Study(cfg, base))


def test_configured_tube_name_the_sheet_cannot_have_is_refused(tmp_path):
    base = _copy_project(tmp_path)
    raw = _base()
    raw["endpoints"]["tubes"] = {"nk": "NK1", "treg": "treg"}
    cfg = validate_config(raw, source="config.yaml")
    with pytest.raises(ConfigError) as exc:
        validate_inputs(Study(cfg, base))
    assert str(exc.value) == (
        "config: field 'endpoints.tubes.nk': found 'NK1'; expected a tube name the sample sheet "
        "allows: nk, treg; fix: use one of those"
    )


def test_configured_population_missing_from_the_gate_tree_is_refused(tmp_path):
    """A misspelt subset left its column empty with no reason; now it stops validation."""
    base = _copy_project(tmp_path)
    raw = _base()
    raw["endpoints"]["populations"]["nk_cd56bright"] = "cd56bright"
    cfg = validate_config(raw, source="config.yaml")
    with pytest.raises(
        ConfigError,
        match=r"field 'endpoints.populations.nk_cd56bright': found 'cd56bright', which gate tree "
        r"'nk_v1' \(nk tube, e.g. sample P01-D00\) does not define; expected one of its "
        r"populations: singlets, viable_singlets, lymphocytes, live, nk, nk_cd56bright",
    ):
        validate_inputs(Study(cfg, base))


def test_unknown_chimerism_fraction_stops_validate_inputs(tmp_path):
    base = _copy_project(tmp_path)
    sheet = base / "data/sample/chimerism.tsv"
    sheet.write_text(sheet.read_text().replace("\tCD56\t", "\tCD65\t", 1))
    cfg = validate_config(_base(), source="config.yaml")
    with pytest.raises(
        ConfigError,
        match=r"chimerism.tsv: column 'fraction': found 'CD65' in 1 row\(s\): row 2 "
        r"\(patient_id='P01', date='2025-03-10', fraction='CD65'\); expected a fraction of "
        r".*config/vocab/chimerism_fractions.yaml",
    ):
        validate_inputs(Study(cfg, base))


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        (
            {"nk_v2": [{"cytometer": "LSRFortessa", "tree": "config/gating/nk_v1.yaml"}]},
            r"field 'gating_by_instrument.nk_v2': no gate tree of that name under 'gating:'; "
            r"known: nk_v1, treg_v1",
        ),
        (
            {"nk_v1": [{"cytometer": "LSRFortessa", "tree": "config/gating/nope.yaml"}]},
            r"gating_by_instrument 'gating_by_instrument.nk_v1\[0\]': file "
            r"'config/gating/nope.yaml' not found",
        ),
        (
            {"nk_v1": [{"cytometer": "LSRFortessa", "tree": "config/gating/treg_v1.yaml"}]},
            r"field 'gating_by_instrument.nk_v1\[0\]': tree config/gating/treg_v1.yaml lacks "
            r"population\(s\) cd3neg, cd3neg_cd16pos, nk, nk_cd56bright, nk_cd56dim, nkt_like of 'nk_v1'",
        ),
    ],
)
def test_gating_by_instrument_names_a_known_tree_with_the_same_populations(
    tmp_path, entries, message
):
    base = _copy_project(tmp_path)
    cfg = validate_config({**_base(), "gating_by_instrument": entries}, source="config.yaml")
    with pytest.raises(ConfigError, match=message):
        validate_inputs(Study(cfg, base))


def test_gating_by_instrument_entries_are_schema_checked():
    bad = {**_base(), "gating_by_instrument": {"nk_v1": [{"cyt": "X", "tree": "t.yaml"}]}}
    with pytest.raises(ConfigError, match=r"field 'gating_by_instrument.nk_v1.0'"):
        validate_config(bad, source="config.yaml")


def _with_fmo(base: Path, value: str) -> None:
    sheet = base / "data/sample/samples.tsv"
    lines = sheet.read_text().splitlines()
    rows = [lines[0] + "\tfmo"] + [
        line + ("\t" + value if line.startswith("P01-D14\tP01\t2025-03-17\ttreg") else "\t")
        for line in lines[1:]
    ]
    sheet.write_text("\n".join(rows) + "\n")


def test_an_fmo_tube_for_a_marker_the_tree_does_not_set_from_fmo_is_an_error(tmp_path):
    base = _copy_project(tmp_path)
    lines = (base / "data/sample/samples.tsv").read_text().splitlines()
    assert any(line.startswith("P01-D14\tP01\t2025-03-17\ttreg") for line in lines)
    _with_fmo(base, "CD25=fcs/P01-D14_treg.fcs")
    cfg = validate_config(_base(), source="config.yaml")
    with pytest.raises(
        ConfigError,
        match=r"sample P01-D14 tube treg: column 'fmo': found an FMO tube for 'CD25'; expected a "
        r"marker whose boundary gate tree 'treg_v1' sets from an FMO tube \(fmo_percentile\): "
        r"FoxP3, Ki-67; fix:",
    ):
        validate_inputs(Study(cfg, base))


def test_a_missing_fmo_file_is_a_warning_naming_the_row(tmp_path):
    base = _copy_project(tmp_path)
    _with_fmo(base, "FoxP3=fcs/nope.fcs")
    cfg = validate_config(_base(), source="config.yaml")
    warnings = validate_inputs(Study(cfg, base))
    hits = [w for w in warnings if "column 'fmo'" in w]
    assert len(hits) == 1 and "FoxP3 FMO file" in hits[0] and "nope.fcs not found" in hits[0]
    assert "(sample_id='P01-D14', tube='treg')" in hits[0]


def test_validated_config_is_read_as_written_without_revalidating(tmp_path):
    cfg = validate_config(_base(), source="config.yaml")
    path = tmp_path / "validated" / "config.json"
    write_resolved(cfg, [], path)
    assert load_study(validated=path).config == cfg


def test_validated_config_missing_or_not_from_nkflow_validate_is_refused(tmp_path):
    missing = tmp_path / "validated" / "config.json"
    with pytest.raises(ConfigError, match=r"config.json: validated configuration not found"):
        load_study(validated=missing)
    truncated = tmp_path / "truncated.json"
    truncated.write_text('{"config": {')
    with pytest.raises(
        ConfigError, match=r"truncated.json: cannot be read as JSON .*fix: run `nkflow validate"
    ):
        load_study(validated=truncated)
    hand = tmp_path / "hand.json"
    hand.write_text(json.dumps(_base()))
    with pytest.raises(ConfigError, match=r"hand.json: not written by `nkflow validate`"):
        load_study(validated=hand)
    cfg = validate_config(_base(), source="config.yaml")
    edited = tmp_path / "edited.json"
    write_resolved(cfg, [], edited)
    doc = json.loads(edited.read_text())
    doc["config"]["results"] = "elsewhere"
    edited.write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match=r"edited.json: config_sha256 .* changed after"):
        load_study(validated=edited)


def test_validation_reads_the_sample_sheet_once(tmp_path, monkeypatch):
    from nkflow.clinical import sheets

    calls = []
    real = sheets.load_samples
    monkeypatch.setattr(sheets, "load_samples", lambda *a, **k: calls.append(1) or real(*a, **k))
    study = load_study(config=ROOT / "config/config.yaml", base_dir=ROOT)
    monkeypatch.chdir(ROOT)
    validate_inputs(study)
    assert study.samples is study.samples
    assert len(study.visit_inputs.samples) == len(study.samples)
    assert calls == [1]


@pytest.mark.parametrize(
    ("block", "path", "old", "new"),
    [
        ("endpoints", (), "lymphocyte_population", "denominator_population"),
        ("qc", ("floors",), "lymphocyte_population", "lymphocyte_floor_population"),
    ],
)
def test_a_renamed_setting_names_its_new_name(block, path, old, new):
    data = _base()
    where = data[block]
    for key in path:
        where = where[key]
    where[old] = where.pop(new)
    dotted = ".".join((block, *path))
    with pytest.raises(
        ConfigError,
        match=rf"my.yaml: field '{dotted}\.{old}': this setting has been renamed; expected "
        rf"'{dotted}\.{new}'; fix: rename the key to {new}",
    ):
        validate_config(data, source="my.yaml")


def test_the_lymphocyte_floor_checks_the_endpoint_denominator_unless_configured():
    """The floor's population follows endpoints.denominator_population; a tube may pin it."""
    from nkflow.config import tube_settings
    from nkflow.tube import _qc_config

    data = _base()
    data["endpoints"]["denominator_population"] = "cd3_neg"
    cfg = validate_config(data, source="my.yaml")
    assert cfg["qc"]["floors"]["lymphocyte_floor_population"] is None
    floors = _qc_config(tube_settings(cfg), "cd3_neg").floors
    assert floors.lymphocyte_floor_population == "cd3_neg"
    data["qc"]["floors"]["lymphocyte_floor_population"] = "lymphocytes"
    cfg = validate_config(data, source="my.yaml")
    floors = _qc_config(tube_settings(cfg), "cd3_neg").floors
    assert floors.lymphocyte_floor_population == "lymphocytes"
