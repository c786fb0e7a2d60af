# Loading and validation of the configuration and the sample sheet, and input functions.
# No rules here. Validation runs when the workflow is parsed, so a bad config or sheet stops
# the run before any job starts, with the same message `nkflow validate` gives.
import json
import os
import re
import shlex
from pathlib import Path

from nkflow.config import load_study, tube_settings, validate_inputs
from nkflow.errors import NkflowError
from nkflow.review import review_settings
from nkflow.gating.override_files import tube_files

try:
    STUDY = load_study(data=dict(config), source="config", base_dir=Path.cwd())
    NKCONFIG = STUDY.config
    # Every sheet, panel and gate tree, once, before any job; a cluster job re-parsing this
    # file (once per job) skips it: the run it belongs to has already passed.
    if workflow.is_main_process:
        validate_inputs(STUDY)
    # read once: the validation above and the batches below share it
    SAMPLES = STUDY.samples
    # Every patient in the infusion table gets an endpoint row and a report page.
    PATIENTS = STUDY.patients
    REVIEW = review_settings(NKCONFIG)  # refuses review paths inside the results
except NkflowError as exc:
    raise WorkflowError(f"nkflow configuration error: {exc}") from None

RESULTS = NKCONFIG["results"]
# The review trail (nkflow/review): read by the endpoints step for each patient's review status,
# never written by the workflow. Absent until someone signs or corrects a gate.
AUDIT_LOG = NKCONFIG["review"]["audit_log"]
# The whole validated config as JSON, handed to `nkflow validate`, which writes VALIDATED; the
# cohort commands read that file (a change re-runs them).
CONFIG_JSON = json.dumps(NKCONFIG, sort_keys=True, separators=(",", ":"))
VALIDATED = f"{RESULTS}/validated/config.json"


wildcard_constraints:
    sample=r"[A-Za-z0-9][A-Za-z0-9._-]*",
    tube=r"[A-Za-z0-9][A-Za-z0-9._-]*",


def _make_batches():
    """Split the tubes into batches of tubes that share a panel and gate tree.

    Tubes keep sample-sheet order inside a (panel, gate tree) group and are cut into chunks of
    `batching.tubes_per_job`. Appending samples to the sheet only changes the last batch of
    each group; changing a gate file re-runs only the batches of that tree.
    """
    size = int(NKCONFIG["batching"]["tubes_per_job"])
    groups = {}
    for row in SAMPLES.itertuples(index=False):
        groups.setdefault((row.gating, row.panel), []).append(
            # relative to the run directory: results do not depend on where the checkout is
            (row.sample_id, row.tube, os.path.relpath(row.fcs_path))
        )
        for marker, path in row.fmo_paths.items():
            FMO.setdefault((row.sample_id, row.tube), {})[marker] = os.path.relpath(
                path
            )
    batches = {}
    for (gating, panel), members in groups.items():
        for k in range(0, len(members), size):
            name = f"{gating}.{panel}.{k // size + 1:03d}"
            batches[name] = {
                "gating": gating,
                "panel": panel,
                "tubes": members[k : k + size],
            }
    return batches


FMO = {}  # (sample_id, tube) -> {marker: FMO control FCS}, from the sheet's fmo column
BATCHES = _make_batches()


def tube_overrides(sample_id, tube):
    """A tube's gate override files (review.overrides/<sample>/<tube>/<gate>.yaml): inputs of
    its batch, so adding, changing or removing one re-gates only that batch."""
    return [
        os.path.relpath(p)
        for p in tube_files(Path(NKCONFIG["review"]["overrides"]), sample_id, tube)
    ]


wildcard_constraints:
    batch="|".join(re.escape(b) for b in BATCHES) or "NO_BATCH",


def batch_inputs(wildcards):
    b = BATCHES[wildcards.batch]
    return {
        "fcs": [fcs for _, _, fcs in b["tubes"]],
        "panel": NKCONFIG["panels"][b["panel"]],
        "gating": NKCONFIG["gating"][b["gating"]],
        "fmo": [f for s, t, _ in b["tubes"] for f in FMO.get((s, t), {}).values()],
        "overrides": [f for s, t, _ in b["tubes"] for f in tube_overrides(s, t)],
        "instrument_trees": [
            e["tree"]
            for e in NKCONFIG.get("gating_by_instrument", {}).get(b["gating"], [])
        ],
    }


def batch_tube_args(wildcards):
    """The --tube options of one batch, shell-quoted."""
    tubes = BATCHES[wildcards.batch]["tubes"]
    return " ".join(
        [
            f"--tube {shlex.quote(s)} {shlex.quote(t)} {shlex.quote(f)}"
            for s, t, f in tubes
        ]
        + [
            f"--fmo {shlex.quote(s)} {shlex.quote(t)} {shlex.quote(m)} {shlex.quote(f)}"
            for s, t, _ in tubes
            for m, f in sorted(FMO.get((s, t), {}).items())
        ]
        + [
            f"--override {shlex.quote(s)} {shlex.quote(t)} {shlex.quote(f)}"
            for s, t, _ in tubes
            for f in tube_overrides(s, t)
        ]
    )


def batch_settings(wildcards):
    """The settings a batch's tubes depend on (a change elsewhere does not re-gate them)."""
    b = BATCHES[wildcards.batch]
    settings = tube_settings(NKCONFIG, b["panel"], b["gating"])
    return json.dumps(settings, sort_keys=True, separators=(",", ":"))


BATCH_DIRS = [f"{RESULTS}/tubes/{b}" for b in BATCHES]
# Written by the merge step beside visits.tsv when % donor is computed from raw STR peaks.
STR_TABLES = (
    [f"{RESULTS}/cohort/str_results.tsv", f"{RESULTS}/cohort/str_loci.tsv"]
    if NKCONFIG["sheets"].get("str_peaks") and NKCONFIG["sheets"].get("str_samples")
    else []
)
