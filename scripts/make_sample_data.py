#!/usr/bin/env python
"""Generate the synthetic NK-therapy cohort (``data/sample`` by default) with known truth.

A thin command over :mod:`nkflow.synthetic`, where the generator lives (its docstring is the
contract): ``nkflow qualify`` generates its truth cohort from the installed package, so the
generator ships with it.
"""

from __future__ import annotations

import sys
from pathlib import Path

# this checkout's package first, whatever the environment has installed
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nkflow.synthetic import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
