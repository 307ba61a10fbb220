-- Bucketed answers over the hourly rollups, for any bucket width of an hour or more, in one
-- place: the REST queries call these functions and so can analysts. The bodies are strings, so
-- table names resolve when a function runs: a rebuild's atomic table swap (rename) is seen by the
-- next call, and nothing here pins the old copy. Being single-SELECT SQL functions, they are
-- inlined into the caller's query, so filters on their output reach the tables' indexes.
--
-- Filters: NULL means "any". `since`/`until` select hourly buckets: those overlapping
-- [since, until) are aggregated into buckets of `width`.

-- Competitor price bands: exact percentiles (as percentile_cont would give over the raw
-- observations) from the price histogram. For fraction p over n observations sorted by price,
-- pos = p * (n - 1); the answer interpolates between the prices at ranks floor(pos) and
-- ceil(pos), and the price at rank r is the lowest price whose cumulative count exceeds r.
-- Everything stays numeric: no float ever touches a price.
CREATE FUNCTION analytics.competitor_bands(
    width interval, shop uuid DEFAULT NULL, listing uuid DEFAULT NULL,
    since timestamptz DEFAULT NULL, until timestamptz DEFAULT NULL)
RETURNS TABLE (listing_id uuid, bucket timestamptz, shop_id uuid, currency text, observations bigint,
               min_price numeric, p25 numeric, median numeric, p75 numeric, max_price numeric)
LANGUAGE sql STABLE AS $$
    WITH per_price AS (
        SELECT h.listing_id, analytics.bucket(width, h.bucket) AS bucket, h.shop_id, h.currency, h.price,
               sum(h.observations) AS n
        FROM analytics.competitor_price_histogram h
        WHERE (shop IS NULL OR h.shop_id = shop)
          AND (listing IS NULL OR h.listing_id = listing)
          AND (since IS NULL OR h.bucket >= analytics.bucket('1 hour', since))
          AND (until IS NULL OR h.bucket < until)
        GROUP BY h.listing_id, 2, h.price, h.shop_id, h.currency  -- (listing, bucket, price) first: the windows reuse this order
    ), ranked AS (
        SELECT p.*, sum(p.n) OVER (PARTITION BY p.listing_id, p.bucket ORDER BY p.price) AS cum,
               sum(p.n) OVER (PARTITION BY p.listing_id, p.bucket) AS total
        FROM per_price p
    ), ranks AS (
        SELECT r.listing_id, r.bucket, r.shop_id, r.currency, r.total,
               min(r.price) AS min_price, max(r.price) AS max_price,
               min(r.price) FILTER (WHERE r.cum > floor(0.25 * (r.total - 1))) AS p25_lo,
               min(r.price) FILTER (WHERE r.cum > ceil(0.25 * (r.total - 1))) AS p25_hi,
               min(r.price) FILTER (WHERE r.cum > floor(0.50 * (r.total - 1))) AS p50_lo,
               min(r.price) FILTER (WHERE r.cum > ceil(0.50 * (r.total - 1))) AS p50_hi,
               min(r.price) FILTER (WHERE r.cum > floor(0.75 * (r.total - 1))) AS p75_lo,
               min(r.price) FILTER (WHERE r.cum > ceil(0.75 * (r.total - 1))) AS p75_hi
        FROM ranked r
        GROUP BY r.listing_id, r.bucket, r.shop_id, r.currency, r.total
    )
    SELECT k.listing_id, k.bucket, k.shop_id, k.currency, k.total::bigint, k.min_price,
           k.p25_lo + (0.25 * (k.total - 1) - floor(0.25 * (k.total - 1))) * (k.p25_hi - k.p25_lo),
           k.p50_lo + (0.50 * (k.total - 1) - floor(0.50 * (k.total - 1))) * (k.p50_hi - k.p50_lo),
           k.p75_lo + (0.75 * (k.total - 1) - floor(0.75 * (k.total - 1))) * (k.p75_hi - k.p75_lo),
           k.max_price
    FROM ranks k
$$;

COMMENT ON FUNCTION analytics.competitor_bands(interval, uuid, uuid, timestamptz, timestamptz) IS
    'Competitor price bands per listing per bucket: min, p25, median, p75 (percentile_cont semantics), max, count.';

-- Units and revenue per listing per bucket (net of returns).
CREATE FUNCTION analytics.sales_by_listing(
    width interval, shop uuid DEFAULT NULL, listing uuid DEFAULT NULL,
    since timestamptz DEFAULT NULL, until timestamptz DEFAULT NULL)
RETURNS TABLE (listing_id uuid, bucket timestamptz, shop_id uuid, currency text, units bigint, revenue numeric,
               units_sold bigint, units_returned bigint, revenue_returned numeric, lines bigint)
LANGUAGE sql STABLE AS $$
    SELECT s.listing_id, analytics.bucket(width, s.bucket), s.shop_id, s.currency,
           sum(s.units)::bigint, sum(s.revenue), sum(s.units_sold)::bigint, sum(s.units_returned)::bigint,
           sum(s.revenue_returned), sum(s.lines)::bigint
    FROM analytics.sales_by_listing_hour s
    WHERE (shop IS NULL OR s.shop_id = shop)
      AND (listing IS NULL OR s.listing_id = listing)
      AND (since IS NULL OR s.bucket >= analytics.bucket('1 hour', since))
      AND (until IS NULL OR s.bucket < until)
    GROUP BY 1, 2, 3, 4
$$;

-- Units and revenue per shop per bucket (net of returns).
CREATE FUNCTION analytics.sales_by_shop(
    width interval, shop uuid DEFAULT NULL,
    since timestamptz DEFAULT NULL, until timestamptz DEFAULT NULL)
RETURNS TABLE (shop_id uuid, bucket timestamptz, currency text, units bigint, revenue numeric,
               units_sold bigint, units_returned bigint, revenue_returned numeric, lines bigint)
LANGUAGE sql STABLE AS $$
    SELECT s.shop_id, analytics.bucket(width, s.bucket), s.currency,
           sum(s.units)::bigint, sum(s.revenue), sum(s.units_sold)::bigint, sum(s.units_returned)::bigint,
           sum(s.revenue_returned), sum(s.lines)::bigint
    FROM analytics.sales_by_shop_hour s
    WHERE (shop IS NULL OR s.shop_id = shop)
      AND (since IS NULL OR s.bucket >= analytics.bucket('1 hour', since))
      AND (until IS NULL OR s.bucket < until)
    GROUP BY 1, 2, 3
$$;

-- Fixed-width views for analysts working in SQL (filter them like tables).
CREATE VIEW analytics.competitor_bands_hour AS SELECT * FROM analytics.competitor_bands('1 hour');
CREATE VIEW analytics.competitor_bands_day AS SELECT * FROM analytics.competitor_bands('1 day');
CREATE VIEW analytics.competitor_bands_week AS SELECT * FROM analytics.competitor_bands('7 days');
CREATE VIEW analytics.sales_by_listing_day AS SELECT * FROM analytics.sales_by_listing('1 day');
CREATE VIEW analytics.sales_by_listing_week AS SELECT * FROM analytics.sales_by_listing('7 days');
CREATE VIEW analytics.sales_by_shop_day AS SELECT * FROM analytics.sales_by_shop('1 day');
CREATE VIEW analytics.sales_by_shop_week AS SELECT * FROM analytics.sales_by_shop('7 days');
