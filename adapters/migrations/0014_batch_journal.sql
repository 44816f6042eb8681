-- The batch journal (docs/durability.md, "The batch journal"): an order shard's group
-- commit writes one row, its batch's changes as columns (engine/journal_batch.py), and the
-- idempotency keys of the orders it places; the order is acknowledged once that commits.
-- A materializer behind the commits writes the query tables (orders, order_lines,
-- order_transitions, outbox, carts, settled_sales) from the rows, in order, and deletes
-- each row in the transaction that materializes it: the table holds the batches not
-- materialized yet, a shard's restart materializes them before it reads the tables.
--
-- `owners`, `owner`: the writing shard (its slots are slot % owners = owner);
-- `position`: the order of the shard's batches (its incarnation in the high 32 bits:
-- the rows left at a start, all of one incarnation, are materialized before it writes).
CREATE TABLE IF NOT EXISTS flashtx.order_journal (
    owners        integer NOT NULL,
    owner         integer NOT NULL,
    position      bigint NOT NULL,
    created_at_ms bigint NOT NULL,
    orders        integer NOT NULL,
    payload       bytea NOT NULL,
    PRIMARY KEY (owners, owner, position)
);

-- One order per (merchant, idempotency key) across every shard, enforced when the batch
-- placing it commits (orders route by buyer: one key can reach two shards), before its
-- order row exists. Filled from the orders there are.
CREATE TABLE IF NOT EXISTS flashtx.order_keys (
    merchant_id     text NOT NULL,
    idempotency_key text NOT NULL,
    order_id        text NOT NULL,
    PRIMARY KEY (merchant_id, idempotency_key)
);
INSERT INTO flashtx.order_keys (merchant_id, idempotency_key, order_id)
SELECT merchant_id, idempotency_key, order_id FROM flashtx.orders
ON CONFLICT DO NOTHING;
