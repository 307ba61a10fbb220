-- Projection `price_board`: shops and the current price of every listing.
CREATE TABLE analytics.shops (
    shop_id uuid PRIMARY KEY,
    tenant_id text NOT NULL,
    name text NOT NULL,
    currency text NOT NULL,
    marketplace text NOT NULL,
    opened_at timestamptz NOT NULL,       -- business time of the opening
    log_position bigint NOT NULL
);
CREATE INDEX shops_tenant ON analytics.shops (tenant_id);

CREATE TABLE analytics.current_prices (
    listing_id uuid PRIMARY KEY,
    shop_id uuid NOT NULL,
    external_id text NOT NULL,
    sku text NOT NULL,
    title text NOT NULL,
    status text NOT NULL,
    price numeric NOT NULL,
    currency text NOT NULL,
    floor numeric,
    ceiling numeric,
    cost numeric,
    version bigint NOT NULL,              -- the listing's version after the last event applied here
    price_version bigint NOT NULL,        -- version of the event that set `price`
    guardrails_version bigint NOT NULL,   -- version of the event that set floor/ceiling/cost
    price_changed_at timestamptz NOT NULL,-- business time of the event that set `price`
    price_source text NOT NULL,           -- manual | rule | experiment | rollback | import
    price_actor_id text NOT NULL,
    registered_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,      -- recorded time of the last event applied here
    log_position bigint NOT NULL
);
CREATE INDEX current_prices_shop ON analytics.current_prices (shop_id, listing_id);

-- Projection `price_changes`: one row per price a listing was given, the registration included.
CREATE TABLE analytics.price_changes (
    log_position bigint PRIMARY KEY,      -- pricing_events.notification_id of the event
    listing_id uuid NOT NULL,
    version bigint NOT NULL,              -- the listing's version that this event created
    shop_id uuid NOT NULL,
    kind text NOT NULL,                   -- registered | changed | compensation
    price numeric NOT NULL,
    previous_price numeric,               -- NULL for the registration
    change numeric,                       -- price - previous_price
    currency text NOT NULL,
    source text NOT NULL,
    rule text,
    compensates bigint[] NOT NULL DEFAULT '{}',  -- versions this compensation undoes
    reason text NOT NULL,
    actor_id text NOT NULL,
    actor_kind text NOT NULL,
    command_id text NOT NULL,
    correlation_id text NOT NULL,
    causation_id text NOT NULL,
    occurred_at timestamptz NOT NULL,     -- business time
    recorded_at timestamptz NOT NULL      -- when the event was recorded
);
CREATE UNIQUE INDEX price_changes_listing_version ON analytics.price_changes (listing_id, version);
CREATE INDEX price_changes_shop_time ON analytics.price_changes (shop_id, occurred_at);
CREATE INDEX price_changes_recorded_brin ON analytics.price_changes USING brin (recorded_at);
