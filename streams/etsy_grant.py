"""Calls to Etsy as one connected shop: its access token, refreshed before it expires (and once more
on a 401), the new refresh token stored in the transaction that spent the old one
(Marketplace.rotate); a grant Etsy refuses is recorded (EtsyConnection.GrantRevoked) and raised, so
the pusher and the sync pause that shop until the seller connects again."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Callable, TypeVar
from uuid import UUID

from commands.marketplace import Grant, Marketplace, TokenAnswer
from domain.marketplace import GrantRefused
from streams.etsy_client import AccessRefused, EtsyClient

T = TypeVar("T")
REFRESH_MARGIN = timedelta(seconds=60)


def token_answer(body: dict) -> TokenAnswer:
    return TokenAnswer(body["access_token"], body["refresh_token"], float(body["expires_in"]))


class ShopSession:
    def __init__(self, marketplace: Marketplace, client: EtsyClient, shop_id: UUID,
                 margin: timedelta = REFRESH_MARGIN):
        self.marketplace, self.client, self.shop_id, self.margin = marketplace, client, shop_id, margin

    def grant(self) -> Grant:
        grant = self.marketplace.grant(self.shop_id)
        if grant is None or grant.status != "connected" or grant.access_token is None:
            raise GrantRefused(None, f"shop {self.shop_id} is not connected to Etsy"
                               + (f" ({grant.status})" if grant else ""))
        return grant

    def call(self, act: Callable[[str], T]) -> T:
        """act(access token), with a fresh token; a 401 refreshes once and tries again."""
        grant = self.grant()
        if grant.access_expires_at is None or grant.access_expires_at - datetime.now(timezone.utc) < self.margin:
            grant = self._rotate(grant)
        try:
            return act(grant.access_token)
        except AccessRefused:
            grant = self._rotate(grant)
            try:
                return act(grant.access_token)
            except AccessRefused as e:
                self.marketplace.record_revoked(self.shop_id, e.answer)
                raise

    def _rotate(self, grant: Grant) -> Grant:
        try:
            fresh = self.marketplace.rotate(self.shop_id, grant.generation,
                                            lambda refresh: token_answer(self.client.refresh(refresh)))
        except GrantRefused as e:
            self.marketplace.record_revoked(self.shop_id, e.answer)
            raise
        if fresh is None:
            raise GrantRefused(None, f"shop {self.shop_id} is no longer connected to Etsy")
        return fresh
