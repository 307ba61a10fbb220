-- A listing's title and status change after registration (Listing.Described, from the marketplace):
-- the board moves them forward only for a newer listing version, as it does prices and guardrails.
ALTER TABLE analytics.current_prices ADD COLUMN details_version bigint NOT NULL DEFAULT 1;
