-- Events and delivery attempts are kept for `EVENT_RETENTION_DAYS` (issue
-- 18), then pruned in batches by the API, off the request path
-- (`common::db::webhooks::prune_events`). An event goes with its deliveries,
-- and a delivery with its attempts (by cascade, found through this index).
CREATE INDEX webhook_attempts_delivery_idx ON webhook_attempts (delivery_id);

-- An attempt's event is reached through its delivery; without this key
-- every event deleted would scan the attempts for it.
ALTER TABLE webhook_attempts DROP CONSTRAINT webhook_attempts_event_id_fkey;
