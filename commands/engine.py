"""The write side composed: one core, and the handlers of each bounded context on it.

    engine = PricingEngine(url)
    engine.listings.set_price(ctx, shop_id, listing_id, SetPrice(price="12.50", currency="GBP"))
"""

from __future__ import annotations

from commands.core import WriteCore
from commands.experiments import Experiments
from commands.identity import Identity
from commands.listings import Listings
from commands.marketplace import Marketplace
from commands.rollback import Rollbacks
from commands.rollback_guard import RollbackGuards
from commands.rules import Rules
from commands.stock import Stock


class PricingEngine:
    def __init__(self, conninfo: str, pool_size: int = 10):
        self.core = WriteCore(conninfo, pool_size)
        self.identity = Identity(self.core)
        self.listings = Listings(self.core, self.identity)
        self.rules = Rules(self.core)
        self.rollbacks = Rollbacks(self.core)
        self.experiments = Experiments(self.core)
        self.stock = Stock(self.core)
        self.guards = RollbackGuards(self.core, self.rules, self.rollbacks, self.experiments)
        self.marketplace = Marketplace(self.core, self.listings, lambda: self.identity.secrets)

    def close(self) -> None:
        self.core.close()
