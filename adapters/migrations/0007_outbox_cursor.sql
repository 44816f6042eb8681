-- The relay reads the outbox with a cursor over (txid, outbox_id) instead of flagging
-- every relayed row with an UPDATE. txid is the writing transaction's id: the relay only
-- reads rows of transactions older than every transaction still running, so a row that
-- commits late can never fall behind the cursor (outbox_id alone can: ids are taken
-- before commit). Rows written before this migration get txid 0; the cursor starts after
-- the last row relayed under the old scheme.
ALTER TABLE flashtx.outbox ADD COLUMN IF NOT EXISTS txid xid8 NOT NULL DEFAULT '0';
ALTER TABLE flashtx.outbox ALTER COLUMN txid SET DEFAULT pg_current_xact_id();
CREATE INDEX IF NOT EXISTS outbox_cursor ON flashtx.outbox (txid, outbox_id);
INSERT INTO flashtx.settings (name, value)
SELECT 'relay_cursor', '0:' || COALESCE(
    (SELECT min(outbox_id) - 1 FROM flashtx.outbox WHERE NOT relayed),
    (SELECT max(outbox_id) FROM flashtx.outbox), 0)
ON CONFLICT (name) DO NOTHING;
DROP INDEX IF EXISTS flashtx.outbox_unrelayed;
