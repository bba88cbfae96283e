-- Whether a claim on a `processing` row is void: its lease ended, or its
-- worker stopped proving that it is alive (no heartbeat within
-- `dead_after_secs`, or no `workers` row at all). One definition for the
-- worker's claim (taking over a void claim) and the rescuer's scan (finding
-- rows whose worker died), which must agree on it.
CREATE FUNCTION claim_is_void(
    lease_expires_at timestamptz,
    claimed_by text,
    dead_after_secs double precision
) RETURNS boolean
LANGUAGE sql STABLE
RETURN lease_expires_at < now() OR NOT EXISTS (
    SELECT 1 FROM workers w
    WHERE w.id = claimed_by
      AND w.heartbeat_at > now() - make_interval(secs => dead_after_secs)
);
