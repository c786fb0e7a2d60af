"""Run `snakemake --lint` and fail on every lint except the per-rule conda/container one.

nkflow runs in one environment (pyproject.toml / environment.yml), so "Specify a conda
environment or container for each rule" is exempted on purpose; any other lint fails.
"""

from __future__ import annotations

import re
import subprocess
import sys

EXEMPT = {"Specify a conda environment or container for each rule."}


def main() -> int:
    proc = subprocess.run(
        ["snakemake", "--lint", "--cores", "1"], capture_output=True, text=True, check=False
    )
    text = proc.stdout + proc.stderr
    if "Lints for" not in text and proc.returncode != 0:
        sys.stderr.write(text)
        return proc.returncode
    found = []
    rule = None
    for line in text.splitlines():
        m = re.match(r"^Lints for (.*):$", line)
        if m:
            rule = m.group(1)
            continue
        m = re.match(r"^\s+\* (.*):$", line)
        if m and m.group(1) not in EXEMPT:
            found.append(f"{rule}: {m.group(1)}")
    for item in found:
        sys.stderr.write(f"snakemake lint: {item}\n")
    if found:
        return 1
    sys.stdout.write("snakemake --lint: clean (per-rule conda/container lint exempted)\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
