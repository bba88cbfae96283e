-- A capture or void the processor refused is never silent (issue 18): the
-- payment carries the last failed operation's code and message, and the
-- failure is an event (`payment.capture_failed`, `payment.void_failed`).

-- `{"type", "failure_code", "failure_message", "failed_at"}` of the latest
-- capture, void or refund of this payment that ended `failed`; NULL if none.
ALTER TABLE payments ADD COLUMN last_operation_error jsonb;

-- Refunds have events of their own (`refund.*`, with the refund as the
-- object); a failed capture or void reports the payment as it is after the
-- failure (its `last_operation_error` filled, and `cancelled` when the
-- processor no longer holds the authorization).
CREATE OR REPLACE FUNCTION refund_history_event() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    kind text;
    op operations%ROWTYPE;
    pay payments%ROWTYPE;
BEGIN
    IF NEW.from_status IS NOT DISTINCT FROM NEW.to_status
       OR NEW.to_status NOT IN ('pending', 'succeeded', 'failed')
       OR (NEW.from_status IS NOT NULL AND NEW.to_status = 'pending') THEN
        -- Claims, retries and holds report nothing.
        RETURN NULL;
    END IF;
    SELECT * INTO op FROM operations WHERE id = NEW.operation_id;
    IF op.kind = 'refund' THEN
        kind := CASE
            WHEN NEW.from_status IS NULL THEN 'refund.created'
            WHEN NEW.to_status = 'succeeded' THEN 'refund.succeeded'
            WHEN NEW.to_status = 'failed' THEN 'refund.failed'
        END;
        PERFORM write_event(kind, op.merchant_id, op.payment_id, op.id,
                             jsonb_build_object('refund', to_jsonb(op)),
                             NEW.request_id, NEW.idempotency_key);
    ELSIF NEW.to_status = 'failed' THEN
        kind := CASE op.kind WHEN 'capture' THEN 'payment.capture_failed'
                             ELSE 'payment.void_failed' END;
        SELECT * INTO pay FROM payments WHERE id = op.payment_id;
        PERFORM write_event(kind, pay.merchant_id, pay.id, NULL, payment_snapshot(pay),
                            NEW.request_id, NEW.idempotency_key);
    END IF;
    RETURN NULL;
END
$$;
