"""Deterministic reading and writing of TSV tables.

Contract: :func:`write_tsv` gives identical bytes for identical frames: tab-separated, UTF-8,
``\\n`` line endings, a header row, missing values as empty cells (never ``0`` or ``nan``),
floats formatted with :data:`FLOAT_FORMAT` (10 significant digits, so event counts up to
10^10 stay exact), booleans as ``true``/``false``. The column order is the frame's; callers
fix it. Writes go to a temporary file that is renamed into place, so an interrupted job never
leaves a half-written table.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

FLOAT_FORMAT = "%.10g"


def format_frame(df: pd.DataFrame) -> str:
    """Return the TSV text of ``df`` in nkflow's fixed format."""
    import pandas as pd

    out = df.copy()
    for col in out.columns:
        if pd.api.types.is_bool_dtype(out[col]):
            out[col] = out[col].map({True: "true", False: "false"})
        elif out[col].dtype == object:
            out[col] = out[col].map(
                lambda v: ("true" if v else "false") if isinstance(v, bool) else v
            )
    return out.to_csv(
        sep="\t", index=False, na_rep="", float_format=FLOAT_FORMAT, lineterminator="\n"
    )


def write_tsv(df: pd.DataFrame, path: Path) -> None:
    """Write ``df`` atomically to ``path`` in nkflow's fixed TSV format."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(format_frame(df), encoding="utf-8")
    os.replace(tmp, path)


def read_tsv(path: Path, text: bool = False) -> pd.DataFrame:
    """Read a TSV written by :func:`write_tsv` (empty cells become missing values).

    With ``text``, every cell is the string as written (an empty cell is ``""``), for
    comparing tables as text.
    """
    import pandas as pd

    if text:
        return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, na_filter=False)
    return pd.read_csv(path, sep="\t", dtype=None, keep_default_na=False, na_values=[""])
