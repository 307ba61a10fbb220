-- Projection `customers`: one row per marketplace order (OrderBatch.OrderRecorded), with its buyer's
-- pseudonym (the buyer's subject id, never a name) until that buyer is erased (Privacy.SubjectErased
-- sets it NULL): what repeat-customer analysis reads.
CREATE TABLE analytics.shop_orders (
    shop_id uuid NOT NULL,
    order_id text NOT NULL,
    buyer text,                 -- a pseudonym: the same for every order of one buyer in the shop; NULL: none or erased
    placed_at timestamptz NOT NULL,
    items int,
    order_total numeric,        -- NULL where the source gave no total (an order-items file)
    currency text,
    log_position bigint NOT NULL,
    PRIMARY KEY (shop_id, order_id)
);
CREATE INDEX shop_orders_buyer ON analytics.shop_orders (buyer) WHERE buyer IS NOT NULL;
CREATE INDEX shop_orders_placed ON analytics.shop_orders (shop_id, placed_at);
