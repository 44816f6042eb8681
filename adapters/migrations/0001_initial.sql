-- flashtx durable state: a ledger. Counters (available, reserved, sold, per-buyer
-- holdings) are not stored; they are derived from these rows on recovery.
CREATE SCHEMA IF NOT EXISTS flashtx;

CREATE TABLE flashtx.merchants (
    merchant_id      text PRIMARY KEY,
    name             text NOT NULL,
    payment_window_s integer NOT NULL,
    created_at_ms    bigint NOT NULL
);

-- Keys are stored hashed (sha256 of the secret); the secret is shown once.
CREATE TABLE flashtx.api_keys (
    merchant_id   text NOT NULL REFERENCES flashtx.merchants,
    key_id        text NOT NULL,
    secret_hash   text NOT NULL,
    scopes        smallint[] NOT NULL,
    label         text NOT NULL DEFAULT '',
    created_at_ms bigint NOT NULL,
    revoked       boolean NOT NULL DEFAULT false,
    PRIMARY KEY (merchant_id, key_id)
);

CREATE TABLE flashtx.skus (
    merchant_id     text NOT NULL,
    sku_id          text NOT NULL,
    slot            integer NOT NULL,
    name            text NOT NULL,
    price_minor     bigint NOT NULL,
    per_buyer_limit integer NOT NULL DEFAULT 0,
    updated_at_ms   bigint NOT NULL,
    PRIMARY KEY (merchant_id, sku_id)
);
CREATE INDEX skus_slot ON flashtx.skus (slot);

-- on_hand of a SKU = sum(delta) of its adjustments.
CREATE TABLE flashtx.stock_adjustments (
    adjustment_id bigserial PRIMARY KEY,
    merchant_id   text NOT NULL,
    sku_id        text NOT NULL,
    slot          integer NOT NULL,
    delta         bigint NOT NULL,
    reason        text NOT NULL DEFAULT '',
    at_ms         bigint NOT NULL
);
CREATE INDEX stock_adjustments_slot ON flashtx.stock_adjustments (slot);

-- The immutable part of an order; its state is its latest transition.
CREATE TABLE flashtx.orders (
    order_id            text PRIMARY KEY,
    merchant_id         text NOT NULL,
    buyer_id            text NOT NULL,
    idempotency_key     text NOT NULL,
    slot                integer NOT NULL,
    total_minor         bigint NOT NULL,
    created_at_ms       bigint NOT NULL,
    payment_deadline_ms bigint NOT NULL,
    -- The database enforces exactly one order per idempotency key, too.
    UNIQUE (merchant_id, idempotency_key)
);
CREATE INDEX orders_slot ON flashtx.orders (slot);
CREATE INDEX orders_buyer ON flashtx.orders (merchant_id, buyer_id);

CREATE TABLE flashtx.order_lines (
    order_id         text NOT NULL,
    line_no          smallint NOT NULL,
    merchant_id      text NOT NULL,
    sku_id           text NOT NULL,
    sku_slot         integer NOT NULL,
    quantity         integer NOT NULL,
    unit_price_minor bigint NOT NULL,
    PRIMARY KEY (order_id, line_no)
);
CREATE INDEX order_lines_sku_slot ON flashtx.order_lines (sku_slot);

-- status numbers as in flashtx.v1.OrderStatus: 1 RESERVED, 2 PAID, 3 FULFILLED,
-- 4 CANCELLED, 5 EXPIRED.
CREATE TABLE flashtx.order_transitions (
    order_id    text NOT NULL,
    sequence    integer NOT NULL,
    merchant_id text NOT NULL,
    slot        integer NOT NULL,
    status      smallint NOT NULL,
    event       text NOT NULL,
    refunded    boolean NOT NULL DEFAULT false,
    at_ms       bigint NOT NULL,
    PRIMARY KEY (order_id, sequence)
);
CREATE INDEX order_transitions_slot ON flashtx.order_transitions (slot);

-- Transactional outbox: written in the same transaction as the change it announces.
CREATE TABLE flashtx.outbox (
    outbox_id     bigserial PRIMARY KEY,
    event_id      text NOT NULL UNIQUE,
    merchant_id   text NOT NULL,
    event_type    text NOT NULL,
    order_id      text NOT NULL DEFAULT '',
    sequence      integer NOT NULL DEFAULT 0,
    payload       bytea NOT NULL,  -- the event, serialized
    created_at_ms bigint NOT NULL,
    relayed       boolean NOT NULL DEFAULT false
);
CREATE INDEX outbox_unrelayed ON flashtx.outbox (outbox_id) WHERE NOT relayed;
