-- An order's first transition (sequence 1, "placed", RESERVED) is implied by its row in
-- flashtx.orders: the engine writes transitions from sequence 2 on, one row less per
-- placed order on the hot path (imported orders keep the explicit rows they have).
-- order_states: every order's latest state, implied ones included; read it rather than
-- order_transitions alone.
CREATE OR REPLACE VIEW flashtx.order_states AS
SELECT o.order_id, o.merchant_id, o.slot,
       coalesce(t.sequence, 1) AS sequence, coalesce(t.status, 1::smallint) AS status,
       coalesce(t.event, 'placed') AS event, coalesce(t.refunded, false) AS refunded,
       coalesce(t.at_ms, o.created_at_ms) AS at_ms
FROM flashtx.orders o
LEFT JOIN (SELECT DISTINCT ON (order_id) order_id, sequence, status, event, refunded, at_ms
           FROM flashtx.order_transitions ORDER BY order_id, sequence DESC) t
       USING (order_id);
