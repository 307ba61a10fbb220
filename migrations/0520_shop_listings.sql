-- Which listings each shop has, written by the command that registers them, in its transaction
-- (like shop_rules): readers page through a shop's listings without the reservations table.
CREATE TABLE shop_listings (
    shop_id uuid NOT NULL,
    listing_id uuid NOT NULL,
    PRIMARY KEY (shop_id, listing_id)
);

INSERT INTO shop_listings (shop_id, listing_id)
SELECT shop_id, aggregate_id FROM reservations WHERE kind = 'listing';
