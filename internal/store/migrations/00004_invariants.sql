-- Invariants over several rows, checked at commit and race-free under concurrent writers:
--   organizations_live_org_admin   an organization has a live (not soft-deleted) Organization Admin;
--   keygate_live_provider_admin    a write that takes away a live Provider Admin (unassigns or demotes one,
--                                  soft-deletes its user, truncates assignments) leaves another one, or no
--                                  users at all. A database whose users never had one (being set up) may
--                                  exist: the invariant starts with the first Provider Admin;
--   users_free_plan_single_org     a Free-plan user holds roles in a single organization (00002 checks it per
--                                  statement; this adds the check at commit, under a lock).
--
-- How: statement-level triggers on the tables whose writes can break an invariant note what to check (an
-- organization, a user, the provider invariant) in keygate_pending_checks, and register the transaction's
-- commit hook once (a row in keygate_commit_hooks). The hook, a constraint trigger deferred to commit, locks the
-- guard rows of what it checks in one sorted statement (an upsert into keygate_guards: a real write, so a
-- REPEATABLE READ or SERIALIZABLE writer that raced gets a serialization failure), then checks each invariant
-- with a fresh READ COMMITTED snapshot: the second of two racing transactions waits for the first's commit and
-- sees its result. A transaction that holds ACCESS EXCLUSIVE locks on organizations, users and assignments (a
-- Load) needs no guard rows: nobody else can write those tables before it commits.
--
-- Existing data is not checked by this migration (like a NOT VALID constraint); every later write of an
-- organization, assignment or user is, and a Load rewrites and so checks everything.

-- +goose Up
CREATE TABLE keygate_guards (
    kind    text NOT NULL,
    id      text COLLATE "C" NOT NULL,
    version bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (kind, id)
);

-- What a transaction's commit hook must check: kind 'org' (id: the organization), 'all_orgs', 'user' (the Free
-- plan of user id), 'provider'. Rows live only inside their transaction (the hook deletes them), so the table is
-- unlogged. Duplicates are allowed (cheaper to write than to refuse; the checks do not mind them).
CREATE UNLOGGED TABLE keygate_pending_checks (
    xid  xid8 NOT NULL DEFAULT pg_current_xact_id(),
    kind text NOT NULL,
    id   text COLLATE "C" NOT NULL DEFAULT ''
);
CREATE INDEX keygate_pending_checks_xid_idx ON keygate_pending_checks (xid, kind);

-- One row per transaction that wrote an RBAC table (more if the hook ran early, under SET CONSTRAINTS
-- IMMEDIATE, and the transaction wrote again); its deferred trigger is the commit hook.
CREATE UNLOGGED TABLE keygate_commit_hooks (
    xid xid8 NOT NULL DEFAULT pg_current_xact_id()
);
CREATE INDEX keygate_commit_hooks_xid_idx ON keygate_commit_hooks (xid);

-- keygate_register_commit queues the commit hook of the current transaction unless it is queued already.
-- +goose StatementBegin
CREATE FUNCTION keygate_register_commit() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM keygate_commit_hooks WHERE xid = pg_current_xact_id()) THEN
        INSERT INTO keygate_commit_hooks DEFAULT VALUES;
    END IF;
END
$$;
-- +goose StatementEnd

-- keygate_note_changes: after every statement on an RBAC table, note what to check and register the hook.
-- +goose StatementBegin
CREATE FUNCTION keygate_note_changes() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM keygate_register_commit();
    CASE TG_TABLE_NAME
    WHEN 'assignments' THEN
        IF TG_OP = 'TRUNCATE' THEN -- before truncating: is a live Provider Admin going?
            INSERT INTO keygate_pending_checks (kind) VALUES ('all_orgs');
            IF EXISTS (SELECT 1 FROM assignments a JOIN users u ON u.id = a.user_id
                    WHERE a.role_scope = 'provider' AND u.deleted_at IS NULL) THEN
                INSERT INTO keygate_pending_checks (kind) VALUES ('provider');
            END IF;
            RETURN NULL;
        END IF;
        IF TG_OP IN ('UPDATE', 'DELETE') THEN
            -- an organization may have lost an admin, the system a Provider Admin
            INSERT INTO keygate_pending_checks (kind, id)
                SELECT DISTINCT 'org', o.org_id FROM old_rows o WHERE o.org_id IS NOT NULL
               ;
            IF EXISTS (SELECT 1 FROM old_rows o WHERE o.role_scope = 'provider') THEN
                INSERT INTO keygate_pending_checks (kind) VALUES ('provider');
            END IF;
        END IF;
        IF TG_OP IN ('INSERT', 'UPDATE') THEN
            -- a user may have joined a second organization (whatever the plan reads now: it may change)
            INSERT INTO keygate_pending_checks (kind, id)
                SELECT DISTINCT 'user', n.user_id FROM new_rows n WHERE n.org_id IS NOT NULL
               ;
        END IF;
    WHEN 'users' THEN
        IF TG_OP = 'UPDATE' THEN
            -- soft-deleted: the user's organizations may have lost their last live admin
            INSERT INTO keygate_pending_checks (kind, id)
                SELECT DISTINCT 'org', a.org_id
                FROM new_rows n JOIN assignments a ON a.user_id = n.id
                WHERE n.deleted_at IS NOT NULL AND a.org_id IS NOT NULL
               ;
            IF EXISTS (SELECT 1 FROM new_rows n JOIN assignments a ON a.user_id = n.id
                    WHERE n.deleted_at IS NOT NULL AND a.role_scope = 'provider') THEN
                INSERT INTO keygate_pending_checks (kind) VALUES ('provider');
            END IF;
            -- moved to the Free plan
            INSERT INTO keygate_pending_checks (kind, id)
                SELECT 'user', n.id FROM new_rows n WHERE n.plan = 'free'
               ;
        END IF;
    WHEN 'organizations' THEN
        IF TG_OP IN ('INSERT', 'UPDATE') THEN
            INSERT INTO keygate_pending_checks (kind, id)
                SELECT 'org', n.id FROM new_rows n;
        END IF;
    WHEN 'roles' THEN
        -- the default Organization Admin or Provider Admin role renamed or made ordinary
        IF TG_OP = 'UPDATE' AND EXISTS (SELECT 1 FROM old_rows o
                WHERE o.system AND o.name IN ('Organization Admin', 'Provider Admin')) THEN
            INSERT INTO keygate_pending_checks (kind) VALUES ('all_orgs'), ('provider');
        END IF;
    ELSE
        NULL;
    END CASE;
    RETURN NULL;
END
$$;
-- +goose StatementEnd

CREATE TRIGGER assignments_note_insert AFTER INSERT ON assignments
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION keygate_note_changes();
CREATE TRIGGER assignments_note_update AFTER UPDATE ON assignments
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION keygate_note_changes();
CREATE TRIGGER assignments_note_delete AFTER DELETE ON assignments
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION keygate_note_changes();
CREATE TRIGGER assignments_note_truncate BEFORE TRUNCATE ON assignments
    FOR EACH STATEMENT EXECUTE FUNCTION keygate_note_changes();
CREATE TRIGGER users_note_update AFTER UPDATE ON users
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION keygate_note_changes();
CREATE TRIGGER organizations_note_insert AFTER INSERT ON organizations
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION keygate_note_changes();
CREATE TRIGGER organizations_note_update AFTER UPDATE ON organizations
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION keygate_note_changes();
CREATE TRIGGER roles_note_update AFTER UPDATE ON roles
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION keygate_note_changes();

-- keygate_check_invariants checks what the current transaction noted, under the guards' locks, and forgets it.
-- +goose StatementBegin
CREATE FUNCTION keygate_check_invariants() RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    me        xid8 := pg_current_xact_id();
    bad       record;
    n         bigint;
    exclusive boolean := false;
BEGIN
    IF EXISTS (SELECT 1 FROM keygate_pending_checks WHERE xid = me AND kind = 'all_orgs') THEN
        INSERT INTO keygate_pending_checks (kind, id) SELECT 'org', o.id FROM organizations o;
        DELETE FROM keygate_pending_checks WHERE xid = me AND kind = 'all_orgs';
    END IF;
    SELECT count(*) INTO n FROM keygate_pending_checks WHERE xid = me;
    IF n = 0 THEN
        RETURN;
    END IF;

    -- Lock, in one sorted statement (so two checkers cannot deadlock), unless nobody else can write the tables.
    -- (pg_locks is asked only for big checks: reading it takes every lock partition.)
    IF n >= 1000 THEN
        SELECT count(*) = 3 INTO exclusive FROM pg_locks l
        WHERE l.locktype = 'relation' AND l.pid = pg_backend_pid() AND l.granted AND l.mode = 'AccessExclusiveLock'
            AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
            AND l.relation IN ('organizations'::regclass, 'users'::regclass, 'assignments'::regclass);
    END IF;
    IF NOT exclusive THEN
        INSERT INTO keygate_guards (kind, id)
            SELECT DISTINCT p.kind, p.id FROM keygate_pending_checks p WHERE p.xid = me ORDER BY p.kind, p.id
            ON CONFLICT (kind, id) DO UPDATE SET version = keygate_guards.version + 1;
    END IF;

    -- Each check below is a new statement: under READ COMMITTED it sees every transaction that committed
    -- before the locks above were granted.
    SELECT o.id INTO bad
    FROM keygate_pending_checks p JOIN organizations o ON o.id = p.id
    WHERE p.xid = me AND p.kind = 'org'
        AND NOT EXISTS (
            SELECT 1 FROM assignments a
                JOIN roles r ON r.id = a.role_id
                JOIN users u ON u.id = a.user_id
            WHERE a.org_id = o.id AND r.system AND r.name = 'Organization Admin' AND u.deleted_at IS NULL)
    ORDER BY o.id
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'organization % would have no live Organization Admin', bad.id
            USING ERRCODE = 'check_violation', CONSTRAINT = 'organizations_live_org_admin',
                  TABLE = 'organizations', SCHEMA = current_schema(),
                  HINT = 'Assign Organization Admin to a live user of the organization in the same transaction.';
    END IF;

    IF EXISTS (SELECT 1 FROM keygate_pending_checks p WHERE p.xid = me AND p.kind = 'provider')
        AND EXISTS (SELECT 1 FROM users)
        AND NOT EXISTS (
            SELECT 1 FROM assignments a
                JOIN roles r ON r.id = a.role_id
                JOIN users u ON u.id = a.user_id
            WHERE a.role_scope = 'provider' AND r.system AND r.name = 'Provider Admin' AND u.deleted_at IS NULL) THEN
        RAISE EXCEPTION 'the system would have no live Provider Admin'
            USING ERRCODE = 'check_violation', CONSTRAINT = 'keygate_live_provider_admin',
                  TABLE = 'assignments', SCHEMA = current_schema(),
                  HINT = 'Assign Provider Admin to a live user in the same transaction.';
    END IF;

    SELECT a.user_id, string_agg(DISTINCT a.org_id, ', ') AS orgs INTO bad
    FROM keygate_pending_checks p
        JOIN users u ON u.id = p.id AND u.plan = 'free'
        JOIN assignments a ON a.user_id = u.id AND a.org_id IS NOT NULL
    WHERE p.xid = me AND p.kind = 'user'
    GROUP BY a.user_id HAVING count(DISTINCT a.org_id) > 1
    ORDER BY a.user_id
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'user %: a Free-plan user belongs to a single organization, but holds roles in %',
            bad.user_id, bad.orgs
            USING ERRCODE = 'check_violation', CONSTRAINT = 'users_free_plan_single_org',
                  TABLE = 'users', SCHEMA = current_schema();
    END IF;

    DELETE FROM keygate_pending_checks WHERE xid = me;
END
$$;
-- +goose StatementEnd

-- The commit hook: runs once per registration, deferred to commit (or earlier under SET CONSTRAINTS IMMEDIATE).
-- +goose StatementBegin
CREATE FUNCTION keygate_commit_hook() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Checking is idempotent (what was checked is forgotten), so a second run checks only what was noted since.
    DELETE FROM keygate_commit_hooks WHERE xid = pg_current_xact_id();
    PERFORM keygate_check_invariants();
    RETURN NULL;
END
$$;
-- +goose StatementEnd
CREATE CONSTRAINT TRIGGER keygate_commit_hook AFTER INSERT ON keygate_commit_hooks
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION keygate_commit_hook();

-- +goose Down
DROP TRIGGER keygate_commit_hook ON keygate_commit_hooks;
DROP TRIGGER roles_note_update ON roles;
DROP TRIGGER organizations_note_update ON organizations;
DROP TRIGGER organizations_note_insert ON organizations;
DROP TRIGGER users_note_update ON users;
DROP TRIGGER assignments_note_truncate ON assignments;
DROP TRIGGER assignments_note_delete ON assignments;
DROP TRIGGER assignments_note_update ON assignments;
DROP TRIGGER assignments_note_insert ON assignments;
DROP FUNCTION keygate_commit_hook(), keygate_check_invariants(), keygate_note_changes(), keygate_register_commit();
DROP TABLE keygate_commit_hooks, keygate_pending_checks, keygate_guards;
