"""The read side assembled: one pool, the shop directory on it, and the readers using both."""

from __future__ import annotations

from read.aggregates import AggregateReader
from read.audit import AuditHistory
from read.listings import ListingReader
from read.pool import ReadPool
from read.shops import ShopDirectory


class ReadSide:
    def __init__(self, conninfo: str, pool_size: int = 4):
        self.pool = ReadPool(conninfo, pool_size)
        self.shops = ShopDirectory(self.pool)
        self.audit = AuditHistory(self.pool, self.shops)
        self.aggregates = AggregateReader(self.pool, self.shops)
        self.listings = ListingReader(self.aggregates)

    def close(self) -> None:
        self.pool.close()
