-- Projection `sales`: one row per sale or return line, and hourly units/revenue rollups per
-- listing and per shop. Returns and cancellations count negative, so sums are net figures.
CREATE TABLE analytics.sales (
    log_position bigint PRIMARY KEY,
    shop_id uuid NOT NULL,
    listing_id uuid NOT NULL,
    kind text NOT NULL,                   -- sale | return
    quantity bigint NOT NULL,             -- negative for a return
    unit_price numeric NOT NULL,
    revenue numeric NOT NULL,             -- quantity * unit_price (negative for a return)
    currency text NOT NULL,
    order_id text NOT NULL,
    transaction_id text NOT NULL,
    sold_at timestamptz NOT NULL,         -- business time
    recorded_at timestamptz NOT NULL,
    batch_id uuid NOT NULL,
    source text NOT NULL,
    actor_id text NOT NULL
);
CREATE INDEX sales_listing_time ON analytics.sales (listing_id, sold_at);
CREATE INDEX sales_shop_time ON analytics.sales (shop_id, sold_at);
CREATE INDEX sales_sold_brin ON analytics.sales USING brin (sold_at);

CREATE TABLE analytics.sales_by_listing_hour (
    listing_id uuid NOT NULL,
    bucket timestamptz NOT NULL,          -- analytics.bucket('1 hour', sold_at)
    shop_id uuid NOT NULL,
    currency text NOT NULL,
    units bigint NOT NULL,                -- net: sold minus returned
    revenue numeric NOT NULL,             -- net
    units_sold bigint NOT NULL,
    units_returned bigint NOT NULL,       -- positive count of returned units
    revenue_returned numeric NOT NULL,    -- positive amount refunded
    lines bigint NOT NULL,                -- sale and return lines counted
    PRIMARY KEY (listing_id, bucket)
);
CREATE INDEX sales_by_listing_hour_shop ON analytics.sales_by_listing_hour (shop_id, bucket);

CREATE TABLE analytics.sales_by_shop_hour (
    shop_id uuid NOT NULL,
    bucket timestamptz NOT NULL,
    currency text NOT NULL,
    units bigint NOT NULL,
    revenue numeric NOT NULL,
    units_sold bigint NOT NULL,
    units_returned bigint NOT NULL,
    revenue_returned numeric NOT NULL,
    lines bigint NOT NULL,
    PRIMARY KEY (shop_id, bucket)
);
