-- Currencies (ISO 4217): each merchant's, fixed when it is created; each order records
-- the currency it was placed in. Merchants created before take USD; orders placed before
-- record none ('').
ALTER TABLE flashtx.merchants ADD COLUMN IF NOT EXISTS currency text NOT NULL DEFAULT 'USD';
ALTER TABLE flashtx.orders ADD COLUMN IF NOT EXISTS currency text NOT NULL DEFAULT '';
