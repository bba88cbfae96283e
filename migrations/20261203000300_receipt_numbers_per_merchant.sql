-- Receipt numbers count per merchant (issue 18): one sequence was shared
-- by every merchant, so any receipt told the platform's volume and, between
-- two receipts, other merchants' counts. Each merchant now has its own
-- sequence (created with the merchant): a receipt says only how many
-- receipts this merchant issued, as a paper invoice number does. `nextval`
-- never blocks and never takes a row lock, so two payments of one merchant
-- never wait for each other; numbers are unique per merchant (a sequence
-- never returns a value twice) and may have gaps (a rolled-back insert).

-- The name of a merchant's receipt sequence (48 bytes, within the 63 of
-- an identifier).
CREATE FUNCTION receipt_sequence(merchant uuid) RETURNS regclass
LANGUAGE sql STABLE
RETURN ('receipt_numbers_' || replace(merchant::text, '-', ''))::regclass;

CREATE FUNCTION create_receipt_sequence() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('CREATE SEQUENCE %I', 'receipt_numbers_' || replace(NEW.id::text, '-', ''));
    RETURN NULL;
END
$$;

CREATE TRIGGER merchants_receipt_sequence
    AFTER INSERT ON merchants
    FOR EACH ROW EXECUTE FUNCTION create_receipt_sequence();

-- Merchants that exist already continue after their highest number, so
-- their numbers stay unique.
DO $$
DECLARE
    m record;
    name text;
BEGIN
    FOR m IN SELECT id FROM merchants LOOP
        name := 'receipt_numbers_' || replace(m.id::text, '-', '');
        EXECUTE format('CREATE SEQUENCE %I', name);
        PERFORM setval(name, COALESCE(
            (SELECT max(receipt_number) FROM payments WHERE merchant_id = m.id), 0) + 1, false);
    END LOOP;
END
$$;

ALTER TABLE payments ALTER COLUMN receipt_number DROP DEFAULT;
DROP SEQUENCE receipt_numbers;
