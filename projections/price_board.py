"""Projection `price_board`: every shop, and the current price, guardrails, title and status of every listing.

Current state only moves forward: the price columns change only for a price event of a higher
listing version than the one that set them, the guardrail and title/status columns likewise. So events of one
listing applied twice, or a stale event redelivered after newer ones, change nothing.
"""

from __future__ import annotations

from typing import Sequence

from psycopg import Cursor

from domain.listing import Listing
from domain.shop import Shop
from projections.base import LIVE, Positioned, Statements, Tables, columns, of_types

STATEMENTS = Statements({
    "shops": """
        INSERT INTO {shops} (shop_id, tenant_id, name, currency, marketplace, opened_at, log_position)
        SELECT * FROM unnest(%s::uuid[], %s::text[], %s::text[], %s::text[], %s::text[], %s::timestamptz[],
                             %s::bigint[])
        ON CONFLICT (shop_id) DO NOTHING""",
    "registered": """
        INSERT INTO {current_prices} (listing_id, shop_id, external_id, sku, title, status, price, currency,
            floor, ceiling, cost, version, price_version, guardrails_version, price_changed_at, price_source,
            price_actor_id, registered_at, updated_at, log_position)
        SELECT u.listing_id, u.shop_id, u.external_id, u.sku, u.title, u.status, u.price, u.currency, u.floor,
               u.ceiling, u.cost, 1, 1, 1, u.at, u.source, u.actor, u.at, u.recorded, u.pos
        FROM unnest(%s::uuid[], %s::uuid[], %s::text[], %s::text[], %s::text[], %s::text[], %s::numeric[],
                    %s::text[], %s::numeric[], %s::numeric[], %s::numeric[], %s::timestamptz[], %s::text[],
                    %s::text[], %s::timestamptz[], %s::bigint[])
             AS u(listing_id, shop_id, external_id, sku, title, status, price, currency, floor, ceiling, cost,
                  at, source, actor, recorded, pos)
        ON CONFLICT (listing_id) DO NOTHING""",
    "price": """
        UPDATE {current_prices} AS c
        SET price = u.price, price_version = u.version, price_changed_at = u.at, price_source = u.source,
            price_actor_id = u.actor, version = greatest(c.version, u.version),
            updated_at = greatest(c.updated_at, u.recorded), log_position = greatest(c.log_position, u.pos)
        FROM unnest(%s::uuid[], %s::bigint[], %s::numeric[], %s::timestamptz[], %s::text[], %s::text[],
                    %s::timestamptz[], %s::bigint[]) AS u(listing_id, version, price, at, source, actor, recorded, pos)
        WHERE c.listing_id = u.listing_id AND c.price_version < u.version""",
    "guardrails": """
        UPDATE {current_prices} AS c
        SET floor = u.floor, ceiling = u.ceiling, cost = u.cost, guardrails_version = u.version,
            version = greatest(c.version, u.version), updated_at = greatest(c.updated_at, u.recorded),
            log_position = greatest(c.log_position, u.pos)
        FROM unnest(%s::uuid[], %s::bigint[], %s::numeric[], %s::numeric[], %s::numeric[], %s::timestamptz[],
                    %s::bigint[]) AS u(listing_id, version, floor, ceiling, cost, recorded, pos)
        WHERE c.listing_id = u.listing_id AND c.guardrails_version < u.version""",
    "described": """
        UPDATE {current_prices} AS c
        SET title = u.title, status = u.status, details_version = u.version,
            version = greatest(c.version, u.version), updated_at = greatest(c.updated_at, u.recorded),
            log_position = greatest(c.log_position, u.pos)
        FROM unnest(%s::uuid[], %s::bigint[], %s::text[], %s::text[], %s::timestamptz[], %s::bigint[])
             AS u(listing_id, version, title, status, recorded, pos)
        WHERE c.listing_id = u.listing_id AND c.details_version < u.version""",
})


def _amount(money):
    return None if money is None else money.amount


class PriceBoard:
    name = "price_board"
    tables = ("shops", "current_prices")
    event_types = (Shop.Opened, Listing.Registered, Listing.PriceChanged, Listing.GuardrailsSet, Listing.Described)

    def apply(self, cur: Cursor, events: Sequence[Positioned], tables: Tables = LIVE) -> None:
        shops, registered, prices, guardrails, described = [], [], {}, {}, {}
        for pos, e in of_types(events, self.event_types):
            kind = type(e)
            if kind is Listing.PriceChanged:
                # Only the latest price event of each listing in the batch matters.
                prices[e.originator_id] = (e.originator_id, e.originator_version, e.price.amount,
                                           e.meta.occurred_at, e.meta.source, e.meta.actor_id, e.timestamp, pos)
            elif kind is Listing.GuardrailsSet:
                g = e.guardrails
                guardrails[e.originator_id] = (e.originator_id, e.originator_version, _amount(g.floor),
                                               _amount(g.ceiling), _amount(g.cost), e.timestamp, pos)
            elif kind is Listing.Described:
                described[e.originator_id] = (e.originator_id, e.originator_version, e.title, e.status, e.timestamp, pos)
            elif kind is Listing.Registered:
                g = e.guardrails
                registered.append((e.originator_id, e.shop_id, e.external_id, e.sku, e.title, e.status,
                                   e.price.amount, e.price.currency, _amount(g.floor), _amount(g.ceiling),
                                   _amount(g.cost), e.meta.occurred_at, e.meta.source, e.meta.actor_id,
                                   e.timestamp, pos))
            else:  # Shop.Opened
                shops.append((e.originator_id, e.tenant_id, e.name, e.currency, e.marketplace,
                              e.meta.occurred_at, pos))
        # Registrations first: later events of the same batch update the rows they create.
        for key, rows in (("shops", shops), ("registered", registered), ("price", list(prices.values())),
                          ("guardrails", list(guardrails.values())), ("described", list(described.values()))):
            if rows:
                cur.execute(STATEMENTS.get(key, tables), columns(rows))
