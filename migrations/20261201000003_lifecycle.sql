-- The rest of a payment's life: capture, cancel (void) and refund.
--
-- Capture, void and refund are processor operations, each a row of
-- `operations` worked through the queue exactly like a charge: guarded
-- transitions with history, a lease and a fencing attempt counter, the
-- processor's idempotency key (the operation id), retry tiers, dead letters,
-- and the reconciliation of unknown outcomes.

-- `cancelled`: never charged (cancelled before processing) or its
-- authorization voided.
ALTER TABLE payments DROP CONSTRAINT payments_status_check;
ALTER TABLE payments ADD CONSTRAINT payments_status_check
    CHECK (status IN ('pending', 'processing', 'succeeded', 'failed', 'cancelled'));

-- Money on the payment, kept by the same statements that change it:
-- what an authorization still allows to capture, what was captured, and
-- what refunds that are not `failed` add up to (reserved when a refund is
-- created, released when it fails). The check makes over-refunding
-- impossible whatever the concurrency.
ALTER TABLE payments
    ADD COLUMN amount_capturable   bigint NOT NULL DEFAULT 0,
    ADD COLUMN amount_captured     bigint NOT NULL DEFAULT 0,
    ADD COLUMN captured_at         timestamptz,
    ADD COLUMN capture_details     jsonb,
    ADD COLUMN amount_refunded     bigint NOT NULL DEFAULT 0,
    ADD COLUMN cancelled_at        timestamptz,
    ADD COLUMN cancellation_reason text,
    ADD CONSTRAINT payments_refunds_within_capture
        CHECK (amount_refunded BETWEEN 0 AND amount_captured);

-- Payments that succeeded before this migration.
UPDATE payments SET amount_captured = amount, captured_at = finished_at
WHERE status = 'succeeded' AND captured;
UPDATE payments SET amount_capturable = amount
WHERE status = 'succeeded' AND NOT captured;

-- Authorizations the rescuer voids when they expire.
CREATE INDEX payments_uncaptured_idx ON payments (finished_at)
    WHERE status = 'succeeded' AND NOT captured AND amount_capturable > 0;

CREATE TABLE operations (
    id                    uuid        PRIMARY KEY,
    payment_id            uuid        NOT NULL REFERENCES payments (id),
    merchant_id           uuid        NOT NULL REFERENCES merchants (id),
    kind                  text        NOT NULL
        CONSTRAINT operations_kind_check CHECK (kind IN ('capture', 'void', 'refund')),
    status                text        NOT NULL
        CONSTRAINT operations_status_check CHECK (status IN ('pending', 'processing', 'succeeded', 'failed')),
    amount                bigint      NOT NULL CONSTRAINT operations_amount_check CHECK (amount > 0),
    currency              text        NOT NULL,
    -- Who asked: `api` (a merchant) or `system` (an expired authorization).
    requested_by          text        NOT NULL,
    reason                text,
    notes                 text,
    statement_descriptor  text,
    metadata              jsonb       NOT NULL DEFAULT '{}'::jsonb,
    -- The processor's id of the capture, void or refund, and its refusal.
    processor_id          text,
    failure_code          text,
    failure_message       text,
    -- Processing bookkeeping, as on `payments`.
    attempts              integer     NOT NULL DEFAULT 0,
    replayed_attempts     integer     NOT NULL DEFAULT 0,
    last_error            text,
    next_attempt_at       timestamptz,
    lease_expires_at      timestamptz,
    due_at                timestamptz,
    outcome_unknown_since timestamptz,
    held_at               timestamptz,
    claimed_by            text,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    finished_at           timestamptz
);

-- One capture or void at a time per payment.
CREATE UNIQUE INDEX operations_one_open_capture_or_void ON operations (payment_id)
    WHERE kind IN ('capture', 'void') AND status IN ('pending', 'processing');
CREATE INDEX operations_payment_idx ON operations (payment_id, created_at DESC, id DESC);
CREATE INDEX operations_due_idx ON operations (due_at) WHERE due_at IS NOT NULL;

CREATE TABLE operation_status_history (
    id            bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    operation_id  uuid        NOT NULL REFERENCES operations (id),
    from_status   text,
    to_status     text        NOT NULL,
    actor         text        NOT NULL,
    reason        text,
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX operation_status_history_operation_idx ON operation_status_history (operation_id, id);

-- `Prefer: wait` on a capture, cancel or refund waits for the operation:
-- the same channel and function as payments (the payload is the row's id).
-- Operations are few, so every one notifies.
CREATE TRIGGER operations_notify_finished
    AFTER UPDATE OF status ON operations
    FOR EACH ROW
    WHEN (NEW.status IN ('succeeded', 'failed') AND OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION notify_payment_finished();

-- A payment cancelled by a void also wakes its waiters.
DROP TRIGGER payments_notify_finished ON payments;
CREATE TRIGGER payments_notify_finished
    AFTER UPDATE OF status ON payments
    FOR EACH ROW
    WHEN (NEW.notify_on_finish
          AND NEW.status IN ('succeeded', 'failed', 'cancelled')
          AND OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION notify_payment_finished();
