-- A bulk replacement of the whole model (store.Load, store.ImportCatalogue: truncate and copy everything in one
-- transaction) is recorded in the change feed as one change, op 'reload' (table_name ''), not row by row: a
-- feed reader that meets it must read a snapshot (at that position or later) instead of applying rows.
--
-- keygate_feed_reload() records it: it forgets the changes the transaction recorded so far (the reload
-- supersedes them) and writes the reload as the transaction's change 1. From then on the feed's triggers of this
-- transaction record nothing (the check is one primary-key lookup per statement, and per row of an update). The
-- transaction still takes one position at commit, and the invariants' triggers (00004) still note and check
-- everything it writes. Every other writer is recorded as before: its changes never start with a reload.

-- +goose Up
ALTER TABLE keygate_changes DROP CONSTRAINT keygate_changes_op_check,
    ADD CONSTRAINT keygate_changes_op_check CHECK (op IN ('insert', 'update', 'delete', 'truncate', 'reload'));

-- keygate_feed_reloading() says whether the current transaction recorded a reload.
-- +goose StatementBegin
CREATE FUNCTION keygate_feed_reloading() RETURNS boolean LANGUAGE sql AS $$
    SELECT EXISTS (SELECT 1 FROM keygate_changes WHERE xid = pg_current_xact_id() AND seq = 1 AND op = 'reload')
$$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE FUNCTION keygate_feed_reload() RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    me xid8 := pg_current_xact_id();
BEGIN
    IF keygate_feed_reloading() THEN
        RETURN;
    END IF;
    PERFORM keygate_register_commit();
    DELETE FROM keygate_changes WHERE xid = me;
    INSERT INTO keygate_changes (xid, seq, table_name, op) VALUES (me, 1, '', 'reload');
END
$$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION keygate_feed_statement() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    me   xid8 := pg_current_xact_id();
    base integer;
    key  text;
BEGIN
    IF keygate_feed_reloading() THEN
        RETURN NULL;
    END IF;
    PERFORM keygate_register_commit();
    SELECT coalesce(max(seq), 0) INTO base FROM keygate_changes WHERE xid = me;
    IF TG_OP IN ('INSERT', 'DELETE') THEN
        SELECT string_agg(format('%L, r -> %L', c, c), ', ') INTO key FROM unnest(TG_ARGV) AS c;
        EXECUTE format('INSERT INTO keygate_changes (xid, seq, table_name, op, key, row)
            SELECT $1, $2 + row_number() OVER (), $3, $4, jsonb_build_object(%s), r
            FROM (SELECT to_jsonb(t) AS r FROM %I t) s', key, CASE TG_OP WHEN 'INSERT' THEN 'new_rows' ELSE 'old_rows' END)
            USING me, base, TG_TABLE_NAME, lower(TG_OP);
    ELSE
        INSERT INTO keygate_changes (xid, seq, table_name, op) VALUES (me, base + 1, TG_TABLE_NAME, 'truncate');
    END IF;
    RETURN NULL;
END
$$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION keygate_feed_update() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    me xid8 := pg_current_xact_id();
    r  jsonb;
BEGIN
    IF keygate_feed_reloading() THEN
        RETURN NULL;
    END IF;
    r := to_jsonb(NEW);
    PERFORM keygate_register_commit();
    INSERT INTO keygate_changes (xid, seq, table_name, op, key, old_key, row)
        SELECT me, coalesce(max(c.seq), 0) + 1, TG_TABLE_NAME, 'update', keygate_key(r, TG_ARGV),
            keygate_key(to_jsonb(OLD), TG_ARGV), r
        FROM keygate_changes c WHERE c.xid = me;
    RETURN NULL;
END
$$;
-- +goose StatementEnd

-- +goose Down
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION keygate_feed_statement() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    me   xid8 := pg_current_xact_id();
    base integer;
    key  text;
BEGIN
    PERFORM keygate_register_commit();
    SELECT coalesce(max(seq), 0) INTO base FROM keygate_changes WHERE xid = me;
    IF TG_OP IN ('INSERT', 'DELETE') THEN
        SELECT string_agg(format('%L, r -> %L', c, c), ', ') INTO key FROM unnest(TG_ARGV) AS c;
        EXECUTE format('INSERT INTO keygate_changes (xid, seq, table_name, op, key, row)
            SELECT $1, $2 + row_number() OVER (), $3, $4, jsonb_build_object(%s), r
            FROM (SELECT to_jsonb(t) AS r FROM %I t) s', key, CASE TG_OP WHEN 'INSERT' THEN 'new_rows' ELSE 'old_rows' END)
            USING me, base, TG_TABLE_NAME, lower(TG_OP);
    ELSE
        INSERT INTO keygate_changes (xid, seq, table_name, op) VALUES (me, base + 1, TG_TABLE_NAME, 'truncate');
    END IF;
    RETURN NULL;
END
$$;
-- +goose StatementEnd
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION keygate_feed_update() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    me xid8 := pg_current_xact_id();
    r  jsonb := to_jsonb(NEW);
BEGIN
    PERFORM keygate_register_commit();
    INSERT INTO keygate_changes (xid, seq, table_name, op, key, old_key, row)
        SELECT me, coalesce(max(c.seq), 0) + 1, TG_TABLE_NAME, 'update', keygate_key(r, TG_ARGV),
            keygate_key(to_jsonb(OLD), TG_ARGV), r
        FROM keygate_changes c WHERE c.xid = me;
    RETURN NULL;
END
$$;
-- +goose StatementEnd
-- 00005's feed has no reload: migrating down refuses while one is kept (prune through the latest position first).
-- +goose StatementBegin
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM keygate_changes WHERE op = 'reload') THEN
        RAISE EXCEPTION 'the change feed holds reload changes, which migration 00005 cannot express'
            USING HINT = 'Prune the feed through the latest position (store.Prune) before migrating down.';
    END IF;
END
$$;
-- +goose StatementEnd
ALTER TABLE keygate_changes DROP CONSTRAINT keygate_changes_op_check,
    ADD CONSTRAINT keygate_changes_op_check CHECK (op IN ('insert', 'update', 'delete', 'truncate'));
DROP FUNCTION keygate_feed_reload(), keygate_feed_reloading();
