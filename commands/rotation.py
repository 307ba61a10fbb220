"""Re-sealing what is encrypted under the server key after ETSYPRO_SECRET_KEY changes.

SEALED is the one registry of columns encrypted with Secrets.encrypt. `rotate` walks each in
primary-key order, a batch per transaction (rows locked, so a concurrent token refresh waits
rather than being lost), and rewrites every value the previous key sealed under the current key.
A value the current key already opens is left alone: that is what makes a run resumable (an
interrupted run is simply run again) and safe next to servers already writing under the new key.

Digests (refresh tokens, API keys, recovery codes, MFA challenges, password resets, PKCE states)
are not here: they cannot be recomputed without the secrets they digest, which the server never
keeps. They match under the previous key while it is set (Secrets.digests); see docs/operations.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from cryptography.exceptions import InvalidTag
from psycopg import sql

from commands.credentials import ENCRYPTION, SUBJECT_WRAPPING, KeyOf, Secrets
from commands.marketplace import _bound as etsy_bound


@dataclass(frozen=True)
class SealedColumn:
    """A column of values sealed with Secrets.encrypt(value, bound_to(row[bound_column]), key_of)."""

    table: str                # schema.table
    key: str                  # its primary key column: batches go in its order
    column: str
    bound_column: str         # the column the ciphertext is bound to (authenticated, not encrypted)
    bound_to: Callable[[Any], bytes]
    key_of: KeyOf = ENCRYPTION  # which derived key seals it

    @property
    def name(self) -> str:
        return f"{self.table}.{self.column}"


SEALED: list[SealedColumn] = [
    SealedColumn("public.totp_credentials", "account_id", "secret_encrypted", "account_id", lambda account: account.bytes),
    SealedColumn("marketplace.etsy_grants", "shop_id", "access_encrypted", "shop_id", lambda shop: etsy_bound(shop, "access")),
    SealedColumn("marketplace.etsy_grants", "shop_id", "refresh_encrypted", "shop_id", lambda shop: etsy_bound(shop, "refresh")),
    SealedColumn("marketplace.etsy_pkce", "state_digest", "verifier_encrypted", "shop_id",
                 lambda shop: etsy_bound(shop, "verifier")),
    # personal data's per-subject keys (crypto-shredding), wrapped as domain/personal.py wrap_key does
    SealedColumn("public.subject_keys", "subject_id", "wrapped_key", "subject_id", lambda subject: subject.bytes,
                 SUBJECT_WRAPPING),
]


class RotationRefused(Exception):
    """Nothing to rotate from, or a value neither key opens (a wrong ETSYPRO_SECRET_KEY_PREVIOUS)."""


@dataclass
class Tally:
    """One column's rows: re-sealed now, and already under the current key."""

    resealed: int = 0
    current: int = 0

    @property
    def done(self) -> int:
        return self.resealed + self.current


@dataclass
class Rotation:
    columns: dict[str, Tally] = field(default_factory=dict)

    @property
    def resealed(self) -> int:
        return sum(t.resealed for t in self.columns.values())


Progress = Callable[[str, int, int], None]  # (column name, rows done, rows in the column)


def check_keys(secrets: Secrets) -> None:
    """A rotation needs a previous key that is not the current one."""
    if secrets.previous is None:
        raise RotationRefused("ETSYPRO_SECRET_KEY_PREVIOUS is not set: set it to the key being retired"
                              " and ETSYPRO_SECRET_KEY to the new one")
    if secrets.same_key(secrets.previous):
        raise RotationRefused("ETSYPRO_SECRET_KEY_PREVIOUS is the same as ETSYPRO_SECRET_KEY: nothing to rotate")


def rotate(conn, secrets: Secrets, batch_size: int = 500, progress: Progress = lambda *_: None,
           dry_run: bool = False, columns: list[SealedColumn] = SEALED) -> Rotation:
    """Re-seal every column of `columns` under the current key (`dry_run`: count only). `conn` is
    an autocommit-off psycopg connection; each batch commits on its own."""
    check_keys(secrets)
    rotation = Rotation()
    for column in columns:
        rotation.columns[column.name] = _rotate_column(conn, secrets, column, batch_size, progress, dry_run)
    return rotation


def _rotate_column(conn, secrets: Secrets, column: SealedColumn, batch_size: int, progress: Progress,
                   dry_run: bool) -> Tally:
    total = conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE {} IS NOT NULL").format(
        _table(column), sql.Identifier(column.column))).fetchone()[0]
    conn.commit()
    tally, after = Tally(), None
    progress(column.name, 0, total)
    while True:
        with conn.transaction():
            rows = conn.execute(_batch_query(column, after), [after, batch_size] if after is not None else [batch_size]).fetchall()
            resealed = [(new, key) for key, bound, sealed in rows
                        if (new := _resealed(secrets, column, key, bound, bytes(sealed))) is not None]
            if resealed and not dry_run:
                conn.cursor().executemany(sql.SQL("UPDATE {} SET {} = %s WHERE {} = %s").format(
                    _table(column), sql.Identifier(column.column), sql.Identifier(column.key)), resealed)
        if not rows:
            return tally
        tally.resealed += len(resealed)
        tally.current += len(rows) - len(resealed)
        after = rows[-1][0]
        progress(column.name, tally.done, max(total, tally.done))


def _batch_query(column: SealedColumn, after) -> sql.Composed:
    where = sql.SQL("{} IS NOT NULL").format(sql.Identifier(column.column))
    if after is not None:
        where = sql.SQL("{} AND {} > %s").format(where, sql.Identifier(column.key))
    return sql.SQL("SELECT {key}, {bound}, {column} FROM {table} WHERE {where} ORDER BY {key} LIMIT %s FOR UPDATE").format(
        key=sql.Identifier(column.key), bound=sql.Identifier(column.bound_column), column=sql.Identifier(column.column),
        table=_table(column), where=where)


def _resealed(secrets: Secrets, column: SealedColumn, key, bound, sealed: bytes) -> bytes | None:
    try:
        return secrets.reencrypt(sealed, column.bound_to(bound), column.key_of)
    except InvalidTag:
        raise RotationRefused(f"neither ETSYPRO_SECRET_KEY nor ETSYPRO_SECRET_KEY_PREVIOUS opens {column.name}"
                              f" of {column.key} {_shown(key)}: is PREVIOUS the key the servers used before?"
                              " This batch was left unchanged") from None


def _shown(key) -> str:
    return key.hex()[:16] + "…" if isinstance(key, (bytes, memoryview)) else str(key)


def _table(column: SealedColumn) -> sql.Identifier:
    return sql.Identifier(*column.table.split("."))
