"""The shared shop history (`../shared/data/online_retail.parquet`) as daily-demand frames.

`retail_daily()` gives the team's daily frame (domain/demand/frame.py DAILY_SCHEMA), one row per
product and calendar day; `retail_shop_daily()` the shop's total per day. Rules, and why:

- Products: StockCode starts with five digits (85123A, 22139, 15056BL). That drops postage (POST,
  DOT), fees (AMAZONFEE, BANK CHARGES), discounts (D), manual lines (M, m), bad debt (B), samples
  (S), charity (CRUK), carriage (C2), PADS, gift vouchers (gift_*) and the DCGS* dot-com lines.
  Codes are upper-cased: 15056bl and 15056BL are the same item written twice.
- Sales are lines with Quantity > 0 and UnitPrice > 0 outside cancellations.
- Cancellations (InvoiceNo starting with C) are returns: negative units and revenue on their day.
- Other negative-quantity lines (damaged, lost, "check": stock adjustments at price 0) and every
  price-0 line (mostly no description, no customer) are not sales: left out of units, revenue and
  prices. No cancellation line has a price <= 0 in this history.
- A product's rows run from its first to its last sale day; returns outside that window are
  dropped (they undo sales we cannot see).
- The shop is closed on Saturdays and over Christmas: a day with no invoice at all is inactive for
  every product (units 0), and inactive days are left out of fits.
- price: this history has no price-change events, so the price in force is approximated by the
  day's quantity-weighted mean paid price, carried forward over days without sales. paid_price is
  the same mean on days with sales and null otherwise. Several prices on one day are mostly
  quantity breaks (wholesale), not price changes.
- listing_id: a UUID derived from the stock code (uuid5), stable across runs; `retail_products()`
  maps it back to the code and description. Competitor columns are null: none were observed.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import polars as pl

from domain.demand.frame import DAILY_SCHEMA, check_daily

DEFAULT_PATH = "../shared/data/online_retail.parquet"
PROJECT_ROOT = Path(__file__).resolve().parent.parent
PRODUCT_CODE = r"^\d{5}"
LISTING_NAMESPACE = uuid.UUID("6f1b1d52-3c43-5a7e-9a55-0e7d3c1f2a10")  # fixed: ids stay the same across runs


def resolve(path: str | Path = DEFAULT_PATH) -> Path:
    """The parquet file, a relative path taken from the project's root; FileNotFoundError if absent."""
    resolved = Path(path) if Path(path).is_absolute() else PROJECT_ROOT / path
    if not resolved.is_file():
        raise FileNotFoundError(
            f"shared shop history not found at {resolved} (expected the UCI Online Retail parquet "
            f"described in ../shared/data/README.md)")
    return resolved


def listing_id_of(stock_code: str) -> str:
    return str(uuid.uuid5(LISTING_NAMESPACE, stock_code.upper()))


def _lines(path: str | Path) -> pl.LazyFrame:
    return pl.scan_parquet(resolve(path)).with_columns(
        pl.col("StockCode").str.to_uppercase().alias("code"),
        pl.col("InvoiceDate").str.slice(0, 10).str.to_date("%Y-%m-%d").alias("day"),
        pl.col("InvoiceNo").str.starts_with("C").alias("cancelled"),
    )


def _milli(price: pl.Expr) -> pl.Expr:
    """Prices in thousandths as integers (no price here has more than 3 decimals): sums of floats
    in a parallel group-by vary in their last bits from run to run, integer sums do not."""
    return (price * 1000).round(0).cast(pl.Int64)


def _counted(lines: pl.LazyFrame) -> pl.LazyFrame:
    """Product sale lines and product cancellations, each with its revenue."""
    sale = (pl.col("Quantity") > 0) & ~pl.col("cancelled")
    return (lines
            .filter(pl.col("code").str.contains(PRODUCT_CODE) & (pl.col("UnitPrice") > 0)
                    & (sale | pl.col("cancelled")))
            .with_columns(sale.alias("sale"), (pl.col("Quantity") * _milli(pl.col("UnitPrice"))).alias("amount")))


def _open_days(lines: pl.LazyFrame) -> pl.LazyFrame:
    return lines.select("day").unique().with_columns(pl.lit(True).alias("active"))


def retail_daily(path: str | Path = DEFAULT_PATH) -> pl.DataFrame:
    """Every product's daily frame (DAILY_SCHEMA), sorted by listing_id and day."""
    lines = _lines(path)
    counted = _counted(lines)
    per_day = counted.group_by("code", "day").agg(
        pl.col("Quantity").sum().alias("units"),
        (pl.col("amount").sum() / 1000).alias("revenue"),
        pl.col("Quantity").filter(pl.col("sale")).sum().alias("sold"),
        pl.col("amount").filter(pl.col("sale")).sum().alias("sold_amount"),
    )
    spans = (counted.filter(pl.col("sale")).group_by("code")
             .agg(pl.col("day").min().alias("first"), pl.col("day").max().alias("last"))
             .select("code", pl.date_ranges("first", "last").alias("day")).explode("day"))
    frame = (spans.join(per_day, on=["code", "day"], how="left")
             .join(_open_days(lines), on="day", how="left")
             .sort("code", "day")
             .with_columns(
                 pl.col("units").fill_null(0),
                 pl.col("revenue").fill_null(0.0),
                 pl.when(pl.col("sold") > 0).then(pl.col("sold_amount") / 1000 / pl.col("sold")).alias("paid_price"),
                 pl.col("active").fill_null(False)))
    codes = frame.select("code").unique().collect()["code"].to_list()
    ids = pl.LazyFrame({"code": codes, "listing_id": [listing_id_of(c) for c in codes]})
    daily = (frame.with_columns(pl.col("paid_price").forward_fill().over("code").alias("price"),
                                pl.lit(None, pl.Float64).alias("competitor_min"),
                                pl.lit(None, pl.Float64).alias("competitor_median"))
             .join(ids, on="code")
             .select([pl.col(name).cast(dtype) for name, dtype in DAILY_SCHEMA.items()])
             .sort("listing_id", "day")
             .collect())
    return check_daily(daily)


def retail_products(path: str | Path = DEFAULT_PATH) -> pl.DataFrame:
    """listing_id, stock_code, description (the most frequent one) and net units, most sold first;
    the products of retail_daily (those with at least one sale)."""
    counted = _counted(_lines(path))
    sold = counted.filter(pl.col("sale")).select("code").unique()
    products = (counted.join(sold, on="code", how="semi").group_by("code")
                .agg(pl.col("Description").drop_nulls().mode().sort().first().alias("description"),
                     pl.col("Quantity").sum().alias("units"))
                .sort("units", "code", descending=[True, False])
                .collect())
    return products.select(
        pl.Series("listing_id", [listing_id_of(c) for c in products["code"]], pl.Utf8),
        pl.col("code").alias("stock_code"), "description", "units")


def retail_shop_daily(path: str | Path = DEFAULT_PATH) -> pl.DataFrame:
    """The shop's products together: day, units, revenue, active; every calendar day from the
    first to the last invoice, closed days inactive with units 0."""
    lines = _lines(path)
    totals = _counted(lines).group_by("day").agg(pl.col("Quantity").sum().alias("units"),
                                                 (pl.col("amount").sum() / 1000).alias("revenue"))
    bounds = lines.select(pl.col("day").min().alias("first"), pl.col("day").max().alias("last"))
    calendar = bounds.select(pl.date_ranges("first", "last").alias("day")).explode("day")
    return (calendar.join(totals, on="day", how="left")
            .join(_open_days(lines), on="day", how="left")
            .select("day",
                    pl.col("units").fill_null(0).cast(pl.Int64),
                    pl.col("revenue").fill_null(0.0).cast(pl.Float64),
                    pl.col("active").fill_null(False))
            .sort("day")
            .collect())
