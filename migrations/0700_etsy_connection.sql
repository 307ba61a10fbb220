-- The Etsy connection of a shop (issue 14): what must never enter the immutable log (tokens, PKCE
-- verifiers: encrypted under ETSYPRO_SECRET_KEY like TOTP secrets) and the working state of the
-- price pusher and the sync. Rows that follow an event are written in the event's transaction
-- (commands/marketplace.py); the push queue and its log position commit together (streams/etsy_push.py).

CREATE SCHEMA IF NOT EXISTS marketplace;

-- A started connect: single use, short-lived; the state is the browser's credential at the callback.
CREATE TABLE marketplace.etsy_pkce (
    state_digest bytea PRIMARY KEY,          -- HMAC-SHA256 of the state sent to Etsy
    shop_id uuid NOT NULL,
    tenant_id text NOT NULL,
    actor_id text NOT NULL,                  -- who started it: the connection is recorded as theirs
    verifier_encrypted bytea NOT NULL,
    redirect_uri text NOT NULL,
    etsy_shop_id bigint NOT NULL,            -- the Etsy shop the seller named when starting
    expires_at timestamptz NOT NULL,
    used_at timestamptz
);

-- The shop's grant: tokens encrypted, bound to the shop; `generation` moves on every rotation, so
-- two refreshers cannot both store (the loser's answer is dropped and it reads the winner's).
CREATE TABLE marketplace.etsy_grants (
    shop_id uuid PRIMARY KEY,
    tenant_id text NOT NULL,
    etsy_shop_id bigint NOT NULL,
    etsy_user_id bigint NOT NULL,
    status text NOT NULL CHECK (status IN ('connected', 'revoked', 'disconnected')),
    access_encrypted bytea,
    refresh_encrypted bytea,
    access_expires_at timestamptz,
    refresh_expires_at timestamptz,
    generation bigint NOT NULL DEFAULT 0,
    status_reason text NOT NULL DEFAULT '',
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX etsy_grants_etsy_shop ON marketplace.etsy_grants (etsy_shop_id) WHERE status = 'connected';

-- Which engine listing is which Etsy listing, and the price Etsy last had by our knowledge
-- (pushed, or seen in a sync): a different price seen at Etsy is drift.
CREATE TABLE marketplace.etsy_listings (
    listing_id uuid PRIMARY KEY,
    shop_id uuid NOT NULL,
    etsy_listing_id bigint NOT NULL,
    title text NOT NULL DEFAULT '',
    state text NOT NULL DEFAULT 'active',
    etsy_price numeric,
    pushed_version bigint NOT NULL DEFAULT 0,  -- the listing's version whose price Etsy has (pushed or drifted)
    UNIQUE (shop_id, etsy_listing_id)
);

-- Prices waiting to go to Etsy: one row per listing, always its newest accepted price (an older
-- change is superseded, never pushed over a newer one).
CREATE TABLE marketplace.etsy_push_queue (
    listing_id uuid PRIMARY KEY,
    shop_id uuid NOT NULL,
    version bigint NOT NULL,                 -- the listing's version of the change
    price numeric NOT NULL,
    currency text NOT NULL,
    enqueued_at timestamptz NOT NULL DEFAULT now(),
    attempts integer NOT NULL DEFAULT 0,
    next_try_at timestamptz NOT NULL DEFAULT now(),
    last_error text
);
CREATE INDEX etsy_push_queue_due ON marketplace.etsy_push_queue (next_try_at);

-- The sync's cursors: receipts modified at or after `receipts_since` (epoch seconds) are read next.
CREATE TABLE marketplace.etsy_sync (
    shop_id uuid PRIMARY KEY,
    receipts_since bigint NOT NULL DEFAULT 0,
    receipts_synced_at timestamptz,
    listings_synced_at timestamptz,
    last_error text
);

-- The rate budget as Etsy's headers last told it (per app key), for the status read.
CREATE TABLE marketplace.etsy_budget (
    app text PRIMARY KEY,
    limit_per_second integer,
    remaining_this_second integer,
    limit_per_day integer,
    remaining_today integer,
    throttled_until timestamptz,
    seen_at timestamptz NOT NULL DEFAULT now()
);

-- Prices changed at Etsy outside the engine, written with the event that records each.
CREATE TABLE marketplace.etsy_drifts (
    shop_id uuid NOT NULL,
    listing_id uuid NOT NULL,
    etsy_listing_id bigint NOT NULL,
    seen_at timestamptz NOT NULL DEFAULT now(),
    etsy_price numeric NOT NULL,
    engine_price numeric NOT NULL,
    currency text NOT NULL,
    applied boolean NOT NULL,                -- became the listing's price (else: refused, see refusal)
    refusal text
);
CREATE INDEX etsy_drifts_shop ON marketplace.etsy_drifts (shop_id, seen_at DESC);
