-- The API key that placed an order: a channel key reads and cancels only its own orders.
ALTER TABLE flashtx.orders ADD COLUMN IF NOT EXISTS key_id text NOT NULL DEFAULT '';
