-- Notify only for payments a client is waiting on (`Prefer: wait`).
--
-- NOTIFY serialises every notifying transaction's commit on one global lock,
-- so notifying for every finished payment made all workers' commits queue
-- behind each other. Most clients poll or never wait; for them the trigger
-- now does nothing. Additive: a new column with a default, and the trigger
-- replaced by one with a narrower condition.

ALTER TABLE payments ADD COLUMN notify_on_finish boolean NOT NULL DEFAULT false;

DROP TRIGGER payments_notify_finished ON payments;

CREATE TRIGGER payments_notify_finished
    AFTER UPDATE OF status ON payments
    FOR EACH ROW
    WHEN (NEW.notify_on_finish
          AND NEW.status IN ('succeeded', 'failed')
          AND OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION notify_payment_finished();
