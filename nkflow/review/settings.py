"""The ``review:`` block of a validated configuration as a frozen settings object.

Contract: :func:`review_settings` takes a configuration returned by
:func:`nkflow.config.validate_config` (defaults already filled in from the schema) and never
re-defaults; paths are resolved against ``base_dir`` (where snakemake runs). A review path that
lies inside the results directory is a :class:`~nkflow.errors.ConfigError`: the review app must
never write into a run's results, and a run must never overwrite a reviewer's files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nkflow.errors import ConfigError


@dataclass(frozen=True)
class ReviewSettings:
    """Where review files live and the rules signatures follow."""

    overrides: Path
    audit_log: Path
    users: Path
    two_person_rule: bool
    session_minutes: int
    results: Path


def review_settings(config: dict[str, Any], base_dir: Path | None = None) -> ReviewSettings:
    """Build :class:`ReviewSettings` from a validated configuration.

    Raises
    ------
    ConfigError
        When a review path lies inside the results directory.
    """
    base = Path.cwd() if base_dir is None else Path(base_dir)
    block = config["review"]
    results = (base / str(config["results"])).resolve()
    paths = {}
    for key in ("overrides", "audit_log", "users"):
        p = (base / str(block[key])).resolve()
        if p == results or results in p.parents:
            raise ConfigError(
                f"config: review.{key}: {block[key]!r} lies inside the results directory "
                f"{config['results']!r}; expected a path outside it (the review app "
                "never writes into a run's results, and a rerun could remove it); fix: use the "
                f"default review/{Path(str(block[key])).name} or another directory"
            )
        paths[key] = p
    return ReviewSettings(
        overrides=paths["overrides"],
        audit_log=paths["audit_log"],
        users=paths["users"],
        two_person_rule=bool(block["two_person_rule"]),
        session_minutes=int(block["session_minutes"]),
        results=results,
    )
