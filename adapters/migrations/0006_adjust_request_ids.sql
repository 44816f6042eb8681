-- AdjustStock's request id: a retried adjustment is applied once. Only client
-- adjustments carry one; the partial index leaves every other row alone.
ALTER TABLE flashtx.stock_adjustments ADD COLUMN IF NOT EXISTS request_id text;
CREATE UNIQUE INDEX IF NOT EXISTS stock_adjustments_request
    ON flashtx.stock_adjustments (merchant_id, request_id) WHERE request_id IS NOT NULL;
