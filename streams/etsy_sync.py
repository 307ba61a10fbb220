"""Listings and receipts in from Etsy, incrementally and resumably.

- Listings: every page of the shop's active listings is read whole and checked before anything is
  written; unknown ones are registered (external id = Etsy's listing id) and all are linked
  (marketplace.etsy_listings). A price at Etsy that differs from the one Etsy last had by our
  knowledge (pushed or seen), with no push of ours waiting, is drift: Marketplace.drift.
- Receipts: read from the cursor (`min_last_modified`, epoch seconds, inclusive) in pages; their
  transactions become sales, idempotent on the transaction id (what is recorded already is left
  out), and a canceled or fully refunded receipt returns its transactions (`<id>:return`). The
  cursor moves after each page's sales committed, so a kill -9 re-reads at most a page, and the
  transaction ids make the re-read double nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import NamedTuple
from datetime import datetime, timezone
from decimal import Decimal
from uuid import UUID

import psycopg
from psycopg.rows import dict_row

from commands import models
from commands.marketplace import Marketplace
from domain.errors import DomainError, InvalidValue
from domain.marketplace import EtsyRefused, etsy_money, price_of_inventory
from domain.money import Money
from streams.etsy_client import PAGE_LIMIT, EtsyClient
from streams.etsy_grant import ShopSession

log = logging.getLogger(__name__)
RETURNED = ("canceled", "fully refunded")


@dataclass
class SyncReport:
    listings: int = 0
    registered: int = 0
    drifts: int = 0
    receipts: int = 0
    sales: int = 0
    unlinked: int = 0  # transactions of listings the engine does not know (not active at Etsy)
    described: int = 0  # listings whose title or state changed at Etsy
    competitor_prices: int = 0  # prices recorded by the shop's competitor watches


LISTED_STATES = ("active", "inactive", "sold_out")  # states Etsy lists a shop's listings by


class Known(NamedTuple):
    """A linked listing as the last sync saw it at Etsy."""

    price: Decimal | None
    waiting: bool  # a push of ours is queued
    title: str
    state: str


class EtsySync:
    def __init__(self, marketplace: Marketplace, client: EtsyClient, conninfo: str):
        self.marketplace, self.client, self.conninfo = marketplace, client, conninfo

    def sync_shop(self, shop_id: UUID) -> SyncReport:
        report = SyncReport()
        session = ShopSession(self.marketplace, self.client, shop_id)
        try:
            self.sync_listings(shop_id, session, report)
            self.sync_receipts(shop_id, session, report)
            report.competitor_prices = self._watcher().poll_shop(shop_id, set(self._links(shop_id)))
        except EtsyRefused as e:  # GrantRefused included: recorded by the session
            self._note(shop_id, "last_error = %s", [str(e)[:500]])
            raise
        return report

    def _watcher(self):
        from streams.competitor_watch import CompetitorWatcher  # it reads Etsy's answers with this module's readers

        return CompetitorWatcher(self.marketplace, self.client)

    # -- listings -------------------------------------------------------------------------
    def sync_listings(self, shop_id: UUID, session: ShopSession, report: SyncReport) -> None:
        """Active listings register or update engine listings; inactive and sold-out ones update those
        already linked (a listing taken off sale at Etsy becomes inactive here), none is registered."""
        etsy_shop = session.grant().etsy_shop_id
        for state in LISTED_STATES:
            offset = 0
            while True:
                page = session.call(lambda token: self.client.shop_listings(token, etsy_shop, offset, state))
                results = page_results(page)
                found = [read_listing(x, f"results[{i}]") for i, x in enumerate(results)]
                if state != "active":
                    linked = self._links(shop_id)
                    found = [x for x in found if x["etsy_listing_id"] in linked]
                self._take_listings(shop_id, found, report)
                offset += len(results)
                if len(results) < PAGE_LIMIT or offset >= page.get("count", 0):
                    break
        self._note(shop_id, "listings_synced_at = now(), last_error = NULL", [])

    def _take_listings(self, shop_id: UUID, found: list[dict], report: SyncReport) -> None:
        if not found:
            return
        before = self._known(shop_id)
        links, registered = self.marketplace.link_listings(shop_id, found)
        report.listings += len(found)
        report.registered += len(registered)
        report.drifts += self._drifts(shop_id, found, links, registered, before)
        report.described += self._describe(shop_id, found, links, registered, before)

    def _known(self, shop_id: UUID) -> dict[UUID, Known]:
        """Each linked listing as the last sync saw it at Etsy, and whether a push of ours waits."""
        with psycopg.connect(self.conninfo) as conn:
            rows = conn.execute("SELECT l.listing_id, l.etsy_price, q.listing_id IS NOT NULL, l.title, l.state"
                                " FROM marketplace.etsy_listings l LEFT JOIN marketplace.etsy_push_queue q USING (listing_id)"
                                " WHERE l.shop_id = %s", [shop_id]).fetchall()
        return {listing_id: Known(price, waiting, title, state) for listing_id, price, waiting, title, state in rows}

    @staticmethod
    def _adopted(x: dict, links: dict[int, UUID], registered: set[int], before: dict) -> bool:
        """An engine listing (registered before the shop was connected) linked to Etsy's by this sync."""
        return x["etsy_listing_id"] in links and x["etsy_listing_id"] not in registered and links[x["etsy_listing_id"]] not in before

    def _drifts(self, shop_id: UUID, found: list[dict], links: dict[int, UUID], registered: set[int], before: dict) -> int:
        """Prices Etsy shows that the engine did not push; for a listing linked now, a price that differs from its own."""
        drifts = 0
        for x in found:
            listing_id = links.get(x["etsy_listing_id"])
            known = before.get(listing_id)
            if listing_id is None or (known is None and not self._adopted(x, links, registered, before)):
                continue
            if known is not None and (known.price is None or known.waiting or x["price"].amount == known.price):
                continue
            outcome = self.marketplace.drift(shop_id, listing_id, x["etsy_listing_id"], x["price"])
            drifts += outcome != "unchanged"
        return drifts

    def _describe(self, shop_id: UUID, found: list[dict], links: dict[int, UUID], registered: set[int], before: dict) -> int:
        """Titles and states changed at Etsy since the last sync (or differing from an adopted listing's)."""
        described = 0
        for x in found:
            listing_id = links.get(x["etsy_listing_id"])
            known = before.get(listing_id)
            changed = known is not None and (x["title"], x["state"]) != (known.title, known.state)
            if changed or self._adopted(x, links, registered, before):
                described += self.marketplace.describe(shop_id, listing_id, x["title"], x["state"])
        return described

    # -- receipts -------------------------------------------------------------------------
    def sync_receipts(self, shop_id: UUID, session: ShopSession, report: SyncReport) -> None:
        etsy_shop = session.grant().etsy_shop_id
        since, offset = self._cursor(shop_id), 0
        while True:
            page = session.call(lambda token: self.client.receipts(token, etsy_shop, since, offset))
            receipts = [_receipt(r, f"results[{i}]") for i, r in enumerate(page_results(page))]
            links = self._links(shop_id)
            lines, unlinked = _sale_lines(receipts, links)
            report.sales += self.marketplace.record_sales(shop_id, lines)
            report.unlinked += unlinked
            report.receipts += len(receipts)
            if not receipts:
                break
            last = receipts[-1]["updated"]
            if last > since:  # the cursor moves past this page (inclusive: its last second is read again)
                since, offset = last, 0
                self._note(shop_id, "receipts_since = greatest(receipts_since, %s)", [since])
            else:  # a page all in one second: page on within it
                offset += len(receipts)
            if len(receipts) < PAGE_LIMIT:
                break
        self._note(shop_id, "receipts_synced_at = now(), last_error = NULL", [])

    def _cursor(self, shop_id: UUID) -> int:
        with psycopg.connect(self.conninfo) as conn:
            row = conn.execute("SELECT receipts_since FROM marketplace.etsy_sync WHERE shop_id = %s", [shop_id]).fetchone()
        return row[0] if row else 0

    def _links(self, shop_id: UUID) -> dict[int, UUID]:
        with psycopg.connect(self.conninfo) as conn:
            return dict(conn.execute("SELECT etsy_listing_id, listing_id FROM marketplace.etsy_listings WHERE shop_id = %s",
                                     [shop_id]).fetchall())

    def _note(self, shop_id: UUID, assignments: str, params: list) -> None:
        with psycopg.connect(self.conninfo, row_factory=dict_row) as conn:
            conn.execute("INSERT INTO marketplace.etsy_sync (shop_id) VALUES (%s) ON CONFLICT DO NOTHING", [shop_id])
            conn.execute(f"UPDATE marketplace.etsy_sync SET {assignments} WHERE shop_id = %s", [*params, shop_id])


# -- Etsy's answers, read strictly: a page that does not fit is refused whole ----------------
def page_results(page: dict) -> list:
    results = page.get("results")
    if not isinstance(results, list):
        raise EtsyRefused(200, f"a page without a results array: {str(page)[:300]}")
    return results


def _field(value: dict, name: str, kind: type, where: str):
    found = value.get(name) if isinstance(value, dict) else None
    if not isinstance(found, kind) or isinstance(found, bool) and kind is not bool:
        raise EtsyRefused(200, f"{where}.{name}: expected {kind.__name__}, got {found!r:.100}")
    return found


def read_listing(value, where: str) -> dict:
    try:
        price = price_of_inventory(value["inventory"]) if isinstance(value, dict) and "inventory" in value \
            else etsy_money(value.get("price") if isinstance(value, dict) else None, f"{where}.price")
    except DomainError as e:
        raise EtsyRefused(200, f"{where}: {e}") from None
    if price.amount <= 0:
        raise EtsyRefused(200, f"{where}.price: must be above zero, got {price.amount}")
    skus = value.get("skus") or [p.get("sku") for p in (value.get("inventory") or {}).get("products", [])]
    return {"etsy_listing_id": _field(value, "listing_id", int, where), "title": _field(value, "title", str, where),
            "state": _field(value, "state", str, where), "price": price,
            "sku": next((s for s in skus if isinstance(s, str) and s.strip()), "")}


def _receipt(value, where: str) -> dict:
    transactions = _field(value, "transactions", list, where)
    lines = []
    for j, t in enumerate(transactions):
        at = f"{where}.transactions[{j}]"
        try:
            unit = etsy_money(t.get("price") if isinstance(t, dict) else None, f"{at}.price")
        except InvalidValue as e:
            raise EtsyRefused(200, str(e)) from None
        quantity = _field(t, "quantity", int, at)
        if quantity <= 0:
            raise EtsyRefused(200, f"{at}.quantity: must be positive, got {quantity}")
        lines.append({"transaction_id": _field(t, "transaction_id", int, at), "listing_id": _field(t, "listing_id", int, at),
                      "quantity": quantity, "price": unit, "created": _field(t, "create_timestamp", int, at)})
    status = value.get("status") if isinstance(value.get("status"), str) else ""
    return {"receipt_id": _field(value, "receipt_id", int, where), "updated": _field(value, "update_timestamp", int, where),
            "returned": status.lower() in RETURNED, "updated_at": _field(value, "update_timestamp", int, where),
            "lines": lines}


def _sale_lines(receipts: list[dict], links: dict[int, UUID]) -> tuple[list[models.SaleIn], int]:
    lines, unlinked = [], 0
    for r in receipts:
        for t in r["lines"]:
            listing_id = links.get(t["listing_id"])
            if listing_id is None:
                unlinked += 1
                continue
            lines.append(_sale(listing_id, t["quantity"], t["price"], r["receipt_id"], str(t["transaction_id"]),
                               t["created"]))
            if r["returned"]:
                lines.append(_sale(listing_id, -t["quantity"], t["price"], r["receipt_id"],
                                   f"{t['transaction_id']}:return", r["updated_at"]))
    return lines, unlinked


def _sale(listing_id: UUID, quantity: int, price: Money, receipt_id: int, transaction_id: str, at: int) -> models.SaleIn:
    return models.SaleIn(listing_id=listing_id, quantity=quantity, unit_price=price.amount, currency=price.currency,
                         order_id=str(receipt_id), transaction_id=transaction_id,
                         sold_at=datetime.fromtimestamp(at, timezone.utc))
