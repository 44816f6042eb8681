-- Carts, campaigns (flash sales) and campaign stock buckets.

-- Cart reservation policy: 0 reserves at checkout; above 0 an item entering a cart holds
-- its stock this many seconds.
ALTER TABLE flashtx.merchants ADD COLUMN IF NOT EXISTS cart_hold_s integer NOT NULL DEFAULT 0;

-- An order placed in a campaign, and where each line's stock came from (a campaign
-- bucket's id, or '' for the SKU itself).
ALTER TABLE flashtx.orders ADD COLUMN IF NOT EXISTS campaign_id text NOT NULL DEFAULT '';
ALTER TABLE flashtx.order_lines ADD COLUMN IF NOT EXISTS stock_key text NOT NULL DEFAULT '';

-- skus: the campaign's SKUs with their sale price, limits, granted units and bucket ids
-- (JSON). The buckets' stock is in skus / stock_adjustments like any counter's.
CREATE TABLE flashtx.campaigns (
    merchant_id   text NOT NULL,
    campaign_id   text NOT NULL,
    name          text NOT NULL,
    starts_at_ms  bigint NOT NULL,
    ends_at_ms    bigint NOT NULL,
    buckets       integer NOT NULL,
    skus          jsonb NOT NULL,
    created_at_ms bigint NOT NULL,
    ended         boolean NOT NULL DEFAULT false,
    PRIMARY KEY (merchant_id, campaign_id)
);

-- Carts are written behind (not before the answer); lines as JSON.
CREATE TABLE flashtx.carts (
    merchant_id   text NOT NULL,
    buyer_id      text NOT NULL,
    campaign_id   text NOT NULL,
    slot          integer NOT NULL,
    lines         jsonb NOT NULL,
    updated_at_ms bigint NOT NULL,
    expires_at_ms bigint NOT NULL,
    PRIMARY KEY (merchant_id, buyer_id, campaign_id)
);
CREATE INDEX carts_slot ON flashtx.carts (slot);
