-- Bounded history (docs/operating.md, "History and retention"): an order shard keeps
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

-- Units of fulfilled orders, summed per order shard and stock counter: a fulfilled order
-- leaves memory, but its sale still counts against the stock it came from. Per buyer
-- only for campaign orders (buyer_id '' otherwise): a campaign's per-buyer limits count
-- the whole campaign, a SKU's count live orders. Written in the same transaction as the
-- fulfilment; grows with SKUs sold and campaign buyers, not with orders. Rows belong to
-- order shard `owner` of `owners` (its slots: slot % owners = owner); when the number
-- of order shards changes (the setting settled_sales_owners differs), the first order
-- shard to start rebuilds the table from the ledger (one pass over fulfilled orders),
-- as it does here at the first start after this migration.
CREATE TABLE IF NOT EXISTS flashtx.settled_sales (
    owners      integer NOT NULL,
    owner       integer NOT NULL,
    merchant_id text NOT NULL,
    buyer_id    text NOT NULL,
    stock_key   text NOT NULL,   -- the SKU, or the campaign bucket the units came from
    sku_id      text NOT NULL,
    campaign_id text NOT NULL,
    units       bigint NOT NULL,
    PRIMARY KEY (owners, owner, merchant_id, buyer_id, stock_key, sku_id, campaign_id)
);
