"""Installation check: versions, the installed files and the configuration's digest.

The versions are Python's and the dependencies'; the installed files are compared with the record
made at install time.

Contract: :func:`check_installation` returns one :class:`~nkflow.qualify._model.CheckResult`.
Which record the files are compared with is stated in the evidence: a wheel's ``RECORD``
(sha256 per file, written by the installer) when the imported package is the one that
``RECORD`` lists, otherwise the git commit of the development checkout holding the package
(its tracked package, config and workflow trees). With neither, the criterion is not run.
"""

from __future__ import annotations

import base64
import hashlib
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from nkflow.provenance import sha256_file
from nkflow.qualify._context import Context
from nkflow.qualify._model import CheckResult, Criterion, evidence, judged, not_run

#: the trees of a development checkout whose tracked files make up an installation
CHECKOUT_TREES = ("nkflow", "config", "workflow", "Snakefile", "pyproject.toml")

NOT_INSTALLED = "not installed"
FILES_CRITERION = "every installed nkflow file is byte-identical to the install-time record"


def package_dir() -> Path:
    """Directory of the imported ``nkflow`` package."""
    import nkflow

    return Path(nkflow.__file__).resolve().parent


def checkout_root() -> Path | None:
    """The git checkout holding the imported package (a development install), else None."""
    root = package_dir().parent
    if not (root / "Snakefile").is_file():
        return None
    try:
        top = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--show-toplevel"],
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError:
        return None
    if top.returncode != 0 or Path(top.stdout.strip()).resolve() != root:
        return None
    return root


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _record_entries(pkg: Path) -> list[tuple[Path, str, str]] | None:
    """(file, RECORD path, sha256 hex) of the RECORD entries inside ``pkg``; None if none."""
    try:
        dist = metadata.distribution("nkflow")
    except metadata.PackageNotFoundError:
        return None
    out = []
    for f in dist.files or []:
        if f.hash is None or f.hash.mode != "sha256":
            continue
        path = Path(str(dist.locate_file(f))).resolve()
        if path == pkg or pkg in path.parents:
            digest = base64.urlsafe_b64decode(f.hash.value + "=" * (-len(f.hash.value) % 4))
            out.append((path, str(f), digest.hex()))
    return out or None


def _compare_record(pkg: Path, entries: list[tuple[Path, str, str]]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    listed = set()
    for path, name, recorded in sorted(entries, key=lambda e: e[1]):
        listed.add(path)
        if not path.is_file():
            rows.append((name, "", recorded, "missing"))
            continue
        now = sha256_file(path)
        rows.append((name, now, recorded, "same" if now == recorded else "modified"))
    for path in sorted(pkg.rglob("*")):
        if path.is_file() and path not in listed and "__pycache__" not in path.parts:
            rows.append((str(path.relative_to(pkg.parent)), sha256_file(path), "", "not in RECORD"))
    return rows


def _git(root: Path, *args: str) -> bytes:
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, check=True).stdout


def _compare_git(root: Path) -> tuple[str, list[tuple[str, ...]]]:
    """(HEAD commit, rows of path, sha256 now, git blob now, git blob at HEAD, status)."""
    commit = _git(root, "rev-parse", "HEAD").decode().strip()
    rows: list[tuple[str, ...]] = []
    for entry in _git(root, "ls-tree", "-r", "-z", "HEAD", "--", *CHECKOUT_TREES).split(b"\0"):
        if not entry:
            continue
        meta, name = entry.decode().split("\t", 1)
        mode, _kind, blob = meta.split()
        path = root / name
        if mode == "120000":
            data = str(Path(path).readlink()).encode() if path.is_symlink() else None
        else:
            data = path.read_bytes() if path.is_file() and not path.is_symlink() else None
        if data is None:
            rows.append((name, "", "", blob, "missing"))
            continue
        now = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        rows.append((name, _sha256(data), now, blob, "same" if now == blob else "modified"))
    others = _git(
        root, "ls-files", "-z", "--others", "--exclude-standard", "--", *CHECKOUT_TREES
    ).split(b"\0")
    for name in sorted(o.decode() for o in others if o):
        data = (root / name).read_bytes()
        # a file added to the package can be imported; one added beside the shipped config
        # (the lab's own gate tree) is not the installation: the config check hashes it
        status = "untracked" if name.startswith("nkflow/") else "untracked (not compared)"
        rows.append((name, _sha256(data), "", "", status))
    return commit, rows


def files_criterion() -> tuple[Criterion, list[Any]]:
    """The installed-files criterion and its evidence."""
    pkg = package_dir()
    cid = "installation.files"
    entries = _record_entries(pkg)
    if entries is not None:
        rows = _compare_record(pkg, entries)
        bad = [r for r in rows if r[3] != "same"]
        crit = judged(
            cid,
            FILES_CRITERION,
            "0 files modified, missing or added (wheel RECORD)",
            f"{len(rows) - len(bad)}/{len(rows)} files same as RECORD",
            not bad,
            "; ".join(f"{r[0]} {r[3]}" for r in bad),
        )
        ev = evidence(
            "Installed files against the wheel's RECORD",
            ["file", "sha256 now", "sha256 in RECORD", "status"],
            rows,
            note="record: the RECORD file the installer wrote (wheel install)",
        )
        return crit, [ev]
    root = checkout_root()
    if root is None:
        return (
            not_run(
                cid,
                FILES_CRITERION,
                "0 files modified, missing or added",
                f"the package at {pkg} is neither listed in a wheel RECORD nor in a git "
                "checkout: no install-time record to compare with",
            ),
            [],
        )
    commit, rows = _compare_git(root)
    bad = [r for r in rows if r[4] not in ("same", "untracked (not compared)")]
    crit = judged(
        cid,
        FILES_CRITERION,
        f"0 tracked files of {', '.join(CHECKOUT_TREES)} modified or missing, 0 untracked "
        "files in nkflow/ (git)",
        f"{sum(r[4] == 'same' for r in rows)}/{sum(r[4] != 'untracked (not compared)' for r in rows)} "
        f"files same as commit {commit[:12]}",
        not bad,
        "; ".join(f"{r[0]} {r[4]}" for r in bad),
    )
    ev = evidence(
        f"Checkout files against git commit {commit}",
        ["file", "sha256 now", "git blob now", "git blob at HEAD", "status"],
        rows,
        note=(
            "record: the git commit of the development checkout the package is imported from "
            f"(no wheel RECORD lists it); trees compared: {', '.join(CHECKOUT_TREES)}"
        ),
    )
    return crit, [ev]


def _installed_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return NOT_INSTALLED


def _dependency_rows() -> list[tuple[str, str, str, bool]]:
    from packaging.requirements import Requirement

    try:
        requires = metadata.requires("nkflow") or []
    except metadata.PackageNotFoundError:
        requires = []
    rows = []
    for text in requires:
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue  # an extra (test tools), not a dependency of the package
        have = _installed_version(req.name)
        ok = have != NOT_INSTALLED and req.specifier.contains(have, prereleases=True)
        rows.append((req.name, str(req.specifier) or "any", have, ok))
    return rows


def _config_files(cfg: dict[str, Any]) -> list[tuple[str, str]]:
    """(role, path) of every file the configuration names, except the patient sheets."""
    out = [(f"panel {k}", v) for k, v in sorted(cfg.get("panels", {}).items())]
    out += [(f"gate tree {k}", v) for k, v in sorted(cfg.get("gating", {}).items())]
    for name, entries in sorted(cfg.get("gating_by_instrument", {}).items()):
        out += [(f"gate tree {name} for {e['cytometer']}", e["tree"]) for e in entries]
    out += [(f"spillover {k}", v) for k, v in sorted(cfg.get("spillover", {}).items())]
    ep = cfg.get("endpoints", {})
    for key in ("chimerism_fractions", "response_vocab"):
        if ep.get(key):
            out.append((f"endpoints.{key}", ep[key]))
    return out


def config_criterion(config_path: Path, base_dir: Path) -> tuple[Criterion, list[Any]]:
    """The configuration validates and every panel, tree and vocabulary it names loads."""
    from nkflow import gating
    from nkflow.config import config_digest, load_config
    from nkflow.errors import NkflowError
    from nkflow.fcs import panel

    cid = "installation.config"
    text = "the configuration validates and every panel and gate tree it names loads"
    limit = "no configuration error"
    try:
        cfg = load_config(config_path)
        rows = []
        for role, rel in _config_files(cfg):
            path = base_dir / rel
            if not path.is_file():
                raise NkflowError(f"config: {role}: file '{rel}' not found (looked in {path})")
            if role.startswith("panel"):
                panel.load_panel(path)
            elif role.startswith("gate tree"):
                gating.load_tree(path)
            rows.append((role, rel, sha256_file(path)))
    except NkflowError as exc:
        return judged(cid, text, limit, "configuration error", False, str(exc)), []
    digest = config_digest(cfg)
    ev = evidence(
        "Configuration",
        ["item", "path", "sha256"],
        [("config file", str(config_path), sha256_file(config_path)),
         ("config digest (sha256 of the validated canonical JSON)", "", digest), *rows],
        note=f"paths inside the config are relative to {base_dir.name or base_dir}/ "
        "(where nkflow qualify ran), as for snakemake and nkflow validate",
    )  # fmt: skip
    return judged(cid, text, limit, f"valid; digest {digest[:12]}", True), [ev]


def check_installation(ctx: Context) -> CheckResult:
    """Installation qualification (IQ): what is installed, and is it what was installed."""
    env_rows = [
        ("nkflow", _installed_version("nkflow")),
        ("nkflow package directory", str(package_dir())),
        ("Python", f"{platform.python_implementation()} {platform.python_version()}"),
        ("Python executable", sys.executable),
        ("platform", platform.platform()),
        ("machine", platform.machine()),
    ]
    deps = _dependency_rows()
    bad = [r for r in deps if not r[3]]
    dep_crit = judged(
        "installation.dependencies",
        "every dependency nkflow declares is installed at a version it accepts",
        "all declared requirements satisfied",
        f"{len(deps) - len(bad)}/{len(deps)} satisfied",
        bool(deps) and not bad,
        "; ".join(f"{n} {have} (requires {spec})" for n, spec, have, _ in bad)
        or ("no requirements found in nkflow's metadata" if not deps else ""),
    )
    files_crit, files_ev = files_criterion()
    cfg_crit, cfg_ev = config_criterion(ctx.config_path, ctx.base_dir)
    every = sorted(
        {(d.metadata["Name"], d.version) for d in metadata.distributions() if d.metadata["Name"]},
        key=lambda r: r[0].lower(),
    )
    return CheckResult(
        id="installation",
        title="Installation",
        description=(
            "Python, platform and every dependency version; the installed nkflow files "
            "against the record made when they were installed; the configuration's digest."
        ),
        criteria=(dep_crit, files_crit, cfg_crit),
        evidence=(
            evidence("Environment", ["item", "value"], env_rows),
            evidence(
                "Declared dependencies", ["package", "required", "installed", "satisfied"], deps
            ),
            *files_ev,
            *cfg_ev,
            evidence("Every distribution in this environment", ["package", "version"], every),
        ),
    )
