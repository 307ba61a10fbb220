"""The shared daily-demand frame: one row per listing and day, the input of every demand model.

units and revenue are net (sold minus returned); price is the time-weighted price in force that day
(null if unknown); paid_price is the mean paid unit price on sold lines (null on zero-sale days);
competitor columns are null when nothing was observed; inactive days are excluded from fits.
"""

from __future__ import annotations

import polars as pl

from domain.errors import InvalidValue

DAILY_SCHEMA: dict[str, pl.DataType] = {
    "listing_id": pl.Utf8,
    "day": pl.Date,
    "units": pl.Int64,
    "revenue": pl.Float64,
    "price": pl.Float64,
    "paid_price": pl.Float64,
    "competitor_min": pl.Float64,
    "competitor_median": pl.Float64,
    "active": pl.Boolean,
}


def check_daily(frame: pl.DataFrame) -> pl.DataFrame:
    """Return the frame unchanged when every column of DAILY_SCHEMA is there with its dtype.

    Raises InvalidValue naming the first missing or mistyped column; extra columns are allowed.
    """
    if not isinstance(frame, pl.DataFrame):
        raise InvalidValue("frame", f"must be a polars DataFrame, not {type(frame).__name__}")
    for column, dtype in DAILY_SCHEMA.items():
        if column not in frame.columns:
            raise InvalidValue(column, "column is missing from the daily frame")
        if frame.schema[column] != dtype:
            raise InvalidValue(column, f"column has dtype {frame.schema[column]}, expected {dtype}")
    return frame
