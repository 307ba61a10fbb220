-- Demand model runs (read/model_runs.py): elasticities, forecasts and recommendations fitted by
-- `etsypro analyze refresh` (or `serve`'s schedule), never on the request path. Derived data: any of
-- it can be refitted from the log's projections; none of it is an event.
--
-- A shop's refresh writes every run of the shop, then points analytics.model_refreshes at it, in one
-- transaction: readers see the previous refresh until then, and a crash leaves it served. Runs of
-- older refreshes stay (which run justified which price) for read/model_runs.py RETAIN_DAYS days;
-- the runs a shop's current refresh holds are never removed.
CREATE TABLE analytics.model_runs (
    run_id uuid PRIMARY KEY,
    refresh_id uuid NOT NULL,             -- the shop refresh that wrote it (one transaction)
    shop_id uuid NOT NULL,
    listing_id uuid,                      -- NULL: the shop level (pooled elasticity, shop forecast)
    kind text NOT NULL CHECK (kind IN ('elasticity', 'forecast', 'recommendation')),
    created_at timestamptz NOT NULL,
    first_day date,                       -- the data window the model saw (NULL: no data at all)
    last_day date,
    model text NOT NULL,                  -- method, family or the chosen forecaster; 'refused' when none
    params jsonb NOT NULL,                -- the evidence thresholds, horizon, inputs such as price and guardrails
    diagnostics jsonb,                    -- fit diagnostics, backtest figures (NULL when refused)
    answer jsonb NOT NULL,                -- the whole answer; money as decimal strings; a refusal's reason and needs
    refused boolean NOT NULL
);
-- The latest run of kind K for listing L: the shop's current refresh (model_refreshes), then this.
CREATE UNIQUE INDEX model_runs_of_refresh ON analytics.model_runs (refresh_id, kind, listing_id);
CREATE UNIQUE INDEX model_runs_of_refresh_shop_level ON analytics.model_runs (refresh_id, kind)
    WHERE listing_id IS NULL;
-- A listing's history of runs, newest first; and retention by shop and age.
CREATE INDEX model_runs_listing_history ON analytics.model_runs (listing_id, kind, created_at DESC);
CREATE INDEX model_runs_shop_created ON analytics.model_runs (shop_id, created_at);

CREATE TABLE analytics.model_refreshes (
    shop_id uuid PRIMARY KEY,
    refresh_id uuid NOT NULL UNIQUE,      -- the refresh whose runs are served
    created_at timestamptz NOT NULL,
    first_day date,
    last_day date,
    listings integer NOT NULL,
    runs integer NOT NULL,
    seconds double precision NOT NULL     -- how long the refresh took, reading to commit
);

-- One `analyze refresh` over several shops: an unfinished pass is resumed (its refreshed shops skipped).
CREATE TABLE analytics.model_refresh_passes (
    pass_id uuid PRIMARY KEY,
    scope text NOT NULL,                  -- 'all' or the one shop's id
    started_at timestamptz NOT NULL,
    finished_at timestamptz
);
CREATE INDEX model_refresh_passes_unfinished ON analytics.model_refresh_passes (scope, started_at)
    WHERE finished_at IS NULL;

-- Every listing's elasticity from its shop's current refresh: GET /shops/{shop}/analytics/elasticities.
CREATE VIEW analytics.latest_elasticities AS
SELECT r.listing_id, f.shop_id, r.run_id, r.created_at, r.first_day::text AS first_day,
       r.last_day::text AS last_day, r.refused,
       (r.answer ->> 'elasticity')::float8 AS elasticity,
       (r.answer -> 'ci95' ->> 0)::float8 AS ci95_low,
       (r.answer -> 'ci95' ->> 1)::float8 AS ci95_high,
       (r.answer ->> 'se')::float8 AS se,
       r.answer ->> 'label' AS label,
       (r.answer ->> 'n_days')::int8 AS n_days,
       (r.answer ->> 'distinct_prices')::int8 AS distinct_prices,
       (r.answer ->> 'total_units')::float8 AS total_units,
       r.model AS method,
       r.answer ->> 'reason' AS reason,
       r.answer ->> 'needs' AS needs
FROM analytics.model_refreshes f
JOIN analytics.model_runs r ON r.refresh_id = f.refresh_id AND r.kind = 'elasticity' AND r.listing_id IS NOT NULL;

COMMENT ON TABLE analytics.model_runs IS
    'Demand model runs (elasticity, forecast, recommendation) per listing or shop: window, model, params, diagnostics, the answer.';
COMMENT ON TABLE analytics.model_refreshes IS 'Per shop, the refresh whose model runs are served.';
COMMENT ON VIEW analytics.latest_elasticities IS 'Each listing''s elasticity run of its shop''s current refresh.';
