-- PayOrder's payment reference, kept on the payment and on every later transition of the
-- order, so the latest transition tells it: a second PayOrder with another reference is
-- refused.
ALTER TABLE flashtx.order_transitions ADD COLUMN IF NOT EXISTS reference text NOT NULL
    DEFAULT '';
