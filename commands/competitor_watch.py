"""Competitor watches: a listing's competitors at Etsy, named by listing id or found by a keyword
search over every shop's active listings (never by scraping pages). The Etsy sync polls them within
the app's call budget (streams/competitor_watch.py); each price seen is an observation event."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from psycopg.rows import dict_row
from pydantic import ConfigDict, Field

from commands import models
from commands.context import CommandContext
from commands.core import WriteCore
from domain.errors import InvalidValue, NotFound

MAX_NAMED = 100  # one getListingsByListingIds call
EtsyListingId = Annotated[int, Field(ge=1, le=10**15, strict=True)]


class WatchCompetitors(models.Command):
    etsy_listing_ids: Annotated[list[EtsyListingId], Field(min_length=1, max_length=MAX_NAMED)] | None = Field(
        None, description="The competitors' Etsy listing ids (at most 100)")
    keywords: models.Text | None = Field(None, description="Or: words all of which a competitor's title holds")
    max_results: models.integer(ge=1, le=100) = Field(25, description="Keyword search: the first N results")

    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra={"examples": [
        {"keywords": "speckled stoneware mug", "max_results": 20}, {"etsy_listing_ids": [1234567890, 1234567891]}]})


WATCH_COLUMNS = "listing_id, shop_id, etsy_listing_ids, keywords, max_results, created_at, polled_at, last_seen, last_error"


class CompetitorWatches:
    def __init__(self, core: WriteCore):
        self.core = core

    def watch(self, ctx: CommandContext, shop_id: UUID, listing_id: UUID, cmd: WatchCompetitors) -> dict:
        if (cmd.etsy_listing_ids is None) == (cmd.keywords is None):
            raise InvalidValue("keywords", "give either etsy_listing_ids or keywords (not both)")
        if cmd.etsy_listing_ids is not None and len(set(cmd.etsy_listing_ids)) != len(cmd.etsy_listing_ids):
            raise InvalidValue("etsy_listing_ids", "names a listing twice")
        self.core.listing(ctx, shop_id, listing_id)  # the caller's shop, and its listing: else not found
        return self._row(
            f"INSERT INTO marketplace.competitor_watches (listing_id, shop_id, etsy_listing_ids, keywords, max_results)"
            f" VALUES (%s, %s, %s, %s, %s) ON CONFLICT (listing_id) DO UPDATE SET etsy_listing_ids ="
            f" excluded.etsy_listing_ids, keywords = excluded.keywords, max_results = excluded.max_results,"
            f" polled_at = NULL, last_seen = NULL, last_error = NULL RETURNING {WATCH_COLUMNS}",
            [listing_id, shop_id, cmd.etsy_listing_ids, cmd.keywords, cmd.max_results])

    def unwatch(self, ctx: CommandContext, shop_id: UUID, listing_id: UUID) -> dict:
        self.core.listing(ctx, shop_id, listing_id)
        removed = self._row(f"DELETE FROM marketplace.competitor_watches WHERE listing_id = %s RETURNING {WATCH_COLUMNS}",
                            [listing_id])
        if removed is None:
            raise NotFound("the listing has no competitor watch", field="listing_id")
        return removed

    def watch_of(self, ctx: CommandContext, shop_id: UUID, listing_id: UUID) -> dict:
        self.core.listing(ctx, shop_id, listing_id)
        found = self._row(f"SELECT {WATCH_COLUMNS} FROM marketplace.competitor_watches WHERE listing_id = %s", [listing_id])
        if found is None:
            raise NotFound("the listing has no competitor watch", field="listing_id")
        return found

    def watches_of(self, ctx: CommandContext, shop_id: UUID) -> list[dict]:
        self.core.shop_facts(ctx, shop_id)  # the caller's shop: else not found
        return self.rows(shop_id)

    def rows(self, shop_id: UUID) -> list[dict]:
        with self.core.recorder.datastore.get_connection() as conn, conn.cursor(row_factory=dict_row) as curs:
            return curs.execute(f"SELECT {WATCH_COLUMNS} FROM marketplace.competitor_watches WHERE shop_id = %s"
                                " ORDER BY listing_id", [shop_id]).fetchall()

    def polled(self, listing_id: UUID, seen: int | None, error: str | None) -> None:
        self._row("UPDATE marketplace.competitor_watches SET polled_at = now(), last_seen = %s, last_error = %s"
                  " WHERE listing_id = %s RETURNING listing_id", [seen, error and error[:500], listing_id])

    def _row(self, sql: str, params) -> dict | None:
        with self.core.recorder.datastore.get_connection() as conn, conn.transaction(), \
                conn.cursor(row_factory=dict_row) as curs:
            return curs.execute(sql, params).fetchone()
