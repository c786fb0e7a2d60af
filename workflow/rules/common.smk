# Loading and validation of the configuration and the sample sheet, and input functions.
# No rules here. Validation runs when the workflow is parsed, so a bad config or sheet stops
# the run before any job starts, with the same message `nkflow validate` gives.
import json
import os
from pathlib import Path

from nkflow.config import validate_config, validate_inputs
from nkflow.errors import NkflowError
from nkflow.sheets import load_samples

try:
    NKCONFIG = validate_config(dict(config), source="config")
    VALIDATION_WARNINGS = validate_inputs(NKCONFIG, base_dir=Path.cwd())
    SAMPLES = load_samples(
        Path(NKCONFIG["sheets"]["samples"]),
        panels=NKCONFIG["panels"],
        gatings=NKCONFIG["gating"],
    )
except NkflowError as exc:
    raise WorkflowError(f"nkflow configuration error: {exc}") from None

RESULTS = NKCONFIG["results"]
# (sample_id, tube) pairs in sample-sheet order: the order of every cohort table.
TUBES = list(zip(SAMPLES["sample_id"], SAMPLES["tube"]))
# The whole validated config as JSON, handed to the cohort-level commands; a change re-runs them.
CONFIG_JSON = json.dumps(NKCONFIG, sort_keys=True, separators=(",", ":"))
# Only the sections a tube reads: a change to, say, the visit window does not re-gate tubes.
TUBE_SETTINGS = json.dumps(
    {k: NKCONFIG.get(k, {}) for k in ("qc", "figures")}
    | {
        "endpoints": {
            "lymphocyte_denominator": NKCONFIG.get("endpoints", {}).get(
                "lymphocyte_denominator", "live"
            )
        }
    },
    sort_keys=True,
    separators=(",", ":"),
)


wildcard_constraints:
    sample=r"[A-Za-z0-9][A-Za-z0-9._-]*",
    tube=r"[A-Za-z0-9][A-Za-z0-9._-]*",


def tube_row(wildcards):
    """The sample-sheet row of one tube."""
    sel = SAMPLES[
        (SAMPLES["sample_id"] == wildcards.sample) & (SAMPLES["tube"] == wildcards.tube)
    ]
    return sel.iloc[0]


def tube_inputs(wildcards):
    row = tube_row(wildcards)
    return {
        "fcs": str(row["fcs_path"]),
        "panel": NKCONFIG["panels"][row["panel"]],
        "gating": NKCONFIG["gating"][row["gating"]],
    }


def tube_settings(wildcards):
    """Per-tube settings: the tube sections, plus a configured spillover CSV for its panel."""
    row = tube_row(wildcards)
    spill = NKCONFIG.get("spillover", {}).get(row["panel"])
    settings = json.loads(TUBE_SETTINGS)
    if spill:
        settings["spillover"] = spill
    return json.dumps(settings, sort_keys=True, separators=(",", ":"))


def per_tube(name):
    return [f"{RESULTS}/tubes/{s}/{t}/{name}" for s, t in TUBES]
