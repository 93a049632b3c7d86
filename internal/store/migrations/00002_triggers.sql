-- Rules a check constraint cannot express, and change capture.

-- +goose Up

-- System keys are immutable. The catalogue importer and the loader (which rewrites the copy of the built-in
-- catalogue) set the transaction-local setting keygate.catalogue_write = 'on' to update them.
-- +goose StatementBegin
CREATE FUNCTION keygate_keys_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.system AND coalesce(current_setting('keygate.catalogue_write', true), '') <> 'on' THEN
        RAISE EXCEPTION 'key % (%) is a system key: it cannot be %d', OLD.id, OLD.name, lower(TG_OP)
            USING ERRCODE = 'check_violation', CONSTRAINT = 'keys_system_immutable', TABLE = TG_TABLE_NAME,
                  SCHEMA = TG_TABLE_SCHEMA;
    END IF;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NEW;
END
$$;
-- +goose StatementEnd
CREATE TRIGGER keys_system_immutable BEFORE UPDATE OR DELETE ON keys
    FOR EACH ROW EXECUTE FUNCTION keygate_keys_immutable();

-- +goose StatementBegin
CREATE FUNCTION keygate_keys_no_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM keys WHERE system) THEN
        RAISE EXCEPTION 'keys holds system keys: it cannot be truncated'
            USING ERRCODE = 'check_violation', CONSTRAINT = 'keys_system_immutable', TABLE = TG_TABLE_NAME,
                  SCHEMA = TG_TABLE_SCHEMA;
    END IF;
    RETURN NULL;
END
$$;
-- +goose StatementEnd
CREATE TRIGGER keys_no_truncate BEFORE TRUNCATE ON keys
    FOR EACH STATEMENT EXECUTE FUNCTION keygate_keys_no_truncate();

-- An organization's role (or a data role without org) cannot take a default role's name without an org.
-- +goose StatementBegin
CREATE FUNCTION keygate_roles_default_name() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT NEW.system AND NEW.org_id IS NULL
        AND EXISTS (SELECT 1 FROM roles r WHERE r.system AND r.name = NEW.name AND r.id <> NEW.id) THEN
        RAISE EXCEPTION 'role %: % is a default role; give the new role another name or an org', NEW.id, NEW.name
            USING ERRCODE = 'unique_violation', CONSTRAINT = 'roles_default_name', TABLE = TG_TABLE_NAME,
                  SCHEMA = TG_TABLE_SCHEMA;
    END IF;
    RETURN NEW;
END
$$;
-- +goose StatementEnd
CREATE TRIGGER roles_default_name BEFORE INSERT OR UPDATE ON roles
    FOR EACH ROW EXECUTE FUNCTION keygate_roles_default_name();

-- An owner-only key must be in one of the role's keychains.
-- +goose StatementBegin
CREATE FUNCTION keygate_role_owner_only_held() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad record;
BEGIN
    SELECT n.role_id, n.key_id INTO bad FROM new_rows n
    WHERE NOT EXISTS (
        SELECT 1 FROM role_keychains rk JOIN keychain_keys kk ON kk.keychain_id = rk.keychain_id
        WHERE rk.role_id = n.role_id AND kk.key_id = n.key_id)
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'role %: owner-only key % is not in any of the role''s keychains', bad.role_id, bad.key_id
            USING ERRCODE = 'foreign_key_violation', CONSTRAINT = 'role_owner_only_held', TABLE = TG_TABLE_NAME,
                  SCHEMA = TG_TABLE_SCHEMA;
    END IF;
    RETURN NULL;
END
$$;
-- +goose StatementEnd
CREATE TRIGGER role_owner_only_held_insert AFTER INSERT ON role_owner_only
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION keygate_role_owner_only_held();
CREATE TRIGGER role_owner_only_held_update AFTER UPDATE ON role_owner_only
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION keygate_role_owner_only_held();

-- A user on the Free plan holds roles in a single organization. Checked after each statement on assignments
-- (new rows) and users (plan changes), over the whole table.
-- +goose StatementBegin
CREATE FUNCTION keygate_free_plan_single_org() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad record;
BEGIN
    IF TG_TABLE_NAME = 'users' THEN
        SELECT a.user_id, string_agg(DISTINCT a.org_id, ', ') AS orgs INTO bad
        FROM assignments a JOIN users u ON u.id = a.user_id
        WHERE u.plan = 'free' AND a.org_id IS NOT NULL AND a.user_id IN (SELECT n.id FROM new_rows n WHERE n.plan = 'free')
        GROUP BY a.user_id HAVING count(DISTINCT a.org_id) > 1
        LIMIT 1;
    ELSE
        SELECT a.user_id, string_agg(DISTINCT a.org_id, ', ') AS orgs INTO bad
        FROM assignments a JOIN users u ON u.id = a.user_id
        WHERE u.plan = 'free' AND a.org_id IS NOT NULL AND a.user_id IN (SELECT n.user_id FROM new_rows n)
        GROUP BY a.user_id HAVING count(DISTINCT a.org_id) > 1
        LIMIT 1;
    END IF;
    IF FOUND THEN
        RAISE EXCEPTION 'user %: a Free-plan user belongs to a single organization, but holds roles in %',
            bad.user_id, bad.orgs
            USING ERRCODE = 'check_violation', CONSTRAINT = 'users_free_plan_single_org', TABLE = TG_TABLE_NAME,
                  SCHEMA = TG_TABLE_SCHEMA;
    END IF;
    RETURN NULL;
END
$$;
-- +goose StatementEnd
CREATE TRIGGER assignments_free_plan_insert AFTER INSERT ON assignments
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION keygate_free_plan_single_org();
CREATE TRIGGER assignments_free_plan_update AFTER UPDATE ON assignments
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION keygate_free_plan_single_org();
CREATE TRIGGER users_free_plan_update AFTER UPDATE ON users
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION keygate_free_plan_single_org();

-- Change capture: every statement that changes a table notifies keygate_changes with the table's name.
-- NOTIFY folds identical payloads within one transaction, so a load sends one notification per table.
-- +goose StatementBegin
CREATE FUNCTION keygate_notify_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('keygate_changes', TG_TABLE_NAME);
    RETURN NULL;
END
$$;
-- +goose StatementEnd

-- +goose StatementBegin
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['keys', 'users', 'organizations', 'keychains', 'keychain_keys', 'roles',
        'role_keychains', 'role_owner_only', 'teams', 'team_members', 'workspaces', 'workspace_teams',
        'workspace_members', 'designs', 'assignments', 'tokens', 'routes']
    LOOP
        EXECUTE format('CREATE TRIGGER %I AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON %I '
            'FOR EACH STATEMENT EXECUTE FUNCTION keygate_notify_change()', t || '_notify_change', t);
    END LOOP;
END
$$;
-- +goose StatementEnd

-- +goose Down
-- +goose StatementBegin
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['keys', 'users', 'organizations', 'keychains', 'keychain_keys', 'roles',
        'role_keychains', 'role_owner_only', 'teams', 'team_members', 'workspaces', 'workspace_teams',
        'workspace_members', 'designs', 'assignments', 'tokens', 'routes']
    LOOP
        EXECUTE format('DROP TRIGGER %I ON %I', t || '_notify_change', t);
    END LOOP;
END
$$;
-- +goose StatementEnd
DROP TRIGGER users_free_plan_update ON users;
DROP TRIGGER assignments_free_plan_update ON assignments;
DROP TRIGGER assignments_free_plan_insert ON assignments;
DROP TRIGGER role_owner_only_held_update ON role_owner_only;
DROP TRIGGER role_owner_only_held_insert ON role_owner_only;
DROP TRIGGER roles_default_name ON roles;
DROP TRIGGER keys_no_truncate ON keys;
DROP TRIGGER keys_system_immutable ON keys;
DROP FUNCTION keygate_notify_change(), keygate_free_plan_single_org(), keygate_role_owner_only_held(),
    keygate_roles_default_name(), keygate_keys_no_truncate(), keygate_keys_immutable();
