"""Reading any time PostgreSQL holds: a value Python's datetime cannot represent comes back clamped.

PostgreSQL's timestamptz reaches 294276 AD and holds ±infinity; Python's datetime stops at years
1 and 9999, and psycopg refuses to load anything beyond. Facts accepted before business times were
bounded (commands/models.py) may hold such values (9999-12-31T23:00-14:00 is year 10000 in UTC),
and a read that meets one must still answer. So every connection this process opens loads
timestamptz, timestamp and date through the loaders below: a representable value is loaded by
psycopg's own loader, untouched; one beyond the range becomes the nearest representable one
(datetime.max or datetime.min, in UTC for timestamptz). Keyset cursors never depend on the
clamped value: they carry the key as PostgreSQL prints it (projections/queries.py).
"""

from __future__ import annotations

from datetime import date, datetime, timezone

import psycopg
from psycopg.abc import AdaptContext, Buffer
from psycopg.adapt import Loader
from psycopg.pq import Format

# What a value beyond each end of the range becomes, per type.
_CLAMPED = {
    "timestamptz": (datetime.min.replace(tzinfo=timezone.utc), datetime.max.replace(tzinfo=timezone.utc)),
    "timestamp": (datetime.min, datetime.max),
    "date": (date.min, date.max),
}


def _is_before_year_one(data: Buffer, format: Format) -> bool:
    """Text: '-infinity' and 'BC' years are the low end. Binary: a negative count of units since 2000."""
    raw = bytes(data)
    if format == Format.BINARY:
        return raw[0] & 0x80 != 0
    return raw.startswith(b"-") or raw.rstrip().endswith(b"BC")


def _clamping(fast: type[Loader], low, high) -> type[Loader]:
    class Clamping(Loader):
        format = fast.format

        def __init__(self, oid: int, context: AdaptContext | None = None):
            super().__init__(oid, context)
            self._fast = fast(oid, context)

        def load(self, data: Buffer):
            try:
                return self._fast.load(data)
            except psycopg.DataError:
                return low if _is_before_year_one(data, self.format) else high

    Clamping.__name__ = Clamping.__qualname__ = f"Clamping{fast.__name__}"
    return Clamping


def reading_adapters() -> psycopg.adapt.AdaptersMap:
    """psycopg's adapters with the clamping loaders: the `context` of every connection that reads
    stored times (the read pool, the followers), leaving psycopg's global map as it is."""
    adapters = psycopg.adapt.AdaptersMap(psycopg.adapters)
    install(adapters)
    return adapters


def install(adapters: psycopg.adapt.AdaptersMap) -> None:
    """Register the clamping loaders on `adapters`."""
    for name, (low, high) in _CLAMPED.items():
        oid = adapters.types[name].oid
        for format in (Format.TEXT, Format.BINARY):
            fast = adapters.get_loader(oid, format)
            if fast is not None and not getattr(fast, "clamps", False):
                clamping = _clamping(fast, low, high)
                clamping.clamps = True
                adapters.register_loader(oid, clamping)
