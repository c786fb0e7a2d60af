"""The users file: who may correct gates and sign, and how their password is checked.

Contract
--------
``users.yaml`` holds one mapping per user::

    users:
      - id: jdoe                     # [a-z0-9._-], as recorded in the audit log
        name: Jane Doe               # printed name, shown on every signature
        role: reviewer               # reviewer (may correct and sign 'reviewed') or approver
        password: {scheme: scrypt, n: 16384, r: 8, p: 1, salt: <32 hex>, hash: <64 hex>}

Passwords are hashed with the standard library's ``hashlib.scrypt`` and a random 16-byte salt
per user; only the hash is stored, and it is compared in constant time
(``hmac.compare_digest``). :func:`add_user` writes the file atomically with mode 0600 and
appends a ``user`` event (without the hash) to the audit log. Every refusal raises
:class:`~nkflow.errors.ReviewError` naming the user and what to do.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nkflow.errors import ConfigError, ReviewError
from nkflow.review import audit

ROLES = ("reviewer", "approver")
#: which signature meanings each role may give
MEANINGS_BY_ROLE = {"reviewer": ("reviewed",), "approver": ("reviewed", "approved")}
ID_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
SCRYPT = {"n": 2**14, "r": 8, "p": 1}
MIN_PASSWORD = 8


@dataclass(frozen=True)
class User:
    """One user of the users file (the password hash stays in the file's mapping)."""

    id: str
    name: str
    role: str
    password: dict[str, Any]


def hash_password(password: str, salt: bytes | None = None) -> dict[str, Any]:
    """The stored form of a password: scrypt parameters, salt and hash (hex)."""
    salt = secrets.token_bytes(16) if salt is None else salt
    digest = hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=SCRYPT["n"], r=SCRYPT["r"], p=SCRYPT["p"], dklen=32
    )
    return {"scheme": "scrypt", **SCRYPT, "salt": salt.hex(), "hash": digest.hex()}


def password_matches(stored: dict[str, Any], password: str) -> bool:
    """True when ``password`` hashes to ``stored`` (constant-time comparison)."""
    if stored.get("scheme") != "scrypt":
        return False
    digest = hashlib.scrypt(
        password.encode("utf-8"),
        salt=bytes.fromhex(str(stored["salt"])),
        n=int(stored["n"]),
        r=int(stored["r"]),
        p=int(stored["p"]),
        dklen=32,
    )
    return hmac.compare_digest(digest.hex(), str(stored["hash"]))


def load_users(path: Path) -> dict[str, User]:
    """Users by id (an absent file: none).

    Raises
    ------
    ConfigError
        The file is not a users file (the field and the fix are named).
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        return {}
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc}); restore it from a backup") from None
    rows = doc.get("users") if isinstance(doc, dict) else None
    if not isinstance(rows, list):
        raise ConfigError(
            f"{path}: expected a mapping with a 'users' list; found {type(doc).__name__}"
        )
    out: dict[str, User] = {}
    for i, r in enumerate(rows, start=1):
        if not isinstance(r, dict) or not {"id", "name", "role", "password"} <= set(r):
            raise ConfigError(
                f"{path}: users entry {i}: expected keys id, name, role, password; "
                f"found {sorted(r) if isinstance(r, dict) else r!r}; add users with 'nkflow users add'"
            )
        out[str(r["id"])] = User(str(r["id"]), str(r["name"]), str(r["role"]), dict(r["password"]))
    return out


def _write_users(path: Path, users: dict[str, User]) -> None:
    import yaml

    doc = {
        "users": [
            {"id": u.id, "name": u.name, "role": u.role, "password": u.password}
            for u in sorted(users.values(), key=lambda u: u.id)
        ]
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write("# nkflow users: edit only with 'nkflow users add' (docs/review.md)\n")
        yaml.safe_dump(doc, fh, sort_keys=False)
    tmp.replace(path)


def add_user(
    users_path: Path,
    audit_path: Path,
    *,
    user_id: str,
    name: str,
    role: str,
    password: str,
    by: str = "admin",
) -> User:
    """Add a user (or replace an existing one's name, role and password) and log it.

    Raises
    ------
    ReviewError
        A malformed id, an empty name, an unknown role or a password shorter than
        :data:`MIN_PASSWORD` characters.
    """
    if not ID_RE.match(user_id):
        raise ReviewError(
            f"user id {user_id!r}: expected lower-case letters, digits, '.', '_' or '-' "
            "(1-64 characters, starting with a letter or digit), e.g. jdoe"
        )
    if not name.strip():
        raise ReviewError(f"user {user_id}: the printed name is empty; give --name 'First Last'")
    if role not in ROLES:
        raise ReviewError(f"user {user_id}: role {role!r} is not one of {', '.join(ROLES)}")
    if len(password) < MIN_PASSWORD:
        raise ReviewError(
            f"user {user_id}: the password has {len(password)} characters; at least "
            f"{MIN_PASSWORD} are required"
        )
    users = load_users(users_path)
    action = "changed" if user_id in users else "added"
    user = User(user_id, name.strip(), role, hash_password(password))
    users[user_id] = user
    _write_users(Path(users_path), users)
    audit.append(
        audit_path,
        "user",
        user=by,
        data={"id": user_id, "name": user.name, "role": role, "action": action},
    )
    return user


def authenticate(users: dict[str, User], user_id: str, password: str) -> User:
    """The user with this id and password.

    Raises
    ------
    ReviewError
        Unknown user or wrong password (the message does not say which part of the password
        is wrong, and names the users file for an unknown id).
    """
    user = users.get(user_id)
    if user is None:
        raise ReviewError(
            f"unknown user {user_id!r}: not in the users file; an administrator adds users with "
            "'nkflow users add'"
        )
    if not password_matches(user.password, password):
        raise ReviewError(f"wrong password for user {user_id!r}; nothing was signed or saved")
    return user
