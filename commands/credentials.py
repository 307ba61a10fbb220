"""How secrets are protected: password hashing, server keys, encryption at rest, TOTP.

One server secret (ETSYPRO_SECRET_KEY) is stretched into a separate key per purpose, so a key
used to sign access tokens is never the key that encrypts TOTP secrets.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets as random_source
import time
from dataclasses import dataclass
from functools import cached_property
from operator import attrgetter
from typing import Callable

import pyotp
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from passlib.context import CryptContext

# -- passwords ------------------------------------------------------------------------------
# argon2id with OWASP's baseline (19 MiB, 2 passes, 1 lane): slow enough to bound online guessing
# per core, quick enough for logins (docs/performance.md, "Auth"). Hashes carry their own
# parameters; a hash made with weaker ones is upgraded at the next successful login.
ARGON2 = {"type": "ID", "memory_cost": 19456, "time_cost": 2, "parallelism": 1}
PASSWORDS = CryptContext(schemes=["argon2"], **{f"argon2__{k}": v for k, v in ARGON2.items()})


def hash_password(password: str) -> str:
    return PASSWORDS.hash(password)


def verify_password(password: str, stored_hash: str) -> tuple[bool, str | None]:
    """(matches, a fresh hash when the stored one uses outdated parameters)."""
    return PASSWORDS.verify_and_update(password, stored_hash)


@dataclass
class _Dummy:
    hash: str | None = None


_dummy = _Dummy()


def waste_a_verify(password: str) -> None:
    """Spend what a real verify costs, so an unknown user answers as slowly as a wrong password."""
    if _dummy.hash is None:
        _dummy.hash = hash_password(random_source.token_urlsafe(16))
    PASSWORDS.verify(password, _dummy.hash)


# -- server keys ----------------------------------------------------------------------------
MIN_SECRET_CHARS = 32


KeyOf = Callable[["Secrets"], bytes]  # which of a Secrets' derived keys a sealed value uses
ENCRYPTION: KeyOf = attrgetter("_encryption_key")
SUBJECT_WRAPPING: KeyOf = attrgetter("subject_wrapping_key")


class Secrets:
    """Per-purpose keys derived (HKDF-SHA256) from the one server secret.

    During a key rotation (docs/operations.md, "Rotating the server key") it also holds the
    previous secret: what was sealed or digested under it still opens and matches, while
    everything new (ciphertexts, digests, access tokens, cursors) uses the current one only.
    Access tokens and cursors signed with the previous key are refused: they are short-lived and
    clients get new ones (a refresh token digested under the previous key works once)."""

    def __init__(self, secret: str | bytes, previous: str | bytes | None = None):
        self._raw = _checked(secret, "ETSYPRO_SECRET_KEY")
        self.previous = None if previous is None else Secrets(_checked(previous, "ETSYPRO_SECRET_KEY_PREVIOUS"))

    @classmethod
    def ephemeral(cls) -> Secrets:
        """A random secret for this process only (tests, benchmarks): nothing survives a restart."""
        return cls(random_source.token_bytes(32))

    def same_key(self, other: Secrets) -> bool:
        return hmac.compare_digest(self._raw, other._raw)

    def _derive(self, purpose: bytes) -> bytes:
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"etsypro " + purpose).derive(self._raw)

    @cached_property
    def jwt_key(self) -> bytes:
        return self._derive(b"access-token hs256")

    @cached_property
    def _encryption_key(self) -> bytes:
        return self._derive(b"totp aes-gcm")

    @cached_property
    def _digest_key(self) -> bytes:
        return self._derive(b"opaque-secret digest")

    @cached_property
    def cursor_key(self) -> bytes:
        """Signs paging cursors: a client can hand back only a cursor the server gave it."""
        return self._derive(b"paging-cursor hmac")

    @cached_property
    def subject_wrapping_key(self) -> bytes:
        """Wraps the per-subject keys of personal data (commands/personal.py, migrations/0960)."""
        return self._derive(b"subject-key aes-gcm wrap")

    def encrypt(self, plaintext: bytes, bound_to: bytes, key_of: KeyOf = ENCRYPTION) -> bytes:
        """AES-256-GCM; `bound_to` (the account id) is authenticated, so a ciphertext copied to
        another account's row does not decrypt. `key_of` picks the purpose's key (default: TOTP
        secrets' and marketplace tokens')."""
        nonce = os.urandom(12)
        return nonce + AESGCM(key_of(self)).encrypt(nonce, plaintext, bound_to)

    def decrypt(self, ciphertext: bytes, bound_to: bytes, key_of: KeyOf = ENCRYPTION) -> bytes:
        """Under the current key, else the previous one (cryptography's InvalidTag when neither)."""
        try:
            return _opened(key_of(self), ciphertext, bound_to)
        except InvalidTag:
            if self.previous is None:
                raise
            return _opened(key_of(self.previous), ciphertext, bound_to)

    def reencrypt(self, ciphertext: bytes, bound_to: bytes, key_of: KeyOf = ENCRYPTION) -> bytes | None:
        """The ciphertext sealed under the current key, or None when it already is (InvalidTag
        when neither key opens it): what `etsypro rotate-secret` does to each sealed column."""
        try:
            _opened(key_of(self), ciphertext, bound_to)
            return None
        except InvalidTag:
            if self.previous is None:
                raise
        return self.encrypt(_opened(key_of(self.previous), ciphertext, bound_to), bound_to, key_of)

    def digest(self, opaque_secret: str) -> bytes:
        """Keyed hash of a high-entropy secret (refresh token, API key, recovery code): a stolen
        table cannot be checked against guesses without the server key."""
        return hmac.new(self._digest_key, opaque_secret.encode(), hashlib.sha256).digest()

    def digests(self, opaque_secret: str) -> list[bytes]:
        """The digests a stored one may be (current key first): a lookup matches `= ANY(...)`.
        Digests cannot be re-keyed without the secret, so they match under the previous key until
        it is dropped (or until a use re-digests them)."""
        return [self.digest(opaque_secret)] + ([] if self.previous is None else [self.previous.digest(opaque_secret)])


def _opened(key: bytes, ciphertext: bytes, bound_to: bytes) -> bytes:
    return AESGCM(key).decrypt(ciphertext[:12], ciphertext[12:], bound_to)


def _checked(secret: str | bytes, variable: str) -> bytes:
    raw = secret.encode() if isinstance(secret, str) else secret
    if len(raw) < MIN_SECRET_CHARS:
        raise ValueError(f"{variable} must be at least {MIN_SECRET_CHARS} characters")
    return raw


def new_token(prefix: str, nbytes: int = 32) -> str:
    return f"{prefix}_{random_source.token_urlsafe(nbytes)}"


# -- TOTP -----------------------------------------------------------------------------------
TOTP_STEP = 30
TOTP_WINDOW = 1  # accept the previous and next step too: clocks drift, people type slowly


def new_totp_secret() -> str:
    return pyotp.random_base32()


def totp_uri(secret: str, username: str, issuer: str = "EtsyPro Pricing") -> str:
    return pyotp.TOTP(secret, interval=TOTP_STEP).provisioning_uri(name=username, issuer_name=issuer)


def matching_totp_step(secret: str, code: str, now: float | None = None) -> int | None:
    """The 30 s step (within ±1 of now) whose code this is, or None. The caller refuses steps at
    or before the last one used: that is the replay protection."""
    code = code.strip().replace(" ", "")
    if not (code.isascii() and code.isdigit() and len(code) == 6):  # isdigit() alone takes other scripts' digits
        return None
    now = time.time() if now is None else now
    totp = pyotp.TOTP(secret, interval=TOTP_STEP)
    current = int(now // TOTP_STEP)
    for step in range(current - TOTP_WINDOW, current + TOTP_WINDOW + 1):
        if hmac.compare_digest(totp.generate_otp(step), code):
            return step
    return None


def new_recovery_codes(count: int = 10) -> list[str]:
    """Ten single-use codes like 'k7qm-2xwp-9fhd' (60 bits each)."""
    alphabet = "23456789abcdefghjkmnpqrstuvwxyz"
    return ["-".join("".join(random_source.choice(alphabet) for _ in range(4)) for _ in range(3))
            for _ in range(count)]


def normalize_recovery_code(code: str) -> str:
    return code.strip().lower().replace(" ", "")
