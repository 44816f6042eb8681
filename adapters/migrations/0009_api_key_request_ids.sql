-- CreateApiKey's request id: a retried create answers the key it made, once.
ALTER TABLE flashtx.api_keys ADD COLUMN IF NOT EXISTS request_id text NOT NULL DEFAULT '';
CREATE UNIQUE INDEX IF NOT EXISTS api_keys_request
    ON flashtx.api_keys (merchant_id, request_id) WHERE request_id <> '';
