"""Projection `price_changes`: every price a listing was given — who, why, from which source and
rule, and which earlier changes a compensation undoes. The registration is the first row.

A reason a person wrote is kept as its event holds it, sealed (domain/personal.py), and readers
open it; when its subject is erased (the Privacy stream's SubjectErased), its rows' reasons become
ERASED here too, so the view never holds what the key no longer opens."""

from __future__ import annotations

from typing import Sequence

from psycopg import Cursor

from domain.listing import Listing
from domain.meta import Source
from domain.personal import ERASED, PREFIX, Privacy
from projections.base import LIVE, Positioned, Staging, Statements, Tables, UUIDs, of_types

STAGE = Staging("stage_price_changes", (
    ("log_position", "int8"), ("listing_id", "uuid"), ("version", "int8"), ("shop_id", "uuid"), ("kind", "text"),
    ("price", "numeric"), ("previous_price", "numeric"), ("currency", "text"), ("source", "text"),
    ("rule", "text"), ("compensates", "int8[]"), ("reason", "text"), ("actor_id", "text"),
    ("actor_kind", "text"), ("command_id", "text"), ("correlation_id", "text"), ("causation_id", "text"),
    ("occurred_at", "timestamptz"), ("recorded_at", "timestamptz")))

STATEMENTS = Statements({
    "insert": """
        WITH staged AS (
            DELETE FROM pg_temp.stage_price_changes RETURNING *
        )
        INSERT INTO {price_changes} (log_position, listing_id, version, shop_id, kind, price, previous_price,
            change, currency, source, rule, compensates, reason, actor_id, actor_kind, command_id,
            correlation_id, causation_id, occurred_at, recorded_at)
        SELECT log_position, listing_id, version, shop_id, kind, price, previous_price, price - previous_price,
               currency, source, rule, compensates, reason, actor_id, actor_kind, command_id, correlation_id,
               causation_id, occurred_at, recorded_at
        FROM staged
        ON CONFLICT DO NOTHING""",
    # Rare (one per erasure) and a whole-table scan: no index serves a substring of reason.
    "erase": "UPDATE {price_changes} SET reason = %s WHERE strpos(reason, %s) > 0",
})


def kind_of(e) -> str:
    if type(e) is Listing.Registered:
        return "registered"
    return "compensation" if e.compensates or e.meta.source == Source.ROLLBACK.value else "changed"


class PriceChanges:
    name = "price_changes"
    tables = ("price_changes",)
    event_types = (Listing.Registered, Listing.PriceChanged, Privacy.SubjectErased)

    def apply(self, cur: Cursor, events: Sequence[Positioned], tables: Tables = LIVE) -> None:
        shop, rows = UUIDs(), []
        for pos, e in of_types(events, self.event_types):
            if type(e) is Privacy.SubjectErased:  # after the rows staged so far: they may hold its reasons
                self._insert(cur, rows, tables)
                cur.execute(STATEMENTS.get("erase", tables), [ERASED, f"{PREFIX}{e.subject_id.hex}:"])
                rows = []
                continue
            m = e.meta
            registered = type(e) is Listing.Registered
            rows.append((pos, e.originator_id, e.originator_version, shop[m.shop_id], kind_of(e), e.price.amount,
                         None if registered else e.previous.amount, e.price.currency, m.source,
                         None if registered else e.rule, [] if registered else sorted(e.compensates), m.reason,
                         m.actor_id, m.actor_kind, m.command_id, m.correlation_id, m.causation_id, m.occurred_at,
                         e.timestamp))
        self._insert(cur, rows, tables)

    @staticmethod
    def _insert(cur: Cursor, rows: list[tuple], tables: Tables) -> None:
        if rows:
            STAGE.load(cur, rows)
            cur.execute(STATEMENTS.get("insert", tables))
