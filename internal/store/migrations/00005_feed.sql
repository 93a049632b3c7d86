-- The change feed: an ordered, gapless commit position and an outbox of every row change.
--
-- keygate_position holds one counter. Every transaction that changes an RBAC table takes the next position in its
-- commit hook (00004's deferred keygate_commit_hook, after the invariant checks), by updating that row: the row
-- lock is held until the transaction's commit is complete and visible, so the next writer's position is taken
-- only after it, and positions become visible in strictly increasing order with no gaps (an aborted transaction's
-- increment rolls back). Whoever sees position P sees every position below it. A sequence could not give this:
-- nextval is not transactional and is taken before commit, so position 8 can commit (and be read) before 7 does,
-- and a reader that moved past 8 would never see 7.
--
-- keygate_changes holds the rows written by triggers on every RBAC table, keyed by transaction id and sequence
-- within the transaction; keygate_commits maps each committed transaction to its position. Inserts and deletes
-- are recorded per statement (from transition tables: a COPY of a million rows is one INSERT ... SELECT), updates
-- per row (old and new key), TRUNCATE as one 'truncate' change. keygate_feed_horizon says up to which position
-- changes were pruned.

-- +goose Up
CREATE TABLE keygate_position (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    position  bigint NOT NULL DEFAULT 0 CHECK (position >= 0)
);
INSERT INTO keygate_position DEFAULT VALUES;

CREATE TABLE keygate_feed_horizon (
    singleton      boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    pruned_through bigint NOT NULL DEFAULT 0
);
INSERT INTO keygate_feed_horizon DEFAULT VALUES;

CREATE TABLE keygate_commits (
    position     bigint PRIMARY KEY,
    xid          xid8 NOT NULL UNIQUE,
    changes      integer NOT NULL,
    committed_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE TABLE keygate_changes (
    xid        xid8 NOT NULL,
    seq        integer NOT NULL,
    table_name text NOT NULL,
    op         text NOT NULL CHECK (op IN ('insert', 'update', 'delete', 'truncate')),
    -- the row's primary key (for an update: after it), as {"column": value}; NULL for truncate
    key        jsonb,
    -- an update's primary key before it
    old_key    jsonb,
    -- the row after an insert or update, before a delete (every column, generated ones included)
    row        jsonb,
    PRIMARY KEY (xid, seq)
);

-- keygate_position() is the latest committed position: called right after a commit, a consistency token at
-- least as new as that commit.
-- +goose StatementBegin
CREATE FUNCTION keygate_position() RETURNS bigint LANGUAGE sql STABLE AS $$
    SELECT position FROM keygate_position
$$;
-- +goose StatementEnd

-- keygate_key(row, columns) is the primary key of a row as {"column": value}.
-- +goose StatementBegin
CREATE FUNCTION keygate_key(r jsonb, cols text[]) RETURNS jsonb LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    k jsonb := '{}';
    c text;
BEGIN
    FOREACH c IN ARRAY cols LOOP
        k := k || jsonb_build_object(c, r -> c);
    END LOOP;
    RETURN k;
END
$$;
-- +goose StatementEnd

-- Inserts, deletes and truncates, per statement. TG_ARGV: the table's primary key columns. The key is built by
-- jsonb_build_object in one statement per trigger call (a function call per row would cost a COPY of a million
-- rows minutes).
-- +goose StatementBegin
CREATE FUNCTION keygate_feed_statement() RETURNS trigger LANGUAGE plpgsql AS $$
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

-- Updates, per row (a statement's old and new rows cannot be paired when the key changes).
-- +goose StatementBegin
CREATE FUNCTION keygate_feed_update() RETURNS trigger LANGUAGE plpgsql AS $$
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

-- +goose StatementBegin
DO $$
DECLARE
    t    record;
    args text;
BEGIN
    FOR t IN SELECT * FROM (VALUES
        ('keys', ARRAY['id']), ('users', ARRAY['id']), ('organizations', ARRAY['id']), ('keychains', ARRAY['id']),
        ('keychain_keys', ARRAY['keychain_id', 'key_id']), ('roles', ARRAY['id']),
        ('role_keychains', ARRAY['role_id', 'keychain_id']), ('role_owner_only', ARRAY['role_id', 'key_id']),
        ('teams', ARRAY['id']), ('team_members', ARRAY['team_id', 'user_id']), ('workspaces', ARRAY['id']),
        ('workspace_teams', ARRAY['workspace_id', 'team_id']), ('workspace_members', ARRAY['workspace_id', 'user_id']),
        ('designs', ARRAY['id']),
        ('assignments', ARRAY['user_id', 'role_id', 'org_id', 'team_id', 'workspace_id']),
        ('tokens', ARRAY['id']), ('routes', ARRAY['service', 'method', 'path'])) AS v (name, cols)
    LOOP
        SELECT string_agg(quote_literal(c), ', ') INTO args FROM unnest(t.cols) AS c;
        EXECUTE format('CREATE TRIGGER %I AFTER INSERT ON %I REFERENCING NEW TABLE AS new_rows '
            'FOR EACH STATEMENT EXECUTE FUNCTION keygate_feed_statement(%s)', t.name || '_feed_insert', t.name, args);
        EXECUTE format('CREATE TRIGGER %I AFTER DELETE ON %I REFERENCING OLD TABLE AS old_rows '
            'FOR EACH STATEMENT EXECUTE FUNCTION keygate_feed_statement(%s)', t.name || '_feed_delete', t.name, args);
        EXECUTE format('CREATE TRIGGER %I AFTER TRUNCATE ON %I '
            'FOR EACH STATEMENT EXECUTE FUNCTION keygate_feed_statement(%s)', t.name || '_feed_truncate', t.name, args);
        EXECUTE format('CREATE TRIGGER %I AFTER UPDATE ON %I '
            'FOR EACH ROW EXECUTE FUNCTION keygate_feed_update(%s)', t.name || '_feed_update', t.name, args);
    END LOOP;
END
$$;
-- +goose StatementEnd

-- The transaction's position, taken last in the commit hook (after the invariants' guard locks, so a writer
-- never holds the counter while waiting for a guard). A transaction that changed no row takes none.
-- +goose StatementBegin
CREATE FUNCTION keygate_take_position() RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    me xid8 := pg_current_xact_id();
    n  integer;
    p  bigint;
BEGIN
    SELECT coalesce(max(seq), 0) INTO n FROM keygate_changes WHERE xid = me;
    IF n = 0 THEN
        RETURN;
    END IF;
    UPDATE keygate_commits SET changes = n WHERE xid = me; -- the hook ran before (SET CONSTRAINTS IMMEDIATE)
    IF FOUND THEN
        RETURN;
    END IF;
    UPDATE keygate_position SET position = position + 1 RETURNING position INTO p;
    INSERT INTO keygate_commits (position, xid, changes) VALUES (p, me, n);
END
$$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION keygate_commit_hook() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Checking is idempotent (what was checked is forgotten), so a second run checks only what was noted since.
    DELETE FROM keygate_commit_hooks WHERE xid = pg_current_xact_id();
    PERFORM keygate_check_invariants();
    PERFORM keygate_take_position();
    RETURN NULL;
END
$$;
-- +goose StatementEnd

-- +goose Down
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION keygate_commit_hook() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Checking is idempotent (what was checked is forgotten), so a second run checks only what was noted since.
    DELETE FROM keygate_commit_hooks WHERE xid = pg_current_xact_id();
    PERFORM keygate_check_invariants();
    RETURN NULL;
END
$$;
-- +goose StatementEnd
-- +goose StatementBegin
DO $$
DECLARE
    t text;
    s text;
BEGIN
    FOREACH t IN ARRAY ARRAY['keys', 'users', 'organizations', 'keychains', 'keychain_keys', 'roles',
        'role_keychains', 'role_owner_only', 'teams', 'team_members', 'workspaces', 'workspace_teams',
        'workspace_members', 'designs', 'assignments', 'tokens', 'routes']
    LOOP
        FOREACH s IN ARRAY ARRAY['insert', 'delete', 'truncate', 'update'] LOOP
            EXECUTE format('DROP TRIGGER %I ON %I', t || '_feed_' || s, t);
        END LOOP;
    END LOOP;
END
$$;
-- +goose StatementEnd
DROP FUNCTION keygate_take_position(), keygate_feed_update(), keygate_feed_statement(), keygate_key(jsonb, text[]),
    keygate_position();
DROP TABLE keygate_changes, keygate_commits, keygate_feed_horizon, keygate_position;
