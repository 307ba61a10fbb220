"""Exports of a query's rows as CSV, JSON or Parquet (polars), typed so that they parse back to
the same values: money stays decimal (Parquet decimal, CSV/JSON decimal text — never a float),
timestamps are UTC with microseconds, ids are text."""

from __future__ import annotations

import io
import json
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import polars as pl

from projections.queries import Result

MEDIA_TYPES = {"csv": "text/csv; charset=utf-8", "json": "application/json",
               "parquet": "application/vnd.apache.parquet"}


def json_value(value: Any) -> Any:
    """A JSON-safe value: decimals and ids as strings, times as ISO 8601."""
    if isinstance(value, Decimal | UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list):
        return [json_value(v) for v in value]
    return value


def records(result: Result) -> list[dict[str, Any]]:
    return [{c: json_value(v) for c, v in zip(result.columns, row)} for row in result.rows]


def frame(result: Result) -> pl.DataFrame:
    columns = {}
    for i, (name, kind) in enumerate(zip(result.columns, result.types)):
        values = [row[i] for row in result.rows]
        columns[name] = pl.Series(name, _plain(values, kind), dtype=_dtype(kind, values), strict=True)
    return pl.DataFrame(columns)


def to_bytes(result: Result, fmt: str) -> bytes:
    if fmt == "parquet":
        buffer = io.BytesIO()
        frame(result).write_parquet(buffer)
        return buffer.getvalue()
    if fmt == "csv":
        df = frame(result)
        # CSV has no lists: a list column (compensates) is written as its JSON text, e.g. [2,3].
        lists = [name for name, dtype in df.schema.items() if isinstance(dtype, pl.List)]
        df = df.with_columns(pl.col(name).map_elements(lambda v: json.dumps(v.to_list()), return_dtype=pl.String)
                             for name in lists)
        return df.write_csv().encode()
    raise ValueError(f"unknown export format {fmt!r}")


def _plain(values: list, kind: str) -> list:
    return [None if v is None else str(v) for v in values] if kind == "uuid" else values


def _dtype(kind: str, values: list) -> pl.DataType:
    if kind == "numeric":
        # The smallest scale that holds every value exactly (prices have their currency's decimals).
        scale = max((-v.as_tuple().exponent for v in values if v is not None and v.as_tuple().exponent < 0),
                    default=0)
        return pl.Decimal(38, scale)
    if kind == "timestamptz":
        return pl.Datetime("us", "UTC")
    if kind in ("int8", "int4", "int2"):
        return pl.Int64
    if kind == "int8[]":
        return pl.List(pl.Int64)
    if kind == "bool":
        return pl.Boolean
    if kind == "float8":
        return pl.Float64
    return pl.String
