-- Indexes no query uses: each one cost every group commit an index insert per row.
DROP INDEX IF EXISTS flashtx.orders_buyer;
DROP INDEX IF EXISTS flashtx.order_lines_sku_slot;
DROP INDEX IF EXISTS flashtx.order_transitions_slot;
