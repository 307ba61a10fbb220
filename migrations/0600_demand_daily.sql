-- Projection `demand_daily`: units, revenue and paid prices per listing and calendar day, the input
-- of the demand models (read/demand.py builds their daily frame from it). A day is the UTC calendar
-- day of the sale line's business time (sold_at), never of the time it was recorded.
--
-- Exactly once: each sale or return event is a ledger row keyed by its log position, inserted with
-- ON CONFLICT DO NOTHING; the daily rollup adds only the rows that statement actually inserted, so
-- an event delivered twice (redelivery, a projector that lost its tracking) is counted once.
--
-- The price in force, competitor bands and registration are not copied here: they are computed at
-- read time from analytics.price_changes, analytics.competitor_price_histogram and
-- analytics.current_prices, which already hold them exactly once.
CREATE TABLE analytics.demand_lines (
    log_position bigint PRIMARY KEY,      -- the SalesBatch.Sold / Returned event
    listing_id uuid NOT NULL,
    day date NOT NULL,                    -- (sold_at AT TIME ZONE 'UTC')::date
    quantity bigint NOT NULL,             -- negative for a return
    amount numeric NOT NULL               -- quantity * unit_price (negative for a return)
);

CREATE TABLE analytics.demand_daily (
    listing_id uuid NOT NULL,
    day date NOT NULL,                    -- UTC calendar day of business time
    shop_id uuid NOT NULL,
    currency text NOT NULL,
    units bigint NOT NULL,                -- net: sold minus returned
    revenue numeric NOT NULL,             -- net: paid on sales minus refunded on returns
    units_sold bigint NOT NULL,
    units_returned bigint NOT NULL,       -- positive count of returned units
    paid_amount numeric NOT NULL,         -- sum of quantity * unit_price over sold lines: mean paid unit
                                          -- price = paid_amount / units_sold
    lines bigint NOT NULL,                -- sale and return lines counted
    PRIMARY KEY (listing_id, day)
);
CREATE INDEX demand_daily_shop_day ON analytics.demand_daily (shop_id, day);

COMMENT ON TABLE analytics.demand_daily IS
    'Net units and revenue, sold and returned units and the paid amount per listing and UTC day of business time.';
COMMENT ON TABLE analytics.demand_lines IS
    'One row per sale or return event counted into analytics.demand_daily (keyed by log position: counted once).';
