import pandas as pd

from nkflow.tables import format_frame, read_tsv, write_tsv


def test_fixed_format_missing_is_empty_and_counts_exact():
    df = pd.DataFrame(
        {
            "population": ["nk", "treg"],
            "events": [5_000_000.0, None],
            "pct": [12.345678901234, None],
            "ok": [True, False],
        }
    )
    text = format_frame(df)
    assert text == "population\tevents\tpct\tok\nnk\t5000000\t12.3456789\ttrue\ntreg\t\t\tfalse\n"


def test_round_trip_and_identical_bytes(tmp_path):
    df = pd.DataFrame({"a": ["x", "y"], "b": [0.1, 2.0 / 3.0]})
    write_tsv(df, tmp_path / "one.tsv")
    write_tsv(read_tsv(tmp_path / "one.tsv"), tmp_path / "two.tsv")
    assert (tmp_path / "one.tsv").read_bytes() == (tmp_path / "two.tsv").read_bytes()
    assert not list(tmp_path.glob(".*tmp*")), "temporary file left behind"
