"""environment.yml (conda users) and pyproject.toml (pip, CI) must list the same packages."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
ALIASES = {"pyyaml": "pyyaml", "scikit-learn": "scikit-learn"}


def _split(spec: str) -> tuple[str, str]:
    m = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", spec)
    assert m, spec
    return m.group(1).lower().replace("_", "-"), m.group(2).replace(" ", "")


def _pyproject() -> dict[str, str]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return dict(_split(s) for s in data["project"]["dependencies"])


def _environment() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    out = {}
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            for pip_dep in dep["pip"]:
                if not pip_dep.startswith("-e"):
                    name, ver = _split(pip_dep)
                    out[name] = ver
        else:
            name, ver = _split(dep)
            if name in ("python", "pip"):
                continue
            out[name] = ver.replace("=", "==", 1) if re.match(r"^=[^=]", ver) else ver
    return out


def test_same_packages_and_pins():
    py = _pyproject()
    env = _environment()
    assert sorted(py) == sorted(env), (
        f"only in pyproject: {sorted(set(py) - set(env))}; only in environment.yml: {sorted(set(env) - set(py))}"
    )
    mismatched = {k: (py[k], env[k]) for k in py if py[k] != env[k]}
    assert mismatched == {}


def test_split_is_strict():
    # the parser used above must see a difference in versions
    assert _split("numpy>=2.0") != _split("numpy>=1.26")
