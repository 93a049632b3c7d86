package store

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/keygate/keygate/internal/model"
)

// dataTables are the tables Load empties before writing, children first. keys is not among them: system keys
// (the imported catalogue) survive a load.
var dataTables = []string{
	"routes", "tokens", "assignments", "designs", "workspace_members", "workspace_teams", "workspaces",
	"team_members", "teams", "role_owner_only", "role_keychains", "roles", "keychain_keys", "keychains",
	"organizations", "users",
}

// Load replaces the access model held in the database with data, in one transaction: all of it or nothing.
//
// data is validated against the built-in catalogue with model.Resolve, together with the system keys already
// in the database (an imported catalogue), so the seed may name them; a *model.ValidationError is returned (wrapped)
// if it is refused, and nothing is written. References by name are stored as ids. The built-in catalogue is
// stored too (system rows, so references can be foreign keys); keychains and owner-only keys a data role adds to
// a default role are stored as extension rows of that role, so Snapshot gives them back.
//
// The change feed records a Load as one change, Op OpReload, at the Load's position: a reader must read a
// Snapshot then (see ReadChanges).
func Load(ctx context.Context, pool *pgxpool.Pool, builtin, data model.Snapshot) error {
	if data.Settings != (model.Settings{}) {
		// Refused rather than dropped: a bundle built from the database would silently lose the setting.
		return errors.New("loading snapshot: settings (assign_key_subset) are not kept in PostgreSQL: build from the seed file to use them")
	}
	base, err := model.Resolve(builtin, model.Snapshot{})
	if err != nil {
		return fmt.Errorf("resolving the built-in catalogue: %w", err)
	}
	tx, err := pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("loading snapshot: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()

	// One loader or importer at a time. Snapshot locks keys first too, so a snapshot either completes before the
	// load empties a table or starts after its commit (TRUNCATE is not MVCC-safe), and the two cannot deadlock.
	if _, err := tx.Exec(ctx, "LOCK TABLE keys IN ACCESS EXCLUSIVE MODE"); err != nil {
		return fmt.Errorf("locking keys: %w", err)
	}
	imported, err := importedKeys(ctx, tx, builtin, data)
	if err != nil {
		return err
	}
	m, err := model.Resolve(builtin, model.Merge(model.Snapshot{Keys: imported}, data))
	if err != nil {
		return fmt.Errorf("loading snapshot: %w", err)
	}
	if err := writeModel(ctx, tx, base, m, len(builtin.Routes)); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("committing snapshot: %w", err)
	}
	return nil
}

// importedKeys returns the system keys stored in the database that neither the built-in catalogue nor data
// defines (the imported catalogue).
func importedKeys(ctx context.Context, tx pgx.Tx, builtin, data model.Snapshot) ([]model.Key, error) {
	skip := map[string]bool{}
	for _, k := range builtin.Keys {
		skip[k.ID] = true
	}
	for _, k := range data.Keys {
		skip[k.ID] = true
	}
	rows, err := tx.Query(ctx, `SELECT id, name, category, function, aliases FROM keys WHERE system ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("reading system keys: %w", err)
	}
	var keys []model.Key
	for rows.Next() {
		k := model.Key{System: true}
		if err := rows.Scan(&k.ID, &k.Name, &k.Category, &k.Function, &k.Aliases); err != nil {
			rows.Close()
			return nil, fmt.Errorf("reading system keys: %w", err)
		}
		if len(k.Aliases) == 0 {
			k.Aliases = nil
		}
		if !skip[k.ID] {
			keys = append(keys, k)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reading system keys: %w", err)
	}
	return keys, nil
}

// allowCatalogueWrite lets this transaction update system keys (see keygate_keys_immutable).
func allowCatalogueWrite(ctx context.Context, tx pgx.Tx) error {
	if _, err := tx.Exec(ctx, `SELECT set_config('keygate.catalogue_write', 'on', true)`); err != nil {
		return fmt.Errorf("allowing catalogue writes: %w", err)
	}
	return nil
}

// writeModel replaces the model held in the database with m. The change feed records it as one reload (migration
// 00006), not row by row: the feed's triggers record nothing more in this transaction, while the invariants'
// triggers still check everything written.
func writeModel(ctx context.Context, tx pgx.Tx, base, m *model.Model, nBuiltinRoutes int) error {
	// (A schema migrated only up to 00005, as BenchmarkLoadFeedCost compares, records the rows instead.)
	if _, err := tx.Exec(ctx, `DO $$ BEGIN
		IF to_regprocedure('keygate_feed_reload()') IS NOT NULL THEN PERFORM keygate_feed_reload(); END IF;
	END $$`); err != nil {
		return fmt.Errorf("recording the reload in the change feed: %w", err)
	}
	if err := allowCatalogueWrite(ctx, tx); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, "TRUNCATE "+joinIdents(dataTables)); err != nil {
		return fmt.Errorf("emptying tables: %w", err)
	}
	if _, err := tx.Exec(ctx, "DELETE FROM keys WHERE NOT system"); err != nil {
		return fmt.Errorf("deleting keys: %w", err)
	}
	if err := upsertKeys(ctx, tx, m.Keys, false); err != nil {
		return err
	}
	// Checking foreign keys row by row dominates a big load: drop them while copying into the emptied tables
	// and add them back (validated by one query each) before commit, as pg_restore does.
	fks, err := dropForeignKeys(ctx, tx)
	if err != nil {
		return err
	}

	now := time.Now().UTC()
	users := sortedByID(m.Users, func(u model.User) string { return u.ID })
	if err := copyRows(ctx, tx, "users", []string{"id", "email", "plan", "deleted_at"}, len(users),
		func(i int, row []any) {
			u := users[i]
			row[0], row[1], row[2], row[3] = u.ID, u.Email, u.Plan, nil
			if u.Deleted {
				row[3] = now
			}
		}); err != nil {
		return err
	}
	orgs := m.Organizations
	if err := copyRows(ctx, tx, "organizations", []string{"id", "name", "owner_id"}, len(orgs),
		func(i int, row []any) { o := orgs[i]; row[0], row[1], row[2] = o.ID, o.Name, o.Owner }); err != nil {
		return err
	}

	// Keychains: those of the built-in catalogue are system rows.
	baseKeychains := map[string]bool{}
	for _, kc := range base.Keychains {
		baseKeychains[kc.ID] = true
	}
	kcs := m.Keychains
	if err := copyRows(ctx, tx, "keychains", []string{"id", "name", "org_id", "system"}, len(kcs),
		func(i int, row []any) {
			kc := kcs[i]
			row[0], row[1], row[2], row[3] = kc.ID, kc.Name, nullable(kc.Org), baseKeychains[kc.ID]
		}); err != nil {
		return err
	}
	var kcKeys []pair
	for _, kc := range kcs {
		for _, k := range kc.Keys {
			kcKeys = append(kcKeys, pair{kc.ID, k})
		}
	}
	if err := copyPairs(ctx, tx, "keychain_keys", "keychain_id", "key_id", kcKeys); err != nil {
		return err
	}

	if err := writeRoles(ctx, tx, base, m); err != nil {
		return err
	}

	teams := sortedByID(m.Teams, func(t model.Team) string { return t.ID })
	if err := copyRows(ctx, tx, "teams", []string{"id", "org_id", "name", "owner_id"}, len(teams),
		func(i int, row []any) { t := teams[i]; row[0], row[1], row[2], row[3] = t.ID, t.Org, t.Name, t.Owner }); err != nil {
		return err
	}
	var teamMembers []pair
	for _, t := range teams {
		for _, u := range t.Members {
			teamMembers = append(teamMembers, pair{t.ID, u})
		}
	}
	if err := copyPairs(ctx, tx, "team_members", "team_id", "user_id", teamMembers); err != nil {
		return err
	}
	wss := m.Workspaces
	if err := copyRows(ctx, tx, "workspaces", []string{"id", "org_id", "name", "owner_id"}, len(wss),
		func(i int, row []any) { w := wss[i]; row[0], row[1], row[2], row[3] = w.ID, w.Org, w.Name, w.Owner }); err != nil {
		return err
	}
	var wsTeams, wsMembers []pair
	for _, w := range wss {
		for _, t := range w.Teams {
			wsTeams = append(wsTeams, pair{w.ID, t})
		}
		for _, u := range w.Members {
			wsMembers = append(wsMembers, pair{w.ID, u})
		}
	}
	if err := copyPairs(ctx, tx, "workspace_teams", "workspace_id", "team_id", wsTeams); err != nil {
		return err
	}
	if err := copyPairs(ctx, tx, "workspace_members", "workspace_id", "user_id", wsMembers); err != nil {
		return err
	}
	designs := sortedByID(m.Designs, func(d model.Design) string { return d.ID })
	if err := copyRows(ctx, tx, "designs", []string{"id", "workspace_id", "owner_id", "visibility"}, len(designs),
		func(i int, row []any) {
			d := designs[i]
			row[0], row[1], row[2], row[3] = d.ID, d.Workspace, d.Owner, d.Visibility
		}); err != nil {
		return err
	}
	// Written in primary-key order, so Snapshot's ordered reads follow the table's physical order.
	as := slices.Clone(m.Assignments)
	slices.SortFunc(as, func(a, b model.Assignment) int {
		return cmp.Or(cmp.Compare(a.User, b.User), cmp.Compare(a.Role, b.Role), cmp.Compare(a.Org, b.Org),
			cmp.Compare(a.Team, b.Team), cmp.Compare(a.Workspace, b.Workspace))
	})
	if err := copyRows(ctx, tx, "assignments",
		[]string{"user_id", "role_id", "role_scope", "role_org_key", "org_id", "team_id", "workspace_id"}, len(as),
		func(i int, row []any) {
			a := as[i]
			role, _ := m.Role(a.Role)
			row[0], row[1], row[2], row[3] = a.User, a.Role, role.Scope, role.Org
			row[4], row[5], row[6] = nullable(a.Org), nullable(a.Team), nullable(a.Workspace)
		}); err != nil {
		return err
	}
	tokens := sortedByID(m.Tokens, func(t model.Token) string { return t.ID })
	expires := make([]any, len(tokens))
	for i, t := range tokens {
		if t.ExpiresAt != "" {
			ts, err := time.Parse(time.RFC3339Nano, t.ExpiresAt)
			if err != nil {
				return fmt.Errorf("loading tokens: token %q: %w", t.ID, err)
			}
			expires[i] = ts
		}
	}
	if err := copyRows(ctx, tx, "tokens", []string{"id", "user_id", "revoked", "expires_at"}, len(tokens),
		func(i int, row []any) {
			t := tokens[i]
			row[0], row[1], row[2], row[3] = t.ID, t.User, t.Revoked, expires[i]
		}); err != nil {
		return err
	}
	routes := m.Routes[nBuiltinRoutes:]
	if err := copyRows(ctx, tx, "routes", []string{"service", "method", "path", "key_id", "org_from", "resource"},
		len(routes), func(i int, row []any) {
			r := routes[i]
			row[0], row[1], row[2], row[3], row[4], row[5] = r.Service, r.Method, r.Path, r.Key, r.OrgFrom, r.Resource
		}); err != nil {
		return err
	}
	return addForeignKeys(ctx, tx, fks)
}

type foreignKey struct{ table, name, def string }

// dropForeignKeys drops the foreign keys of the data tables and returns them.
func dropForeignKeys(ctx context.Context, tx pgx.Tx) ([]foreignKey, error) {
	rows, err := tx.Query(ctx, `SELECT c.conrelid::regclass::text, c.conname, pg_get_constraintdef(c.oid)
		FROM pg_constraint c
		WHERE c.contype = 'f' AND c.conrelid = ANY ($1::regclass[])
		ORDER BY c.conrelid::regclass::text, c.conname`, dataTables)
	if err != nil {
		return nil, fmt.Errorf("listing foreign keys: %w", err)
	}
	fks, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (foreignKey, error) {
		var fk foreignKey
		err := r.Scan(&fk.table, &fk.name, &fk.def)
		return fk, err
	})
	if err != nil {
		return nil, fmt.Errorf("listing foreign keys: %w", err)
	}
	for _, fk := range fks {
		if _, err := tx.Exec(ctx, fmt.Sprintf("ALTER TABLE %s DROP CONSTRAINT %s", fk.table, pgx.Identifier{fk.name}.Sanitize())); err != nil {
			return nil, fmt.Errorf("dropping foreign key %s: %w", fk.name, err)
		}
	}
	return fks, nil
}

// addForeignKeys adds back (and so checks) the foreign keys dropForeignKeys dropped.
func addForeignKeys(ctx context.Context, tx pgx.Tx, fks []foreignKey) error {
	for _, fk := range fks {
		if _, err := tx.Exec(ctx, fmt.Sprintf("ALTER TABLE %s ADD CONSTRAINT %s %s", fk.table, pgx.Identifier{fk.name}.Sanitize(), fk.def)); err != nil {
			return fmt.Errorf("checking foreign key %s: %w", fk.name, err)
		}
	}
	return nil
}

// writeRoles writes the roles, their keychains and owner-only keys. A default role is written as the built-in
// catalogue defines it, plus extension rows for what data added to it.
func writeRoles(ctx context.Context, tx pgx.Tx, base, m *model.Model) error {
	roles := m.Roles
	if err := copyRows(ctx, tx, "roles", []string{"id", "name", "scope", "org_id", "system"}, len(roles),
		func(i int, row []any) {
			r := roles[i]
			_, system := base.Role(r.ID)
			row[0], row[1], row[2], row[3], row[4] = r.ID, r.Name, r.Scope, nullable(r.Org), system
		}); err != nil {
		return err
	}
	type roleKeychain struct {
		role, roleOrg, keychain, keychainOrg string
		extension                            bool
	}
	var rks []roleKeychain
	var oos []roleKeychain // keychain holds the key id
	for _, r := range roles {
		b, system := base.Role(r.ID)
		for _, kc := range r.Keychains {
			c, _ := m.Keychain(kc)
			rks = append(rks, roleKeychain{r.ID, r.Org, kc, c.Org, system && !slices.Contains(b.Keychains, kc)})
		}
		for _, k := range r.OwnerOnly {
			oos = append(oos, roleKeychain{role: r.ID, keychain: k, extension: system && !slices.Contains(b.OwnerOnly, k)})
		}
	}
	if err := copyRows(ctx, tx, "role_keychains",
		[]string{"role_id", "role_org_key", "keychain_id", "keychain_org_key", "extension"}, len(rks),
		func(i int, row []any) {
			rk := rks[i]
			row[0], row[1], row[2], row[3], row[4] = rk.role, rk.roleOrg, rk.keychain, rk.keychainOrg, rk.extension
		}); err != nil {
		return err
	}
	return copyRows(ctx, tx, "role_owner_only", []string{"role_id", "key_id", "extension"}, len(oos),
		func(i int, row []any) { o := oos[i]; row[0], row[1], row[2] = o.role, o.keychain, o.extension })
}

// upsertKeys inserts keys or updates the stored ones. asCatalogue (ImportKeys) marks them system and merges
// into a stored key (keeping its name, adding the catalogue's name and aliases as aliases, filling category and
// function); otherwise the stored key is replaced, keeping its system mark.
func upsertKeys(ctx context.Context, tx pgx.Tx, keys []model.Key, asCatalogue bool) error {
	if _, err := tx.Exec(ctx, `CREATE TEMP TABLE keygate_load_keys (
		id text COLLATE "C", name text, category text, function text, aliases text[], system boolean
	) ON COMMIT DROP`); err != nil {
		return fmt.Errorf("loading keys: %w", err)
	}
	if err := copyRows(ctx, tx, "keygate_load_keys", []string{"id", "name", "category", "function", "aliases", "system"},
		len(keys), func(i int, row []any) {
			k := keys[i]
			aliases := k.Aliases
			if aliases == nil {
				aliases = []string{}
			}
			row[0], row[1], row[2], row[3], row[4], row[5] = k.ID, k.Name, k.Category, k.Function, aliases, k.System || asCatalogue
		}); err != nil {
		return err
	}
	q := `INSERT INTO keys AS k (id, name, category, function, aliases, system)
		SELECT id, name, category, function, aliases, system FROM keygate_load_keys
		ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, category = EXCLUDED.category,
			function = EXCLUDED.function, aliases = EXCLUDED.aliases, system = k.system OR EXCLUDED.system
		WHERE (k.name, k.category, k.function, k.aliases, k.system)
			IS DISTINCT FROM (EXCLUDED.name, EXCLUDED.category, EXCLUDED.function, EXCLUDED.aliases, k.system OR EXCLUDED.system)`
	if asCatalogue {
		q = `INSERT INTO keys AS k (id, name, category, function, aliases, system)
		SELECT id, name, category, function, aliases, true FROM keygate_load_keys
		ON CONFLICT (id) DO UPDATE SET
			category = CASE WHEN EXCLUDED.category <> '' THEN EXCLUDED.category ELSE k.category END,
			function = CASE WHEN EXCLUDED.function <> '' THEN EXCLUDED.function ELSE k.function END,
			aliases = k.aliases || ARRAY(
				SELECT a FROM unnest(ARRAY[EXCLUDED.name] || EXCLUDED.aliases) WITH ORDINALITY AS u(a, n)
				WHERE a <> k.name AND a <> ALL (k.aliases) GROUP BY a ORDER BY min(n)),
			system = true`
	}
	if _, err := tx.Exec(ctx, q); err != nil {
		return fmt.Errorf("loading keys: %w", err)
	}
	if _, err := tx.Exec(ctx, `DROP TABLE keygate_load_keys`); err != nil {
		return fmt.Errorf("loading keys: %w", err)
	}
	return nil
}

// ImportKeys adds catalogue keys (the public key catalogue, keygate import-keys) to the database as system
// keys, in one transaction. A key already stored under the same id keeps its name; the catalogue's name and
// aliases become aliases, and its category and function replace the stored ones when given.
func ImportKeys(ctx context.Context, pool *pgxpool.Pool, keys []model.Key) error {
	seen := make(map[string]int, len(keys))
	for i, k := range keys {
		switch {
		case k.ID == "":
			return fmt.Errorf("importing keys: keys[%d]: id: missing", i)
		case k.Name == "":
			return fmt.Errorf("importing keys: keys[%d] (id %q): name: missing", i, k.ID)
		}
		for j, a := range k.Aliases {
			if a == "" {
				return fmt.Errorf("importing keys: keys[%d] (id %q): aliases[%d]: empty", i, k.ID, j)
			}
		}
		if j, dup := seen[k.ID]; dup {
			return fmt.Errorf("importing keys: keys[%d] (id %q): id: duplicate of keys[%d]", i, k.ID, j)
		}
		seen[k.ID] = i
	}
	tx, err := pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("importing keys: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if _, err := tx.Exec(ctx, "LOCK TABLE keys IN SHARE ROW EXCLUSIVE MODE"); err != nil {
		return fmt.Errorf("locking keys: %w", err)
	}
	if err := allowCatalogueWrite(ctx, tx); err != nil {
		return err
	}
	if err := upsertKeys(ctx, tx, keys, true); err != nil {
		return fmt.Errorf("importing keys: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("importing keys: %w", err)
	}
	return nil
}

// sortedByID returns a copy of list sorted by id.
func sortedByID[T any](list []T, id func(T) string) []T {
	out := slices.Clone(list)
	slices.SortFunc(out, func(a, b T) int { return cmp.Compare(id(a), id(b)) })
	return out
}

type pair struct{ a, b string }

func copyPairs(ctx context.Context, tx pgx.Tx, table, colA, colB string, rows []pair) error {
	return copyRows(ctx, tx, table, []string{colA, colB}, len(rows),
		func(i int, row []any) { row[0], row[1] = rows[i].a, rows[i].b })
}

// copyRows streams n rows into table with COPY; fill sets the values of row i (the slice is reused).
func copyRows(ctx context.Context, tx pgx.Tx, table string, cols []string, n int, fill func(i int, row []any)) error {
	if n == 0 {
		return nil
	}
	row := make([]any, len(cols))
	_, err := tx.CopyFrom(ctx, pgx.Identifier{table}, cols, pgx.CopyFromSlice(n, func(i int) ([]any, error) {
		fill(i, row)
		return row, nil
	}))
	if err != nil {
		return fmt.Errorf("loading %s: %w", table, err)
	}
	return nil
}

func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func joinIdents(names []string) string {
	out := ""
	for i, n := range names {
		if i > 0 {
			out += ", "
		}
		out += pgx.Identifier{n}.Sanitize()
	}
	return out
}

// ImportCatalogue merges an imported catalogue (importer.Import: system keys, keychains, roles and extensions
// of the default roles) into the access model held in the database, in one transaction that holds every table
// locked, so no concurrent change is lost: the current model is read, the catalogue merged over it (keys,
// keychains and roles with the same id replaced; a default role's extension added to), validated like a Load and
// written back. Everything else stays as it was; importing the same catalogue again changes nothing. Like a Load
// it is recorded in the change feed as one OpReload change.
func ImportCatalogue(ctx context.Context, pool *pgxpool.Pool, builtin, catalogue model.Snapshot) error {
	base, err := model.Resolve(builtin, model.Snapshot{})
	if err != nil {
		return fmt.Errorf("resolving the built-in catalogue: %w", err)
	}
	tx, err := pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("importing the catalogue: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if _, err := tx.Exec(ctx, "LOCK TABLE keys, "+joinIdents(dataTables)+" IN ACCESS EXCLUSIVE MODE"); err != nil {
		return fmt.Errorf("locking tables: %w", err)
	}
	current, err := readSnapshot(ctx, tx)
	if err != nil {
		return fmt.Errorf("importing the catalogue: %w", err)
	}
	data := mergeCatalogue(current, catalogue)
	imported, err := importedKeys(ctx, tx, builtin, data)
	if err != nil {
		return err
	}
	m, err := model.Resolve(builtin, model.Merge(model.Snapshot{Keys: imported}, data))
	if err != nil {
		return fmt.Errorf("importing the catalogue: %w", err)
	}
	if err := writeModel(ctx, tx, base, m, len(builtin.Routes)); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("committing the catalogue: %w", err)
	}
	return nil
}

// mergeCatalogue returns current with the catalogue's keys, keychains and roles merged in.
func mergeCatalogue(current, cat model.Snapshot) model.Snapshot {
	out := current
	out.Keys = replaceByID(current.Keys, cat.Keys, func(k model.Key) string { return k.ID })
	out.Keychains = replaceByID(current.Keychains, cat.Keychains, func(k model.Keychain) string { return k.ID })
	var withID, extensions []model.Role
	for _, r := range cat.Roles {
		if r.ID == "" {
			extensions = append(extensions, r)
		} else {
			withID = append(withID, r)
		}
	}
	out.Roles = replaceByID(current.Roles, withID, func(r model.Role) string { return r.ID })
	for _, ext := range extensions {
		i := slices.IndexFunc(out.Roles, func(r model.Role) bool { return r.ID == "" && r.Org == "" && r.Name == ext.Name })
		if i < 0 {
			out.Roles = append(out.Roles, ext)
			continue
		}
		r := out.Roles[i]
		r.Keychains = unionStrings(r.Keychains, ext.Keychains)
		r.OwnerOnly = unionStrings(r.OwnerOnly, ext.OwnerOnly)
		out.Roles[i] = r
	}
	return out
}

// replaceByID returns list with each of add replacing the entry of the same id, or appended.
func replaceByID[T any](list, add []T, id func(T) string) []T {
	out := slices.Clone(list)
	at := make(map[string]int, len(out))
	for i, e := range out {
		at[id(e)] = i
	}
	for _, e := range add {
		if i, ok := at[id(e)]; ok {
			out[i] = e
			continue
		}
		at[id(e)] = len(out)
		out = append(out, e)
	}
	return out
}

func unionStrings(a, b []string) []string {
	out := slices.Clone(a)
	for _, s := range b {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}
