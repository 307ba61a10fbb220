-- Competitor watches (issue 14 item 6): which Etsy listings a listing's competitors are, by id or by
-- a keyword search over active listings. The sync polls them within the app's call budget; each
-- price seen is a CompetitorPriceObserved event (source etsy-watch). One watch per listing.
CREATE TABLE marketplace.competitor_watches (
    listing_id uuid PRIMARY KEY,
    shop_id uuid NOT NULL,
    etsy_listing_ids bigint[],              -- named competitors (at most 100: one batch call)
    keywords text,                           -- or a search over every shop's active listings
    max_results int NOT NULL DEFAULT 25 CHECK (max_results BETWEEN 1 AND 100),
    created_at timestamptz NOT NULL DEFAULT now(),
    polled_at timestamptz,
    last_seen int,                           -- prices recorded by the last poll
    last_error text,
    CHECK ((etsy_listing_ids IS NULL) <> (keywords IS NULL))
);
CREATE INDEX competitor_watches_shop ON marketplace.competitor_watches (shop_id);
