-- Change notifications name the schema: LISTEN/NOTIFY is database-wide, so a watcher of one schema (one
-- keygate deployment, or one test) must be able to ignore the changes of another.

-- +goose Up
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION keygate_notify_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('keygate_changes', TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME);
    RETURN NULL;
END
$$;
-- +goose StatementEnd

-- +goose Down
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION keygate_notify_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('keygate_changes', TG_TABLE_NAME);
    RETURN NULL;
END
$$;
-- +goose StatementEnd
