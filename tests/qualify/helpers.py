"""Installations to qualify: a fresh clone of this repository (a development checkout), a
wheel-style install (the package with a dist-info RECORD), and a small reference set of
generated FCS files. ``nkflow qualify`` runs on them as a subprocess, importing that copy."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from tests.conftest import ROOT
from tests.generated import generator, write_tube

QUALIFY_TIMEOUT_S = 900


def fresh_clone(dest: Path) -> Path:
    """``git clone`` of this repository's HEAD (committed files only, as CI has them)."""
    subprocess.run(["git", "clone", "-q", str(ROOT), str(dest)], check=True)
    return dest


def wheel_install(dest: Path) -> Path:
    """The package laid out as an installer lays out a wheel: ``dest/nkflow/`` and
    ``dest/nkflow-<v>.dist-info/`` with METADATA and a RECORD of sha256 per file."""
    pkg = dest / "nkflow"
    shutil.copytree(ROOT / "nkflow", pkg, ignore=shutil.ignore_patterns("__pycache__"))
    version = metadata.version("nkflow")
    info = dest / f"nkflow-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(metadata.distribution("nkflow").read_text("METADATA") or "")
    lines = []
    for path in sorted(p for p in pkg.rglob("*") if p.is_file()):
        data = path.read_bytes()
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        lines.append(f"{path.relative_to(dest)},sha256={digest},{len(data)}")
    lines += [f"{info.name}/METADATA,,", f"{info.name}/RECORD,,"]
    (info / "RECORD").write_text("\n".join(lines) + "\n")
    return dest


def run_qualify(
    package_root: Path, out: Path, *args: str, cwd: Path | None = None
) -> tuple[int, dict[str, Any], str]:
    """Run ``nkflow qualify --out OUT ARGS`` importing the package under ``package_root``;
    return (exit status, qualification.json, stdout + stderr)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(package_root)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    proc = subprocess.run(
        [sys.executable, "-m", "nkflow.cli", "qualify", "--out", str(out), *args],
        cwd=cwd or package_root,
        env=env,
        capture_output=True,
        text=True,
        timeout=QUALIFY_TIMEOUT_S,
        check=False,
    )
    js = out / "qualification.json"
    doc = json.loads(js.read_text()) if js.is_file() else {}
    return proc.returncode, doc, proc.stdout + proc.stderr


def criteria(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Criterion id -> criterion, over every check of a pack."""
    return {c["id"]: c for ch in doc["checks"] for c in ch["criteria"]}


def reference_set(
    dest: Path,
    *,
    n: int = 3,
    style: str = "bd_fortessa",
    half_width_pct: float = 3.0,
    cv_max_pct: float = 10.0,
) -> tuple[Path, list[float]]:
    """``n`` replicate NK tubes of one generated draw (new random acquisitions of the same
    composition) written as FCS files under ``dest``, and a reference YAML listing them with
    sha256, the generator's true NK % of live lymphocytes +/- ``half_width_pct`` % (relative) as
    acceptance range, and a replicate CV limit. Returns (YAML path, true NK % per file)."""
    gen = generator()
    dest.mkdir(parents=True, exist_ok=True)
    st = gen.STYLES[style]
    visit = gen.Visit(
        day=14, nk_pct=20.0, bright_frac=0.3, treg_pct_cd4=5.0, alc="900",
        chimerism={"CD56": 90.0}, n_nk=30000,
    )  # fmt: skip
    files, truths = [], []
    for k in range(n):
        res = gen.make_tube(np.random.default_rng(100 + k), st, "nk", visit)
        path = write_tube(st, "nk", res, dest / f"REF-{k + 1}_nk.fcs")
        truth = 100.0 * res.truth["nk"] / res.truth["live"]
        truths.append(truth)
        files.append(
            {
                "id": f"ref{k + 1}",
                "fcs": path.name,
                "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                "panel": "nk_v1",
                "gating": "nk_v1",
                "expected": [
                    {
                        "population": "nk",
                        "measure": "pct_of_lymphocytes",
                        "value": round(truth, 3),
                        "range": [
                            truth * (1 - half_width_pct / 100),
                            truth * (1 + half_width_pct / 100),
                        ],
                    }
                ],
            }
        )
    doc = {
        "name": "generated reference set",
        "files": files,
        "replicates": [
            {
                "id": "rep",
                "files": [f["id"] for f in files],
                "populations": [
                    {"population": "nk", "measure": "pct_of_lymphocytes", "cv_max_pct": cv_max_pct}
                ],
            }
        ],
    }
    ref = dest / "reference.yaml"
    ref.write_text(yaml.safe_dump(doc, sort_keys=False))
    return ref, truths
