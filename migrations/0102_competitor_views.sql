-- Projection `competitor_prices`: every competitor observation, and an hourly price histogram
-- per listing from which bands (min, p25, median, p75, max, count) are computed exactly for any
-- bucket width of an hour or more. Percentiles do not add up across buckets; counts per price
-- do, so the histogram is what the projector can maintain incrementally.
CREATE TABLE analytics.competitor_observations (
    log_position bigint PRIMARY KEY,
    shop_id uuid NOT NULL,
    listing_id uuid NOT NULL,
    competitor text NOT NULL,
    price numeric NOT NULL,
    currency text NOT NULL,
    source text NOT NULL,
    observed_at timestamptz NOT NULL,     -- business time: when the price was seen
    recorded_at timestamptz NOT NULL,
    batch_id uuid NOT NULL,               -- the ObservationBatch aggregate that recorded it
    actor_id text NOT NULL
);
CREATE INDEX competitor_observations_listing_time ON analytics.competitor_observations (listing_id, observed_at);
CREATE INDEX competitor_observations_shop_time ON analytics.competitor_observations (shop_id, observed_at);
CREATE INDEX competitor_observations_observed_brin ON analytics.competitor_observations USING brin (observed_at);

CREATE TABLE analytics.competitor_price_histogram (
    listing_id uuid NOT NULL,
    bucket timestamptz NOT NULL,          -- analytics.bucket('1 hour', observed_at)
    price numeric NOT NULL,
    shop_id uuid NOT NULL,
    currency text NOT NULL,
    observations bigint NOT NULL,         -- how many observations saw this price in this hour
    PRIMARY KEY (listing_id, bucket, price)
);
CREATE INDEX competitor_price_histogram_shop ON analytics.competitor_price_histogram (shop_id, bucket);
