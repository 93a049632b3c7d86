-- keygate's access model: one table per entity of model.Snapshot, with the constraints the validator
-- (model.Resolve) enforces, so the database refuses what a seed file would be refused for.
-- Ids are text COLLATE "C" so that ORDER BY id is byte order (Go's sort.Strings) and uses the primary key.
-- Rows copied from the built-in catalogue (system keys, keychains, default roles) are marked system = true; they
-- exist so references can be checked with foreign keys, and are rewritten by every load.

-- +goose Up
CREATE TABLE keys (
    id       text COLLATE "C" PRIMARY KEY CHECK (id <> ''),
    name     text NOT NULL CHECK (name <> ''),
    category text NOT NULL DEFAULT '',
    function text NOT NULL DEFAULT '',
    -- other names that resolve to this key (the seeds' spelling where the catalogue differs), in order
    aliases  text[] NOT NULL DEFAULT '{}'
        CONSTRAINT keys_aliases_check CHECK (array_position(aliases, NULL) IS NULL AND array_position(aliases, '') IS NULL),
    -- system keys ship with the product (built-in or imported catalogue) and are immutable
    system   boolean NOT NULL DEFAULT false
);

CREATE TABLE users (
    id         text COLLATE "C" PRIMARY KEY CHECK (id <> ''),
    email      text NOT NULL DEFAULT '',
    plan       text NOT NULL DEFAULT 'team' CONSTRAINT users_plan_check CHECK (plan IN ('free', 'team', 'enterprise')),
    -- soft delete: a deleted user is kept and denied everything
    deleted_at timestamptz,
    deleted    boolean NOT NULL GENERATED ALWAYS AS (deleted_at IS NOT NULL) STORED
);

CREATE TABLE organizations (
    id       text COLLATE "C" PRIMARY KEY CHECK (id <> ''),
    name     text NOT NULL DEFAULT '',
    owner_id text COLLATE "C" NOT NULL REFERENCES users (id)
);
CREATE INDEX organizations_owner_id_idx ON organizations (owner_id);

CREATE TABLE keychains (
    id      text COLLATE "C" PRIMARY KEY CHECK (id <> ''),
    name    text NOT NULL CHECK (name <> ''),
    org_id  text COLLATE "C" REFERENCES organizations (id),
    -- org_id or '' (a system keychain): lets role_keychains check "system or the role's own org" with a foreign key
    org_key text COLLATE "C" NOT NULL GENERATED ALWAYS AS (coalesce(org_id, '')) STORED,
    system  boolean NOT NULL DEFAULT false,
    UNIQUE (id, org_key)
);
CREATE INDEX keychains_org_id_idx ON keychains (org_id);

CREATE TABLE keychain_keys (
    keychain_id text COLLATE "C" NOT NULL REFERENCES keychains (id) ON DELETE CASCADE,
    key_id      text COLLATE "C" NOT NULL REFERENCES keys (id),
    PRIMARY KEY (keychain_id, key_id)
);
CREATE INDEX keychain_keys_key_id_idx ON keychain_keys (key_id);

CREATE TABLE roles (
    id      text COLLATE "C" PRIMARY KEY CHECK (id <> ''),
    name    text NOT NULL CHECK (name <> ''),
    scope   text NOT NULL CONSTRAINT roles_scope_check CHECK (scope IN ('provider', 'organization', 'team', 'workspace')),
    org_id  text COLLATE "C" REFERENCES organizations (id),
    org_key text COLLATE "C" NOT NULL GENERATED ALWAYS AS (coalesce(org_id, '')) STORED,
    system  boolean NOT NULL DEFAULT false,
    CONSTRAINT roles_provider_scope_check CHECK (scope <> 'provider' OR org_id IS NULL),
    CONSTRAINT roles_default_has_no_org CHECK (NOT system OR org_id IS NULL),
    UNIQUE (id, org_key),
    UNIQUE (id, scope, org_key)
);
CREATE INDEX roles_org_id_idx ON roles (org_id);

-- A role's keychains. extension = true marks keychains a seed added to a default (system) role.
CREATE TABLE role_keychains (
    role_id          text COLLATE "C" NOT NULL,
    role_org_key     text COLLATE "C" NOT NULL,
    keychain_id      text COLLATE "C" NOT NULL,
    keychain_org_key text COLLATE "C" NOT NULL,
    extension        boolean NOT NULL DEFAULT false,
    PRIMARY KEY (role_id, keychain_id),
    FOREIGN KEY (role_id, role_org_key) REFERENCES roles (id, org_key) ON DELETE CASCADE ON UPDATE CASCADE,
    FOREIGN KEY (keychain_id, keychain_org_key) REFERENCES keychains (id, org_key) ON DELETE CASCADE ON UPDATE CASCADE,
    CONSTRAINT role_keychains_org_check CHECK (keychain_org_key = '' OR keychain_org_key = role_org_key)
);
CREATE INDEX role_keychains_keychain_id_idx ON role_keychains (keychain_id);

-- Keys a role grants only on resources the holder owns (each must be in one of the role's keychains).
CREATE TABLE role_owner_only (
    role_id   text COLLATE "C" NOT NULL REFERENCES roles (id) ON DELETE CASCADE,
    key_id    text COLLATE "C" NOT NULL REFERENCES keys (id),
    extension boolean NOT NULL DEFAULT false,
    PRIMARY KEY (role_id, key_id)
);

CREATE TABLE teams (
    id       text COLLATE "C" PRIMARY KEY CHECK (id <> ''),
    org_id   text COLLATE "C" NOT NULL REFERENCES organizations (id),
    name     text NOT NULL DEFAULT '',
    owner_id text COLLATE "C" NOT NULL REFERENCES users (id),
    UNIQUE (id, org_id)
);
CREATE INDEX teams_org_id_idx ON teams (org_id);

CREATE TABLE team_members (
    team_id text COLLATE "C" NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    user_id text COLLATE "C" NOT NULL REFERENCES users (id),
    PRIMARY KEY (team_id, user_id)
);
CREATE INDEX team_members_user_id_idx ON team_members (user_id);

CREATE TABLE workspaces (
    id       text COLLATE "C" PRIMARY KEY CHECK (id <> ''),
    org_id   text COLLATE "C" NOT NULL REFERENCES organizations (id),
    name     text NOT NULL DEFAULT '',
    owner_id text COLLATE "C" NOT NULL REFERENCES users (id),
    UNIQUE (id, org_id)
);
CREATE INDEX workspaces_org_id_idx ON workspaces (org_id);

-- Teams and members of a workspace may belong to other organizations.
CREATE TABLE workspace_teams (
    workspace_id text COLLATE "C" NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    team_id      text COLLATE "C" NOT NULL REFERENCES teams (id) ON DELETE CASCADE,
    PRIMARY KEY (workspace_id, team_id)
);
CREATE INDEX workspace_teams_team_id_idx ON workspace_teams (team_id);

CREATE TABLE workspace_members (
    workspace_id text COLLATE "C" NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    user_id      text COLLATE "C" NOT NULL REFERENCES users (id),
    PRIMARY KEY (workspace_id, user_id)
);
CREATE INDEX workspace_members_user_id_idx ON workspace_members (user_id);

CREATE TABLE designs (
    id           text COLLATE "C" PRIMARY KEY CHECK (id <> ''),
    workspace_id text COLLATE "C" NOT NULL REFERENCES workspaces (id),
    owner_id     text COLLATE "C" NOT NULL REFERENCES users (id),
    visibility   text NOT NULL DEFAULT 'private'
        CONSTRAINT designs_visibility_check CHECK (visibility IN ('private', 'public', 'published'))
);
CREATE INDEX designs_workspace_id_idx ON designs (workspace_id);

-- role_scope and role_org_key repeat the role's scope and org so that checks and foreign keys can see them:
-- a team role needs a team of the assignment's org, a custom role is assigned only in its own org.
CREATE TABLE assignments (
    user_id      text COLLATE "C" NOT NULL REFERENCES users (id),
    role_id      text COLLATE "C" NOT NULL,
    role_scope   text NOT NULL,
    role_org_key text COLLATE "C" NOT NULL DEFAULT '',
    org_id       text COLLATE "C" REFERENCES organizations (id),
    team_id      text COLLATE "C",
    workspace_id text COLLATE "C",
    FOREIGN KEY (role_id, role_scope, role_org_key) REFERENCES roles (id, scope, org_key) ON UPDATE CASCADE,
    CONSTRAINT assignments_team_org_fkey FOREIGN KEY (team_id, org_id) REFERENCES teams (id, org_id),
    CONSTRAINT assignments_workspace_org_fkey FOREIGN KEY (workspace_id, org_id) REFERENCES workspaces (id, org_id),
    CONSTRAINT assignments_role_org_check CHECK (role_org_key = '' OR role_org_key = org_id),
    CONSTRAINT assignments_scope_check CHECK (CASE role_scope
        WHEN 'provider' THEN org_id IS NULL AND team_id IS NULL AND workspace_id IS NULL
        WHEN 'organization' THEN org_id IS NOT NULL AND team_id IS NULL AND workspace_id IS NULL
        WHEN 'team' THEN org_id IS NOT NULL AND team_id IS NOT NULL AND workspace_id IS NULL
        WHEN 'workspace' THEN org_id IS NOT NULL AND workspace_id IS NOT NULL AND team_id IS NULL
        ELSE false END),
    CONSTRAINT assignments_unique UNIQUE NULLS NOT DISTINCT (user_id, role_id, org_id, team_id, workspace_id)
);
CREATE INDEX assignments_role_id_idx ON assignments (role_id);
CREATE INDEX assignments_org_id_idx ON assignments (org_id);
CREATE INDEX assignments_team_id_idx ON assignments (team_id) WHERE team_id IS NOT NULL;
CREATE INDEX assignments_workspace_id_idx ON assignments (workspace_id) WHERE workspace_id IS NOT NULL;

CREATE TABLE tokens (
    id         text COLLATE "C" PRIMARY KEY CHECK (id <> ''),
    user_id    text COLLATE "C" NOT NULL REFERENCES users (id),
    revoked    boolean NOT NULL DEFAULT false,
    expires_at timestamptz -- NULL: does not expire
);
CREATE INDEX tokens_user_id_idx ON tokens (user_id);

CREATE TABLE routes (
    service  text COLLATE "C" NOT NULL CHECK (service <> ''),
    method   text COLLATE "C" NOT NULL CONSTRAINT routes_method_check CHECK (method ~ '^[A-Z]+$'),
    path     text COLLATE "C" NOT NULL CONSTRAINT routes_path_check CHECK (path ~ '^/[^/]'),
    key_id   text COLLATE "C" NOT NULL REFERENCES keys (id),
    org_from text NOT NULL DEFAULT 'header'
        CONSTRAINT routes_org_from_check CHECK (org_from = 'header' OR strpos(path, '/{' || org_from || '}') > 0),
    resource text NOT NULL DEFAULT ''
        CONSTRAINT routes_resource_check CHECK (resource = '' OR (
            resource ~ '^(organization|team|workspace|design|user):[A-Za-z_][A-Za-z0-9_]*$'
            AND strpos(path, '/{' || split_part(resource, ':', 2) || '}') > 0)),
    PRIMARY KEY (service, method, path)
);

-- +goose Down
DROP TABLE routes, tokens, assignments, designs, workspace_members, workspace_teams, workspaces, team_members, teams,
    role_owner_only, role_keychains, roles, keychain_keys, keychains, organizations, users, keys;
