"""Personal data inside events, sealed per data subject (crypto-shredding).

A sealed value is a string `sealed:v1:<subject id hex>:<base64url(nonce | AES-256-GCM ciphertext)>`,
encrypted under the subject's own key with the subject id as associated data. The key lives
outside the log (commands/personal.py); erasing the subject deletes it, and every value sealed
under it then reads as ERASED wherever it is shown. The log itself never changes, so its hash
chain (which covers the stored ciphertext) still verifies.

Pure: no I/O. The command side gives domain methods a `Sealer` for the subject concerned; readers
give `reveal` the subjects' keys they found (None for an erased subject).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import threading
from typing import Any, Callable, Iterable, Mapping, Protocol
from uuid import NAMESPACE_URL, UUID, uuid5

from cachetools import TTLCache
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from eventsourcing.domain import Aggregate, event

from domain.meta import EventMeta

PREFIX = "sealed:v1:"
ERASED = "[erased]"    # shown instead of a value whose subject was erased
SEALED = "[sealed]"    # shown by a reader that was given no key to open values with
KEY_BYTES = 32
_TOKEN = r"sealed:v1:([0-9a-f]{32}):([A-Za-z0-9_-]+={0,2})"
_SEALED = re.compile(f"^{_TOKEN}$")
_SEALED_IN = re.compile(_TOKEN)  # a sealed value quoted inside other text (a reason that repeats an earlier one)


class SubjectKind:
    ACCOUNT = "account"  # a person's or a service's account: username, client addresses
    BUYER = "buyer"      # a marketplace buyer of a shop, known by a random id in the log
    REASON = "reason"    # the free text of one command, owned by the account that wrote it
    ATTEMPT = "attempt"  # a failed login naming no account: the username typed and the client's address
    ALL = (ACCOUNT, BUYER, REASON, ATTEMPT)
    LOOKUP = "lookup"    # not a person: the tenant's key for lookup hashes (never erased)


class Sealer(Protocol):
    """What a domain method is given to keep personal data out of the log in the clear."""

    subject_id: UUID

    def seal(self, plaintext: str) -> str: ...

    def fingerprint(self, plaintext: str) -> str: ...


def is_sealed(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(PREFIX) and _SEALED.match(value) is not None


def subject_of(value: str) -> UUID | None:
    matched = _SEALED.match(value) if isinstance(value, str) else None
    return UUID(matched.group(1)) if matched else None


class SubjectSealer:
    """A subject's key at work: seals (random nonce) and fingerprints (keyed, deterministic: the
    same text gives the same fingerprint under the same key, and nothing once the key is gone)."""

    __slots__ = ("subject_id", "_key", "_aead", "_keyed")

    def __init__(self, subject_id: UUID, key: bytes):
        self.subject_id, self._key, self._aead = subject_id, key, AESGCM(key)
        self._keyed = hmac.new(key, b"fingerprint\x00", hashlib.sha256)  # copied per fingerprint: 10,000 a batch

    def seal(self, plaintext: str) -> str:
        nonce = os.urandom(12)
        sealed = nonce + self._aead.encrypt(nonce, plaintext.encode(), self.subject_id.bytes)
        return f"{PREFIX}{self.subject_id.hex}:{base64.urlsafe_b64encode(sealed).decode()}"

    def open(self, value: str) -> str | None:
        """The plaintext of a value sealed under this key (None: not one of this subject's)."""
        matched = _SEALED.match(value)
        if matched is None or matched.group(1) != self.subject_id.hex:
            return None
        raw = base64.urlsafe_b64decode(matched.group(2))
        try:
            return self._aead.decrypt(raw[:12], raw[12:], self.subject_id.bytes).decode()
        except (InvalidTag, ValueError):
            return None

    def fingerprint(self, plaintext: str) -> str:
        keyed = self._keyed.copy()
        keyed.update(plaintext.encode())
        return "fp:" + keyed.hexdigest()[:32]


def new_subject_key() -> bytes:
    return os.urandom(KEY_BYTES)


def sealed_subjects(value: Any) -> set[UUID]:
    """Every subject whose sealed values appear anywhere in this JSON-like value."""
    found: set[UUID] = set()
    _walk(value, lambda s: found.update(UUID(m.group(1)) for m in _SEALED_IN.finditer(s)) if PREFIX in s else None)
    return found


def reveal(value: Any, keys: Mapping[UUID, SubjectSealer | None] | None) -> Any:
    """The value with each sealed string opened: its plaintext, ERASED when its subject's key is
    gone (None in `keys`), SEALED when no keys were given at all (a reader without the server key)."""
    def opened(token: re.Match) -> str:
        if keys is None:
            return SEALED
        sealer = keys.get(UUID(token.group(1)))
        plain = sealer.open(token.group(0)) if sealer is not None else None
        return ERASED if plain is None else plain

    return _map(value, lambda s: _SEALED_IN.sub(opened, s) if PREFIX in s else s)


Unwrap = Callable[[UUID, bytes], bytes]  # (subject id, wrapped key) -> the subject's key


class KeyRing:
    """Subjects' sealers by id, from the wrapped keys `fetch` finds (one call per batch of ids,
    the I/O its owner supplies) and `unwrap` opens (None: no server key, values show SEALED),
    cached for `cache_seconds` (0: not cached): an erasure in this process forgets at once, one
    in another process is seen within that time."""

    def __init__(self, fetch: Callable[[list[UUID]], Mapping[UUID, bytes]], unwrap: Callable[[], Unwrap | None],
                 cache_seconds: float = 0):
        self._fetch, self._unwrap = fetch, unwrap
        self._cache: TTLCache = TTLCache(maxsize=20_000 if cache_seconds else 1, ttl=cache_seconds or 1e-9)
        self._lock = threading.Lock()

    def keys(self, subject_ids: Iterable[UUID]) -> dict[UUID, SubjectSealer | None] | None:
        """Sealers of these subjects (None: erased); None for all when there is no wrapping key."""
        unwrap = self._unwrap()
        if unwrap is None:
            return None
        wanted = set(subject_ids)
        with self._lock:
            found = {s: self._cache[s] for s in wanted if s in self._cache}
        missing = sorted(wanted - found.keys())
        if missing:
            wrapped = self._fetch(missing)
            loaded = {s: SubjectSealer(s, unwrap(s, wrapped[s])) if s in wrapped else None for s in missing}
            with self._lock:
                self._cache.update(loaded)
            found.update(loaded)
        return found

    def reveal(self, value: Any) -> Any:
        """`value` (events as described, an aggregate's state) with its sealed strings opened."""
        subjects = sealed_subjects(value)
        return reveal(value, self.keys(subjects)) if subjects else value

    def remember(self, sealer: SubjectSealer) -> None:
        """A key its owner just made (and committed)."""
        with self._lock:
            self._cache[sealer.subject_id] = sealer

    def forget(self, subject_ids: Iterable[UUID]) -> None:
        with self._lock:
            for s in subject_ids:
                self._cache.pop(s, None)


def _walk(value: Any, visit) -> None:
    if isinstance(value, str):
        visit(value)
    elif isinstance(value, dict):
        for k, v in value.items():
            _walk(k, visit)
            _walk(v, visit)
    elif isinstance(value, (list, tuple, set, frozenset)):
        for v in value:
            _walk(v, visit)


def _map(value: Any, change) -> Any:
    if isinstance(value, str):
        return change(value)
    if isinstance(value, dict):
        return {change(k) if isinstance(k, str) else k: _map(v, change) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_map(v, change) for v in value)
    return value


# -- the tombstone --------------------------------------------------------------------------
def lookup_subject_id(tenant_id: str) -> UUID:
    """The tenant's lookup key's row: lookup hashes survive a server key rotation (the row is
    re-wrapped like any subject key; hashes keyed by the server key itself would all change)."""
    return uuid5(NAMESPACE_URL, f"https://etsypro.dev/privacy/lookup/{tenant_id}")


def privacy_stream_id(tenant_id: str) -> UUID:
    """A tenant's privacy stream: derived, so every process finds the same aggregate."""
    return uuid5(NAMESPACE_URL, f"https://etsypro.dev/privacy/tenant/{tenant_id}")


class Privacy(Aggregate):
    """A tenant's record of erasures: which subject (id and kind) was erased, never what it held."""

    @event("Opened")
    def __init__(self, tenant_id: str, meta: EventMeta):
        self.tenant_id = tenant_id
        self.erased: int = 0

    @staticmethod
    def create_id(tenant_id: str, meta: EventMeta) -> UUID:
        return privacy_stream_id(tenant_id)

    def erase(self, subjects: Iterable[tuple[UUID, str]], meta: EventMeta) -> None:
        for subject_id, kind in subjects:
            if kind not in SubjectKind.ALL:
                raise ValueError(f"unknown subject kind {kind!r}")
            self._subject_erased(subject_id=subject_id, kind=kind, meta=meta)

    @event("SubjectErased")
    def _subject_erased(self, subject_id: UUID, kind: str, meta: EventMeta) -> None:
        self.erased += 1
