-- Bounded history (docs/operations.md, "History and retention"): an order shard keeps
-- only live orders in memory and recovers them alone, however long the history.
--
-- finished_at_ms: set (in the commit of the transition) when an order is fulfilled,
-- cancelled or expired; recovery reads the orders where it is NULL, by a partial index.
ALTER TABLE flashtx.orders ADD COLUMN IF NOT EXISTS finished_at_ms bigint;
UPDATE flashtx.orders o SET finished_at_ms = s.at_ms
  FROM flashtx.order_states s
 WHERE s.order_id = o.order_id AND s.status IN (3, 4, 5);
CREATE INDEX IF NOT EXISTS orders_live ON flashtx.orders (slot) WHERE finished_at_ms IS NULL;
-- A slot's orders by time: the idempotency window read at recovery, a buyer's finished
-- orders (ListOrders), and everything the slot index served.
CREATE INDEX IF NOT EXISTS orders_slot_created ON flashtx.orders (slot, created_at_ms);
DROP INDEX IF EXISTS flashtx.orders_slot;

-- Units of fulfilled orders, summed per stock counter: a fulfilled order leaves memory,
-- but its sale still counts against the stock it came from. Per buyer only for campaign
-- orders (buyer_id '' otherwise): a campaign's per-buyer limits count the whole campaign,
-- a SKU's count live orders. Written in the same transaction as the fulfilment; grows
-- with slots x SKUs sold and campaign buyers, not with orders.
CREATE TABLE IF NOT EXISTS flashtx.settled_sales (
    slot        integer NOT NULL,
    merchant_id text NOT NULL,
    buyer_id    text NOT NULL,
    stock_key   text NOT NULL,   -- the SKU, or the campaign bucket the units came from
    sku_id      text NOT NULL,
    campaign_id text NOT NULL,
    units       bigint NOT NULL,
    -- per slot: each order shard hands over the sales of its own slots
    PRIMARY KEY (slot, merchant_id, buyer_id, stock_key, sku_id, campaign_id)
);
INSERT INTO flashtx.settled_sales (slot, merchant_id, buyer_id, stock_key, sku_id,
                                   campaign_id, units)
SELECT o.slot, o.merchant_id, CASE WHEN o.campaign_id = '' THEN '' ELSE o.buyer_id END,
       CASE WHEN l.stock_key = '' THEN l.sku_id ELSE l.stock_key END, l.sku_id,
       o.campaign_id, sum(l.quantity)
  FROM flashtx.orders o
  JOIN flashtx.order_states s USING (order_id)
  JOIN flashtx.order_lines l USING (order_id)
 WHERE s.status = 3
 GROUP BY 1, 2, 3, 4, 5, 6
ON CONFLICT DO NOTHING;
