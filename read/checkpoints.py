"""Signed checkpoints of the hash chain's head: what lets an auditor catch a log that was cut short
or edited and re-chained, which the chain alone cannot show (both leave a valid, shorter or
different, chain; read/audit.py verify_chain).

A checkpoint says "at position N the chain's hash was H, at time T", signed with an Ed25519 key
the database does not hold (a file on the publishing host). Kept outside the database, it is
checked later against the chain: the entry ending at N must still exist (else the log was cut or
its links redrawn) with the same hash (else everything up to N was re-chained). The signature
makes a checkpoint that someone with database access wrote themselves worthless without the key.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from psycopg.rows import tuple_row

from read.audit import GENESIS

FORMAT = "etsypro-chain-checkpoint/1"


class BadCheckpoint(ValueError):
    """Not a checkpoint, or not one signed by the given key."""


@dataclass(frozen=True)
class Checkpoint:
    position: int   # the last position the chain entry covers (0: an empty log)
    head: str       # that entry's hash, hex
    at: str         # when it was read, ISO 8601 UTC
    key_id: str     # which key signed it: the first 16 bytes of sha256(public key), hex

    def payload(self) -> bytes:
        """The signed bytes: canonical JSON of the fields and the format."""
        return json.dumps({"format": FORMAT, **asdict(self)}, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class AnchorReport:
    ok: bool
    problem: str | None = None
    position: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


# -- keys -------------------------------------------------------------------------------------
def new_key() -> tuple[bytes, bytes]:
    """(private key PEM, public key PEM) of a fresh Ed25519 key."""
    private = Ed25519PrivateKey.generate()
    return (private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()),
            private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))


def private_key(pem: bytes) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise BadCheckpoint("the signing key is not an Ed25519 private key")
    return key


def public_key(pem: bytes) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError:
        raise BadCheckpoint("the public key is not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise BadCheckpoint("the public key is not an Ed25519 key")
    return key


def key_id(key: Ed25519PublicKey) -> str:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:32]


# -- making and reading checkpoints -------------------------------------------------------------
_HEAD = """
    SELECT position, hash FROM (
        (SELECT last_id AS position, hash FROM event_chain_links ORDER BY first_id DESC LIMIT 1)
        UNION ALL
        (SELECT notification_id, hash FROM event_chain ORDER BY notification_id DESC LIMIT 1)
    ) heads ORDER BY position DESC LIMIT 1"""

# The hash of the chain entry that ends at a position: a link's last event, or (before links) an
# event's own row. Nothing: no entry ends there any more.
_ENTRY_AT = """
    SELECT hash FROM event_chain_links WHERE last_id = %(position)s
    UNION ALL
    SELECT hash FROM event_chain WHERE notification_id = %(position)s
      AND notification_id < coalesce((SELECT min(first_id) FROM event_chain_links), 9223372036854775807)"""


def chain_head(conn) -> tuple[int, bytes]:
    """(position, hash) of the chain's newest entry; (0, GENESIS) for an empty log."""
    with conn.cursor(row_factory=tuple_row) as curs:
        row = curs.execute(_HEAD).fetchone()
    return (row[0], bytes(row[1])) if row else (0, GENESIS)


def sign(conn, key: Ed25519PrivateKey, now: datetime | None = None) -> dict:
    """A signed checkpoint of the chain's head now, as the JSON document an auditor keeps."""
    position, head = chain_head(conn)
    checkpoint = Checkpoint(position, head.hex(), (now or datetime.now(timezone.utc)).isoformat(),
                            key_id(key.public_key()))
    return {"format": FORMAT, "checkpoint": asdict(checkpoint),
            "signature": base64.b64encode(key.sign(checkpoint.payload())).decode()}


def opened(document: dict | str | bytes, key: Ed25519PublicKey) -> Checkpoint:
    """The checkpoint in a document, once its signature is checked with `key`; BadCheckpoint else."""
    try:
        if not isinstance(document, dict):
            document = json.loads(document)
        if document.get("format") != FORMAT:
            raise BadCheckpoint(f"not a chain checkpoint (format {document.get('format')!r}, expected {FORMAT!r})")
        fields = document["checkpoint"]
        checkpoint = Checkpoint(int(fields["position"]), str(fields["head"]), str(fields["at"]), str(fields["key_id"]))
        signature = base64.b64decode(document["signature"], validate=True)
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        if isinstance(e, BadCheckpoint):
            raise
        raise BadCheckpoint(f"not a readable chain checkpoint ({type(e).__name__})") from None
    if checkpoint.key_id != key_id(key):
        raise BadCheckpoint(f"signed by key {checkpoint.key_id}, not by the given key {key_id(key)}")
    try:
        key.verify(signature, checkpoint.payload())
    except InvalidSignature:
        raise BadCheckpoint("the signature does not match the checkpoint: it was altered or forged") from None
    return checkpoint


def check_anchor(conn, checkpoint: Checkpoint) -> AnchorReport:
    """Whether the chain still holds the checkpoint's head at its position. Run the chain's own
    verification too: this check trusts nothing after the position, and nothing inside it either."""
    if checkpoint.position == 0:
        return AnchorReport(checkpoint.head == GENESIS.hex(), None if checkpoint.head == GENESIS.hex()
                            else "the checkpoint of an empty log has a head other than the genesis", 0)
    with conn.cursor(row_factory=tuple_row) as curs:
        entry = curs.execute(_ENTRY_AT, {"position": checkpoint.position}).fetchone()
    if entry is None:
        end, _ = chain_head(conn)
        if end < checkpoint.position:
            return AnchorReport(False, f"truncated: the chain ends at position {end}, before the checkpoint's "
                                       f"{checkpoint.position} (signed {checkpoint.at})", checkpoint.position)
        return AnchorReport(False, f"re-chained: no chain entry ends at the checkpoint's position {checkpoint.position}"
                                   f" any more (signed {checkpoint.at})", checkpoint.position)
    if bytes(entry[0]).hex() != checkpoint.head:
        return AnchorReport(False, f"re-chained: the hash at position {checkpoint.position} is not the one signed"
                                   f" {checkpoint.at}", checkpoint.position)
    return AnchorReport(True, None, checkpoint.position)
