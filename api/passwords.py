"""Password policy: length and a list of common and breached passwords, no composition rules
(NIST SP 800-63B). Checked where a password is chosen: account creation and password change."""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

from domain.errors import InvalidValue

MIN_LENGTH = 10
MAX_LENGTH = 128  # argon2 takes any length; this bounds the work a request can ask for
LIST_FILE = Path(__file__).with_name("common_passwords.txt")


@lru_cache(maxsize=1)
def common_passwords() -> frozenset[str]:
    lines = LIST_FILE.read_text(encoding="utf-8").splitlines()
    return frozenset(line for line in lines if line and not line.startswith("#"))


def check_password(password: str, username: str | None = None, field: str = "password") -> None:
    """Refuse (InvalidValue naming the field) a password that is too short, too long, common,
    a common one with digits or symbols added, one repeated character, or the username."""
    if len(password) < MIN_LENGTH:
        raise InvalidValue(field, f"must be at least {MIN_LENGTH} characters (a few words make a good one)")
    if len(password) > MAX_LENGTH:
        raise InvalidValue(field, f"must be at most {MAX_LENGTH} characters")
    lowered = password.lower()
    stem = re.sub(r"[\d\W_]+$", "", lowered)  # "Password2024!" -> "password"
    if lowered in common_passwords() or stem in common_passwords():
        raise InvalidValue(field, "is too common: it appears in lists of breached passwords")
    if len(set(lowered)) < 4:
        raise InvalidValue(field, "uses too few different characters")
    if username and username.lower() in lowered:
        raise InvalidValue(field, "must not contain the username")
