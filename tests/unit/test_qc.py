"""Tests of nkflow.qc: time/flow-rate QC, margins, compensation sanity, event floors, viability,
gate flags, tube status and the qc.tsv table. Data are hand-built (tiny arrays with known answers)
or synthetic tubes from qc_synthetic.py whose truth is fixed by construction."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from nkflow.errors import ConfigError
from nkflow.qc import (
    QC_COLUMNS,
    Check,
    QcConfig,
    checks_table,
    compensation_sanity,
    event_floor_checks,
    events_lost_check,
    gate_flag_checks,
    margin_events,
    time_qc,
    tube_status,
    viability_check,
)
from nkflow.schemas import load_schema
from tests.conftest import PUBLIC_DATA_SKIP, public_data_root
from tests.unit.qc_synthetic import (
    TIMESTEP,
    make_tube,
    nk_pct_of_lymphocytes,
    write_fcs,
)

ROOT = Path(__file__).resolve().parents[2]
CFG = QcConfig.from_dict(None)
#: the floors as a tube sees them (nkflow.tube resolves the floor population)
FLOORS = QcConfig.from_dict({"floors": {"lymphocyte_floor_population": "lymphocytes"}})
#: the endpoint populations of the default configuration (nkflow.tube.endpoint_populations)
ENDPOINT_POPULATIONS = ("nk", "lymphocytes", "treg", "treg_ki67", "cd4")


def by_check(checks: list[Check]) -> dict[str, Check]:
    return {c.check: c for c in checks}


@pytest.fixture(scope="module")
def clog_tube():
    return make_tube(0)


@pytest.fixture(scope="module")
def clog_result(clog_tube):
    return time_qc(clog_tube.time_seconds, clog_tube.signals(), TIMESTEP, CFG)


# ------------------------------------------------------------------------------------------------
# Configuration
# ------------------------------------------------------------------------------------------------


def test_config_yaml_block_validates_and_equals_code_defaults():
    import jsonschema

    config = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    schema = load_schema("qc")
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(config["qc"], schema)
    assert QcConfig.from_dict(config["qc"]) == QcConfig.from_dict(None)
    assert QcConfig.from_dict({}) == QcConfig.from_dict(None)


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (
            {"time": {"bin_seconds": 0}},
            r"config: field 'qc\.time\.bin_seconds': found 0; expected a value greater than 0",
        ),
        (
            {"time": {"bin_secs": 1}},
            r"field 'qc\.time': .*'bin_secs' was unexpected.*allowed keys: assume_timestep",
        ),
        ({"timing": {}}, r"field 'qc': .*'timing' was unexpected.*allowed keys: acquisition"),
        (
            {"time": {"enabled": "yes"}},
            r"'qc\.time\.enabled': found \"yes\"; expected true or false",
        ),
        (
            {"floors": {"min_total_events": 10.5}},
            r"'qc\.floors\.min_total_events': found 10\.5; expected a whole number",
        ),
        (
            {"margins": {"warn_frac": True}},
            r"'qc\.margins\.warn_frac': found true; expected a number",
        ),
        (
            {"margins": {"warn_frac": 0.3, "fail_frac": 0.2}},
            r"qc\.margins\.fail_frac': found 0\.2, below qc\.margins\.warn_frac = 0\.3",
        ),
        (
            {"viability": {"max_dead_frac": 0.3, "max_dead_frac_fail": 0.1}},
            r"qc\.viability\.max_dead_frac_fail': found 0\.1",
        ),
        (
            {"severity": {"flow_rate_anomaly": "warn"}},
            r"'qc\.severity\.flow_rate_anomaly': found \"warn\"; expected one of PASS, WARN, FAIL",
        ),
        (
            {"severity": {"clog": "FAIL"}},
            r"'qc\.severity': found \"clog\"; expected one of fcs_unreadable, .*, no_spillover, "
            r".*, gate_subset_no_valley, .*",
        ),
        ({"time": [1, 2]}, r"field 'qc\.time': found \[1, 2\]; expected a mapping"),
    ],
)
def test_config_errors_name_the_key(raw, match):
    with pytest.raises(ConfigError, match=match):
        QcConfig.from_dict(raw)


def test_config_accepts_gate_codes_in_severity_map():
    cfg = QcConfig.from_dict({"severity": {"gate_no_valley": "WARN"}})
    assert cfg.severity_of("gate_no_valley") == "WARN"
    # the part after the colon names where; the code before it is looked up
    assert cfg.severity_of("gate_no_valley:nk.CD56") == "WARN"
    assert cfg.severity_of("gate_too_few_events:nk.CD3") == "FAIL"  # fitted-gate default
    assert cfg.severity_of("gate_subset_no_valley:nk_cd56bright.CD56") == "WARN"
    assert cfg.severity_of("gate_missing_control") == "WARN"
    assert cfg.severity_of("gate_made_up") == "WARN"  # a flag code not registered: gate_flag
    assert cfg.severity_of("fmo_unusable") == "WARN"  # the pipeline's own codes too
    assert cfg.severity_of("made_up") is None


# ------------------------------------------------------------------------------------------------
# Time QC: clog followed by a burst of junk events
# ------------------------------------------------------------------------------------------------


def test_time_qc_removes_burst_and_restores_nk_pct(clog_tube, clog_result):
    truth = clog_tube.truth_nk_pct
    assert truth == pytest.approx(10.0)
    without_qc = nk_pct_of_lymphocytes(clog_tube.events)
    with_qc = nk_pct_of_lymphocytes(clog_tube.events, clog_result.keep)
    # The error time QC prevents: junk in the lymphocyte/NK gates roughly doubles the NK %.
    assert abs(without_qc - truth) / truth > 0.9, f"without time QC: {without_qc:.3f}%"
    assert abs(with_qc - truth) / truth < 0.02, f"with time QC: {with_qc:.3f}% (truth {truth})"
    # Every junk event is removed.
    assert int((clog_tube.is_junk & clog_result.keep).sum()) == 0
    assert clog_result.n_removed == int((~clog_result.keep).sum())


def test_time_qc_removes_only_around_the_anomaly(clog_tube, clog_result):
    t = clog_tube.time_seconds
    removed_t = t[~clog_result.keep]
    width = clog_result.bin_seconds
    assert width == pytest.approx(0.1)  # 10 ticks of 10 ms
    clog0, clog1 = clog_tube.clog
    burst1 = clog_tube.burst[1]
    # Nothing outside [clog start, burst end] widened by the pad bin plus the partial bins.
    assert removed_t.min() >= clog0 - 2 * width - 1e-9
    assert removed_t.max() <= burst1 + 2 * width + 1e-9
    # Exactly: the bin of the last event before the clog (29.9-30.0 s) to the last burst bin
    # (33.4-33.5 s), each widened by one pad bin.
    ((start, end),) = clog_result.removed_ranges
    assert (start, end) == (pytest.approx(29.8), pytest.approx(33.6))
    # Good events lost: those arriving with the burst and in the padded/partial bins around it,
    # at most (burst + 4 bins) x the good-event rate (60000 events over 60 - 3 s).
    good_removed = int((~clog_result.keep & ~clog_tube.is_junk).sum())
    assert good_removed <= (0.5 + 4 * width) * 60000 / 57.0


def test_time_qc_checks_report_clog_and_burst(clog_result):
    checks = by_check(clog_result.checks)
    assert list(checks) == ["time_flow_rate", "time_gap", "time_signal", "time_removed"]
    rate = checks["time_flow_rate"]
    assert (rate.status, rate.reason_code) == ("WARN", "flow_rate_anomaly")
    assert "high-rate (burst) bins at 33.00-33.50 s" in rate.message  # the burst, exactly
    assert "low-rate bins at 30.00-33.00 s" in rate.message  # the clog, exactly
    gap = checks["time_gap"]
    assert (gap.status, gap.reason_code) == ("WARN", "flow_gap")
    assert len(clog_result.gaps) == 1
    g0, g1 = clog_result.gaps[0]
    assert 29.9 < g0 <= 30.0 and 33.0 <= g1 < 33.02  # the 3 s clog, to the 10 ms tick
    assert checks["time_signal"].reason_code == "ok"  # shifts only inside the burst bins
    removed = checks["time_removed"]
    assert (removed.status, removed.reason_code) == ("PASS", "ok")
    assert removed.value == pytest.approx(clog_result.n_removed / 66000)
    assert removed.message.startswith(f"time QC removed {clog_result.n_removed} of 66000 events")
    # A WARN keeps the number: the tube is not failed.
    status, reasons = tube_status(clog_result.checks, CFG)
    assert status == "WARN"
    assert [c.reason_code for c in reasons] == ["flow_rate_anomaly", "flow_gap"]


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_time_qc_removes_nothing_from_a_steady_acquisition(seed):
    tube = make_tube(seed, clog=None)
    res = time_qc(tube.time_seconds, tube.signals(), TIMESTEP, CFG)
    assert res.assessed
    assert res.n_removed == 0 and res.keep.all() and res.removed_ranges == []
    assert {c.status for c in res.checks} == {"PASS"}
    assert tube_status(res.checks, CFG) == ("PASS", [])


@pytest.mark.parametrize(("tick_s", "rate"), [(0.1, 5000), (0.05, 2000), (1.0, 5000)])
def test_quantized_clock_is_not_mistaken_for_bursts(tick_s, rate):
    # A coarse clock (0.1 s ticks at 5000 events/s): bins must hold whole ticks, otherwise a bin
    # with one tick more than its neighbours looks like a burst.
    rng = np.random.default_rng(7)
    t = np.sort(rng.uniform(0, 60, 60 * rate))
    ticks = np.floor(t / tick_s)
    res = time_qc(ticks, {"FSC-A": rng.normal(size=t.size)}, tick_s, CFG, time_pnn="HDR-T")
    assert res.assessed and res.n_removed == 0
    assert res.bin_seconds == pytest.approx(max(tick_s, 0.1))
    assert {c.status for c in res.checks} == {"PASS"}


def test_mostly_empty_acquisition_is_not_assessed():
    t = np.r_[np.sort(np.random.default_rng(2).uniform(0, 10, 5000)), 100.0]
    res = time_qc(t, {}, 1.0, CFG)
    assert not res.assessed and res.keep.all()
    assert res.checks[0].message == (
        "more than half of the 50 time bins of 2 s hold no event: the acquisition is too sparse "
        "or too interrupted to estimate a steady rate; all events kept"
    )


def test_time_qc_flags_signal_drift_at_steady_rate():
    tube = make_tube(3, clog=None)
    events = tube.events.copy()
    t = tube.time_seconds
    shifted = (t >= 20.0) & (t < 22.0)
    events[shifted, 1] *= 1.3  # FSC-A drifts up by 30 % for 2 s (e.g. a partial clog)
    signals = {"FSC-A": events[:, 1], "SSC-A": events[:, 2]}
    res = time_qc(t, signals, TIMESTEP, CFG)
    checks = by_check(res.checks)
    assert checks["time_flow_rate"].reason_code == "ok"
    sig = checks["time_signal"]
    assert (sig.status, sig.reason_code) == ("WARN", "signal_drift")
    assert "FSC-A" in sig.message and "SSC-A" not in sig.message
    assert not res.keep[shifted].any()
    removed_t = t[~res.keep]
    width = res.bin_seconds
    assert removed_t.min() >= 20.0 - 2 * width and removed_t.max() <= 22.0 + 2 * width


def test_time_qc_excess_removal_fails_and_severity_override(clog_tube):
    strict = QcConfig.from_dict({"time": {"max_removed_frac": 0.05}})
    res = time_qc(clog_tube.time_seconds, clog_tube.signals(), TIMESTEP, strict)
    removed = by_check(res.checks)["time_removed"]
    assert (removed.status, removed.reason_code) == ("FAIL", "time_excess_removed")
    assert "more than 5% (qc.time.max_removed_frac)" in removed.message
    assert tube_status(res.checks, strict)[0] == "FAIL"

    # Overriding a severity changes the status without recomputing the checks.
    res = time_qc(clog_tube.time_seconds, clog_tube.signals(), TIMESTEP, CFG)
    fail_rate = QcConfig.from_dict({"severity": {"flow_rate_anomaly": "FAIL"}})
    status, reasons = tube_status(res.checks, fail_rate)
    assert status == "FAIL"
    assert [c.reason_code for c in reasons] == ["flow_rate_anomaly"]
    table = checks_table("P1-D14", "nk", res.checks, fail_rate)
    assert set(table["tube_status"]) == {"FAIL"}
    assert table.set_index("check").loc["time_flow_rate", "status"] == "FAIL"
    quiet = QcConfig.from_dict({"severity": {"flow_rate_anomaly": "PASS", "flow_gap": "PASS"}})
    assert tube_status(res.checks, quiet) == ("PASS", [])


def test_time_qc_is_deterministic(clog_tube, clog_result):
    again = time_qc(clog_tube.time_seconds, clog_tube.signals(), TIMESTEP, CFG)
    assert np.array_equal(again.keep, clog_result.keep)
    assert again.checks == clog_result.checks
    assert again.removed_ranges == clog_result.removed_ranges
    pd.testing.assert_frame_equal(
        checks_table("S", "nk", again.checks, CFG), checks_table("S", "nk", clog_result.checks, CFG)
    )
    assert np.array_equal(make_tube(0).events, clog_tube.events)


# ------------------------------------------------------------------------------------------------
# Time QC: not assessed, units
# ------------------------------------------------------------------------------------------------


def test_no_time_channel_is_not_assessed(clog_tube):
    res = time_qc(None, clog_tube.signals(), None, CFG)
    assert not res.assessed
    assert res.keep.shape == (66000,) and res.keep.all()
    assert (res.n_removed, res.removed_ranges) == (0, [])
    (check,) = res.checks
    assert check == Check(
        "time_qc",
        "NOT_ASSESSED",
        "time_not_assessed",
        None,
        None,
        "no Time channel in this file: flow-rate stability not assessed; all events kept",
    )
    # Not assessed counts as WARN by default, PASS when configured so.
    assert tube_status(res.checks, CFG)[0] == "WARN"
    lenient = QcConfig.from_dict({"severity": {"time_not_assessed": "PASS"}})
    assert tube_status(res.checks, lenient) == ("PASS", [])
    row = checks_table("S1", "nk", res.checks, CFG).iloc[0]
    assert (row["status"], row["tube_status"]) == ("NOT_ASSESSED", "WARN")


def test_missing_timestep_is_not_assessed_unless_assumed(clog_tube):
    ticks = clog_tube.events[:, 0]
    res = time_qc(ticks, clog_tube.signals(), None, CFG)
    assert not res.assessed and res.keep.all()
    assert res.checks[0].message == (
        "Time channel present but no valid $TIMESTEP (None): time cannot be converted to "
        "seconds; set qc.time.assume_timestep to assess it; all events kept"
    )
    assumed = QcConfig.from_dict({"time": {"assume_timestep": TIMESTEP}})
    res2 = time_qc(ticks, clog_tube.signals(), None, assumed)
    ref = time_qc(clog_tube.time_seconds, clog_tube.signals(), TIMESTEP, CFG)
    assert res2.assessed and np.array_equal(res2.keep, ref.keep)
    assert "assumed 0.01 s per unit" in res2.checks[0].message


def test_time_not_named_time_is_scaled_here(clog_tube, clog_result):
    # FlowIO scales only a channel named 'Time'; 'HDR-T' arrives in ticks and is scaled here.
    ticks = clog_tube.events[:, 0]
    res = time_qc(ticks, clog_tube.signals(), TIMESTEP, CFG, time_pnn="HDR-T")
    assert np.array_equal(res.keep, clog_result.keep)
    assert np.allclose(res.removed_ranges, clog_result.removed_ranges)


@pytest.mark.parametrize(
    ("time", "message"),
    [
        (
            np.r_[np.arange(2000.0), np.arange(2000.0)] * 0.01,
            "Time decreases 1 times in acquisition order (clock rollover or concatenated "
            "acquisitions); all events kept",
        ),
        (
            np.arange(500.0) * 0.01,
            "500 events over 4.99 s: too few to assess flow rate (need at least 1000 = "
            "qc.time.min_events_per_bin x qc.time.min_bins); all events kept",
        ),
        (
            np.r_[np.arange(1999.0), np.nan] * 0.01,
            "1 events have a non-finite Time value; all events kept",
        ),
    ],
)
def test_unusable_time_is_not_assessed(time, message):
    res = time_qc(time, {}, TIMESTEP, CFG)
    assert not res.assessed and res.keep.all() and len(res.keep) == len(time)
    assert res.checks[0].status == "NOT_ASSESSED"
    assert res.checks[0].message == message


def test_time_qc_disabled():
    cfg = QcConfig.from_dict({"time": {"enabled": False}})
    res = time_qc(np.arange(5000.0) * 0.01, {}, TIMESTEP, cfg)
    assert res.checks[0].reason_code == "time_qc_disabled"
    assert tube_status(res.checks, cfg) == ("PASS", [])


def test_time_qc_signal_length_mismatch_is_a_caller_error():
    with pytest.raises(ValueError, match="signal 'FSC-A' has 3 values, Time has 4"):
        time_qc(np.arange(4.0), {"FSC-A": np.zeros(3)}, 1.0, CFG)


def test_time_qc_on_fcs_round_trip(tmp_path, clog_tube, clog_result):
    import flowkit as fk

    path = write_fcs(tmp_path / "clog.fcs", clog_tube)
    sample = fk.Sample(str(path))
    raw = sample.get_events(source="raw")
    names = list(sample.pnn_labels)
    time_col = raw[:, names.index("Time")]
    assert time_col.max() == pytest.approx(clog_tube.time_seconds.max())  # FlowIO applied $TIMESTEP
    timestep = float(sample.metadata["timestep"])
    signals = {n: raw[:, i] for i, n in enumerate(names) if n != "Time"}
    res = time_qc(time_col, signals, timestep, CFG, time_pnn="Time")
    assert np.array_equal(res.keep, clog_result.keep)

    no_time = fk.Sample(str(write_fcs(tmp_path / "no_time.fcs", clog_tube, with_time=False)))
    assert "Time" not in no_time.pnn_labels
    # the file's own channels, with no Time among them: QC says so instead of failing
    no_time_names = list(no_time.pnn_labels)
    no_time_raw = no_time.get_events(source="raw")
    res = time_qc(None, {n: no_time_raw[:, i] for i, n in enumerate(no_time_names)}, None, CFG)
    assert not res.assessed
    assert res.checks[0].reason_code == "time_not_assessed"
    assert res.keep.all() and res.keep.size == no_time_raw.shape[0]


# ------------------------------------------------------------------------------------------------
# Margin events
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ch:
    pnn: str
    pnr: float
    pne: tuple[float, float] = (0.0, 0.0)
    png: float = 1.0


def test_margin_counts_exact_on_tiny_array():
    channels = [Ch("Time", 1024), Ch("FSC-A", 1024), Ch("SSC-A", 1024), Ch("CD3", 1024)]
    events = np.array(
        [
            [1, 1023, 500, 10],  # FSC at ceiling (PnR - 1)
            [2, 1024, 0, 10],  # FSC above ceiling, SSC on the floor pile-up
            [3, 500, 0, 10],  # SSC on the floor pile-up
            [4, 510, 400, 1023],  # CD3 at ceiling (not checked: not in the indices)
            [5, 1022.9, 300, 10],  # just below the ceiling
            [6, 600, 200, 12],
        ],
        dtype=float,
    )
    res = margin_events(events, channels, CFG, [1, 2])
    fsc, ssc = res.per_channel
    assert (fsc.channel, fsc.ceiling, fsc.n_ceiling, fsc.n_floor) == ("FSC-A", 1023.0, 2, 0)
    assert (ssc.channel, ssc.n_ceiling, ssc.floor, ssc.n_floor) == ("SSC-A", 0, 0.0, 2)
    assert res.at_margin.tolist() == [True, True, True, False, False, False]
    assert res.n_at_margin == 3 and res.frac == 0.5
    assert res.keep.all() and not res.removed  # default: counted, not removed
    (check,) = res.checks
    assert (check.check, check.status, check.reason_code) == (
        "margins",
        "FAIL",
        "margin_events_excess",
    )
    assert check.message == (
        "3 of 6 events (50.00%) at a channel ceiling or floor (FSC-A: 2 at ceiling >= 1023, "
        "0 at floor; SSC-A: 0 at ceiling >= 1023, 2 at floor <= 0); kept "
        "(qc.margins.remove: false); above the 25% limit"
    )

    cfg = QcConfig.from_dict({"margins": {"remove": True, "floor": 0, "fail_frac": 0.7}})
    res = margin_events(events, channels, cfg, [1, 2, 3])
    assert res.keep.tolist() == [False, False, False, False, True, True]
    assert res.checks[0].reason_code == "margin_events"
    assert res.checks[0].status == "WARN"
    assert [m.n_floor for m in res.per_channel] == [0, 2, 0]


def test_margin_single_minimum_is_not_a_pileup_and_log_ceiling():
    # $PnE 4,1 on a 1024 range: the top channel 1023 reads 10**(4 * 1023 / 1024).
    log_ch = Ch("FL1-H", 1024, (4.0, 1.0))
    top = 10 ** (4 * 1023 / 1024)
    events = np.array([[top], [top * 0.999], [1.0], [5.0]])
    res = margin_events(events, [log_ch], CFG, [0])
    (m,) = res.per_channel
    assert m.ceiling == pytest.approx(top)
    assert (m.n_ceiling, m.n_floor) == (1, 0)  # one event at the minimum is not a pile-up
    gain = Ch("FSC-A", 262144, png=2.0)
    res = margin_events(np.array([[131071.5], [131071.4]]), [gain], CFG, [0])
    assert res.per_channel[0].ceiling == 131071.5 and res.per_channel[0].n_ceiling == 1


# ------------------------------------------------------------------------------------------------
# Compensation sanity
# ------------------------------------------------------------------------------------------------


def test_compensation_sanity_catches_nan_and_inf():
    x = np.zeros((100, 3))
    x[5, 0] = np.nan
    x[6, 2] = np.inf
    x[7, 2] = -np.inf
    finite, neg = compensation_sanity(x, ["FITC-A", "PE-A", "APC-A"], CFG)
    assert (finite.check, finite.status, finite.reason_code, finite.value) == (
        "compensation_finite",
        "FAIL",
        "compensation_nonfinite",
        3.0,
    )
    assert "3 NaN/inf values after compensation (FITC-A: 1, APC-A: 2)" in finite.message
    assert neg.reason_code == "ok"


def test_compensation_sanity_catches_over_compensation():
    rng = np.random.default_rng(1)
    x = rng.normal(0, 200, (1000, 2))
    x[:100, 1] = -5000.0  # 10 % of PE-A far below zero (limit -2621.44 on 262144)
    finite, neg = compensation_sanity(x, ["FITC-A", "PE-A"], CFG)
    assert finite.reason_code == "ok"
    assert (neg.status, neg.reason_code, neg.value, neg.threshold) == (
        "WARN",
        "over_compensation",
        0.1,
        0.05,
    )
    assert "PE-A: 10.0% below -2621.44" in neg.message and "FITC-A" not in neg.message
    # With a 4,194,304 range (e.g. a 22-bit instrument) -5000 is not far below zero.
    _, neg = compensation_sanity(x, ["FITC-A", "PE-A"], CFG, ranges=[4194304, 4194304])
    assert neg.reason_code == "ok"
    (na,) = compensation_sanity(np.zeros((0, 2)), ["FITC-A", "PE-A"], CFG)
    assert (na.status, na.reason_code) == ("NOT_ASSESSED", "compensation_not_assessed")


# ------------------------------------------------------------------------------------------------
# Event floors, viability, gate flags
# ------------------------------------------------------------------------------------------------


def counts(rows):
    cols = ["population", "parent", "events", "parent_events", "pct_of_parent", "status", "reason"]
    return pd.DataFrame(rows, columns=cols)


def test_nk_numerator_under_floor_warns_with_poisson_cv():
    df = counts(
        [
            ["singlets", None, 9000, 10000, 90.0, "ok", ""],
            ["lymphocytes", "singlets", 3000, 9000, 33.3, "ok", ""],
            ["live", "lymphocytes", 2900, 3000, 96.7, "ok", ""],
            ["nk", "live", 64, 2900, 2.2, "ok", ""],
            ["nk_cd56bright", "nk", 9, 64, 14.1, "ok", ""],
            ["nkt_like", "live", None, None, None, "not_computed", "missing_marker:CD56"],
        ]
    )
    checks = by_check(event_floor_checks(df, FLOORS, ENDPOINT_POPULATIONS))
    assert list(checks) == [
        "total_events",
        "lymphocyte_events",
        "events:singlets",
        "events:lymphocytes",
        "events:live",
        "events:nk",
        "events:nk_cd56bright",
    ]
    nk = checks["events:nk"]
    assert (nk.status, nk.reason_code) == ("WARN", "low_numerator_events")
    assert nk.value == 0.125 and nk.threshold == 0.1  # 1/sqrt(64), 1/sqrt(100)
    assert nk.message == (
        "nk: 64 events, below the floor of 100; Poisson CV 1/sqrt(64) = 12.5%; its percentage "
        "of live is imprecise and is reported with this flag"
    )
    sub = checks["events:nk_cd56bright"]
    assert (sub.status, sub.reason_code) == ("PASS", "low_numerator_events_other")
    assert sub.value == pytest.approx(1 / 3)
    assert checks["total_events"].value == 10000 and checks["total_events"].reason_code == "ok"
    assert checks["lymphocyte_events"].reason_code == "ok"
    assert checks["events:lymphocytes"].value == pytest.approx(1 / math.sqrt(3000))
    status, reasons = tube_status(list(checks.values()), CFG)
    assert status == "WARN" and [c.check for c in reasons] == ["events:nk"]
    table = checks_table("P1-D14", "nk", list(checks.values()), CFG)
    row = table.set_index("check").loc["events:nk"]
    assert (row["status"], row["reason_code"], row["value"]) == (
        "WARN",
        "low_numerator_events",
        0.125,
    )


def test_half_empty_tube_fails_floors():
    df = counts(
        [
            ["singlets", None, 800, 900, 88.9, "ok", ""],
            ["lymphocytes", "singlets", 400, 800, 50.0, "ok", ""],
            ["nk", "lymphocytes", 0, 400, 0.0, "ok", ""],
        ]
    )
    checks = by_check(event_floor_checks(df, FLOORS, ENDPOINT_POPULATIONS))
    assert checks["total_events"].reason_code == "low_total_events"
    assert checks["total_events"].message == (
        "900 events in the file, below the floor of 1000 (qc.floors.min_total_events); "
        "too little sample was acquired"
    )
    assert checks["lymphocyte_events"].reason_code == "low_lymphocyte_events"
    assert checks["events:nk"].value is None and "CV undefined" in checks["events:nk"].message
    status, reasons = tube_status(list(checks.values()), CFG)
    assert status == "FAIL"
    assert [c.reason_code for c in reasons] == ["low_total_events", "low_lymphocyte_events"]
    # An explicit total overrides the root row; a not-computed lymphocyte gate is not assessed.
    df.loc[1, ["events", "status", "reason"]] = [None, "not_computed", "missing_marker:SSC-A"]
    checks = by_check(event_floor_checks(df, FLOORS, ENDPOINT_POPULATIONS, n_total=1200))
    assert checks["total_events"].reason_code == "ok"
    lym = checks["lymphocyte_events"]
    assert (lym.status, lym.reason_code) == ("NOT_ASSESSED", "floor_not_assessed")
    assert "missing_marker:SSC-A" in lym.message


def test_viability_check():
    c = viability_check(30, 100, CFG)
    assert (c.check, c.status, c.reason_code, c.value, c.threshold) == (
        "viability",
        "WARN",
        "low_viability",
        0.3,
        0.25,
    )
    assert c.message.startswith("30 of 100 singlets dead (30.0%), above the warning limit 25%")
    assert viability_check(10, 100, CFG).reason_code == "ok"
    strict = QcConfig.from_dict({"viability": {"max_dead_frac_fail": 0.28}})
    assert viability_check(30, 100, strict).status == "FAIL"
    na = viability_check(None, 100, CFG)
    assert (na.status, na.reason_code) == ("NOT_ASSESSED", "viability_not_assessed")
    assert na.message == "viability not assessed: no viability marker in this tube"
    with pytest.raises(ValueError, match="n_dead=101, n_singlets=100"):
        viability_check(101, 100, CFG)


def test_events_lost_check_from_lost_and_abrt():
    """FCS 3.1 $LOST (computer busy) and $ABRT (electronic coincidence) count detected events
    that are not in DATA: lost fraction = (LOST + ABRT) / (TOT + LOST + ABRT)."""
    c = events_lost_check({"$LOST": "600", "$ABRT": " 400 "}, 9000, CFG)
    assert (c.check, c.status, c.reason_code, c.value, c.threshold) == (
        "acquisition",
        "WARN",
        "events_lost",
        0.1,
        0.05,
    )
    assert c.message.startswith(
        "$LOST 600 + $ABRT 400 = 1000 events lost at acquisition, 10.00% of 10000 detected "
        "(9000 recorded), above qc.acquisition.max_lost_frac 5%"
    )
    ok = events_lost_check({"$LOST": "0"}, 5785, CFG)
    assert (ok.status, ok.reason_code, ok.value) == ("PASS", "ok", 0.0)
    assert ok.message == (
        "$LOST 0 = 0 events lost at acquisition, 0.00% of 5785 detected (5785 recorded) (limit 5%)"
    )
    lax = QcConfig.from_dict({"acquisition": {"max_lost_frac": 0.2}})
    assert events_lost_check({"$ABRT": "1000"}, 9000, lax).reason_code == "ok"
    na = events_lost_check({}, 100, CFG)
    assert (na.status, na.reason_code) == ("NOT_ASSESSED", "events_lost_not_assessed")
    assert na.message.endswith("the file has neither $LOST nor $ABRT")
    bad = events_lost_check({"$LOST": "n/a", "$ABRT": "3"}, 100, CFG)
    assert bad.reason_code == "events_lost_not_assessed"
    assert bad.message.endswith("$LOST is 'n/a', not a whole number >= 0")
    with pytest.raises(
        ConfigError,
        match=r"qc\.acquisition\.max_lost_frac': found 2; expected a value of at most 1",
    ):
        QcConfig.from_dict({"acquisition": {"max_lost_frac": 2}})


def test_gate_flags_become_checks():
    flags = [
        {"gate": "foxp3_pos", "code": "no_valley", "message": "gate 'foxp3_pos': no valley"},
        {"gate": "ki67_pos", "code": "no_valley_fallback", "message": "used default 0.5"},
    ]
    checks = gate_flag_checks(flags, CFG)
    assert [(c.check, c.status, c.reason_code) for c in checks] == [
        ("gate:foxp3_pos", "FAIL", "gate_no_valley"),
        ("gate:ki67_pos", "WARN", "gate_no_valley_fallback"),
    ]
    assert checks[0].message == "gate 'foxp3_pos': no valley"
    status, reasons = tube_status(checks, CFG)
    assert status == "FAIL" and [c.check for c in reasons] == ["gate:foxp3_pos"]
    lenient = QcConfig.from_dict({"severity": {"gate_no_valley": "WARN"}})
    assert tube_status(checks, lenient)[0] == "WARN"
    assert gate_flag_checks([], CFG) == []


def test_fit_flags_name_the_gate_and_only_endpoint_gates_fail_the_tube():
    flags = [
        {"gate": "nk", "code": "no_valley", "where": "nk.CD56", "message": "m1"},
        {
            "gate": "nk_cd56bright",
            "code": "no_valley",
            "where": "nk_cd56bright.CD56",
            "message": "m2",
        },
        {"gate": "lymphocytes", "code": "implausible", "where": "lymphocytes", "message": "m3"},
    ]
    checks = gate_flag_checks(flags, CFG, critical={"nk", "lymphocytes"})
    assert [(c.status, c.reason_code) for c in checks] == [
        ("FAIL", "gate_no_valley:nk.CD56"),
        ("WARN", "gate_subset_no_valley:nk_cd56bright.CD56"),
        ("FAIL", "gate_implausible:lymphocytes"),
    ]
    only_subset = gate_flag_checks(flags[1:2], CFG, critical={"nk"})
    assert tube_status(only_subset, CFG)[0] == "WARN"


# ------------------------------------------------------------------------------------------------
# Tube status and the qc.tsv table
# ------------------------------------------------------------------------------------------------


def test_checks_table_columns_and_foreign_reason_codes():
    checks = [
        Check("time_qc", "NOT_ASSESSED", "time_not_assessed", None, None, "no Time channel"),
        Check("fmo", "WARN", "fmo_unusable", None, None, "FMO tube for FoxP3 unreadable"),
        viability_check(5, 100, CFG),
    ]
    table = checks_table("P1-D14", "nk", checks, CFG)
    assert tuple(table.columns) == QC_COLUMNS
    assert table["status"].tolist() == ["NOT_ASSESSED", "WARN", "PASS"]
    assert table["reason_code"].tolist() == ["time_not_assessed", "fmo_unusable", "ok"]
    assert set(table["tube_status"]) == {"WARN"}
    assert math.isnan(table["value"][0]) and table["value"][2] == 0.05
    assert table["value"].dtype == np.float64
    assert tube_status([], CFG) == ("PASS", [])
    with pytest.raises(ValueError, match="status 'OK' is not one of"):
        Check("x", "OK", "ok", None, None, "")


# ------------------------------------------------------------------------------------------------
# Public real files
# ------------------------------------------------------------------------------------------------


def public_file(rel: str) -> Path:
    base = public_data_root()
    if not base:
        pytest.skip(PUBLIC_DATA_SKIP)
    return Path(base) / rel


@pytest.mark.public
def test_public_file_without_time_channel_is_not_assessed():
    import flowio

    # FlowKit's 100715.fcs (FACSAria, 65,016 events): scatter and fluorescence, no Time channel.
    fd = flowio.FlowData(str(public_file("flowkit_fcs_misc/100715.fcs")))
    assert fd.time_index is None
    raw = fd.as_array()
    res = time_qc(None, {"FSC-A": raw[:, 0]}, None, CFG)
    assert not res.assessed and res.keep.shape == (65016,) and res.keep.all()
    assert res.checks[0].reason_code == "time_not_assessed"


@pytest.mark.public
def test_public_fcs2_time_without_timestep_is_not_assessed():
    import flowio

    # FlowCal's Data001.fcs (FACScan, FCS 2.0): a Time channel in ticks but no $TIMESTEP.
    fd = flowio.FlowData(str(public_file("flowcal_fcs_quirks/Data001.fcs")))
    assert "timestep" not in fd.text and fd.time_index is not None
    raw = fd.as_array()
    res = time_qc(raw[:, fd.time_index], {}, None, CFG)
    assert not res.assessed and res.keep.all()
    assert "no valid $TIMESTEP (None)" in res.checks[0].message


# ------------------------------------------------------------------------------------------------
# The sample cohort's flow-rate anomaly (data/sample, truth written by the generator)
# ------------------------------------------------------------------------------------------------


def test_sample_cohort_flow_anomaly_verdict_needs_time_qc():
    from nkflow.fcs import compensation, io, panel
    from nkflow.gating import evaluate, tree

    truth_tubes = pd.read_csv(ROOT / "data/sample/truth/tubes.tsv", sep="\t")
    truth_visits = pd.read_csv(ROOT / "data/sample/truth/visits.tsv", sep="\t")
    tube = truth_tubes[(truth_tubes.sample_id == "P08-D14") & (truth_tubes.tube == "nk")].iloc[0]
    visit = truth_visits[truth_visits.sample_id == "P08-D14"].iloc[0]

    s = io.read_fcs(ROOT / "data/sample" / tube.fcs_file)
    res = panel.resolve(panel.load_panel(ROOT / "config/panels/nk_v1.yaml"), s)
    index = {m: ch.index for m, ch in res.channels.items() if ch is not None}
    time_ch = res.channels["Time"]
    signals = {m: s.events[:, index[m]] for m in ("FSC-A", "SSC-A", "CD3", "CD56")}
    t = time_qc(s.events[:, time_ch.index], signals, s.timestep, CFG, time_pnn=time_ch.pnn)

    # The clog gap and the junk burst (truth windows) lie inside the removed stretch.
    (start, end), *rest = t.removed_ranges
    assert rest == []
    assert start <= tube.gap_start_s and end >= tube.burst_end_s
    assert tube_status(t.checks, CFG)[0] == "WARN"  # reportable, flagged

    gtree = tree.load_tree(ROOT / "config/gating/nk_v1.yaml")
    spill = compensation.spillover_for(s)

    def donor_nk_per_ul(keep):
        r = evaluate.gate_sample(
            gtree,
            s.events,
            index,
            spill=spill,
            keep=keep,
            channel_names=s.channel_names,
            ranges={m: s.channels[i].pnr for m, i in index.items()},
        )
        pct = 100.0 * r.count("nk") / r.count("live")
        return pct, visit.alc_per_ul * pct / 100 * visit.donor_chimerism_pct / 100

    pct_raw, donor_raw = donor_nk_per_ul(None)
    pct_qc, donor_qc = donor_nk_per_ul(t.keep)
    # Truth: NK 7 % of lymphocytes, 75.6 donor NK/uL, FAIL. Without time QC the junk makes it
    # ~13 % and > 100/uL: a wrong PASS. With it, the number is back within sampling error of
    # the truth (the ~190 good lymphocytes removed with the anomaly have a binomial SD of ~0.15
    # NK percentage points) and the verdict is right.
    assert visit.nk_pct_of_lymphocytes == 7 and visit.donor_nk_per_ul == pytest.approx(75.6)
    assert pct_raw > 12.5 and donor_raw > 100, (pct_raw, donor_raw)
    assert abs(pct_qc - 7.0) < 0.35 and donor_qc < 100, (pct_qc, donor_qc)


def test_an_unknown_severity_key_is_refused_naming_field_value_and_known_codes():
    for bad in ("gate_made_up", "no_spill"):
        with pytest.raises(ConfigError) as err:
            QcConfig.from_dict({"severity": {bad: "FAIL"}})
        msg = str(err.value)
        assert f"field 'qc.severity': found \"{bad}\"; expected one of " in msg
        assert all(code in msg for code in ("no_spillover", "fcs_unreadable", "gate_no_valley"))


def test_a_subset_gate_flag_key_is_accepted_and_takes_effect():
    cfg = QcConfig.from_dict({"severity": {"gate_subset_no_valley": "FAIL"}})
    assert cfg.severity_of("gate_subset_no_valley:nk_cd56bright.CD56") == "FAIL"
    assert cfg.severity_of("gate_subset_too_few_events:nk_cd56bright.CD56") == "WARN"
