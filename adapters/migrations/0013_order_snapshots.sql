-- Order shard snapshots (docs/operating.md, "Snapshots"): each order shard writes its
-- live orders now and then, with the outbox position they cover; recovery loads the
-- latest snapshot and reads back only the orders whose outbox rows come after it.
--
-- One row per order shard (`owner` of `owners`: its slots are slot % owners = owner), so
-- the table holds as many rows as there are order shards, however long the history.
-- `outbox_id`: every order change whose outbox row has a larger id is not in the body;
-- `generation`: the value of the setting orders_generation the shard recovered with (an
-- import of legacy orders, which writes no outbox rows, moves it on, and a snapshot of
-- an older generation is not used). `body`: msgpack columns, `checksum`: its CRC-32.
CREATE TABLE IF NOT EXISTS flashtx.order_snapshots (
    owners      integer NOT NULL,
    owner       integer NOT NULL,
    format      integer NOT NULL,
    generation  bigint NOT NULL,
    outbox_id   bigint NOT NULL,
    taken_at_ms bigint NOT NULL,
    orders      integer NOT NULL,
    checksum    bigint NOT NULL,
    body        bytea NOT NULL,
    PRIMARY KEY (owners, owner)
);
-- The largest outbox_id pruning has deleted: a snapshot older than it cannot be replayed.
INSERT INTO flashtx.settings (name, value) VALUES ('outbox_pruned_through', '0')
ON CONFLICT (name) DO NOTHING;
INSERT INTO flashtx.settings (name, value) VALUES ('orders_generation', '0')
ON CONFLICT (name) DO NOTHING;
