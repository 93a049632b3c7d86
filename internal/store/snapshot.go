package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/keygate/keygate/internal/model"
)

// Snapshot reads the access model from the database in one read-only REPEATABLE READ transaction, so it is
// consistent even while a load or an edit commits. It holds what Load was given, by id: every stored key (the
// built-in and imported catalogue keys, marked System, and the data's keys), the data's keychains and roles,
// one entry per default role that data extended (name, keychains and owner-only keys, no id), and the users,
// organizations, teams, workspaces, designs, assignments, tokens and routes. Resolve it with the built-in
// catalogue as Load did. Entries are ordered by primary key (byte order) and lists sorted, so two reads of the
// same data are identical. Position is the commit position the read saw (keygate_position()): the snapshot
// holds every change of the feed up to it and none after.
func Snapshot(ctx context.Context, pool *pgxpool.Pool) (model.Snapshot, error) {
	tx, err := pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return model.Snapshot{}, fmt.Errorf("reading snapshot: %w", err)
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	// Lock every table before the first query takes the transaction's snapshot: TRUNCATE (Load) is not MVCC-safe,
	// so a snapshot must not start before a load commits and read its tables after.
	if _, err := tx.Exec(ctx, "LOCK TABLE keys, "+joinIdents(dataTables)+" IN ACCESS SHARE MODE"); err != nil {
		return model.Snapshot{}, fmt.Errorf("reading snapshot: %w", err)
	}
	// Room to sort big tables in memory when the planner prefers a sort to an index scan.
	if _, err := tx.Exec(ctx, "SET LOCAL work_mem = '64MB'"); err != nil {
		return model.Snapshot{}, fmt.Errorf("reading snapshot: %w", err)
	}
	// The position this transaction's snapshot sees: exactly the changes of positions up to it (keygate_position).
	var pos int64
	if err := tx.QueryRow(ctx, "SELECT keygate_position()").Scan(&pos); err != nil {
		return model.Snapshot{}, fmt.Errorf("reading snapshot: reading the position: %w", err)
	}
	s, err := readSnapshot(ctx, tx)
	if err != nil {
		return model.Snapshot{}, err
	}
	s.Position = uint64(pos)
	if err := tx.Commit(ctx); err != nil {
		return model.Snapshot{}, fmt.Errorf("reading snapshot: %w", err)
	}
	return s, nil
}

// readSnapshot reads the whole model in tx (whose caller holds the locks it needs).
func readSnapshot(ctx context.Context, tx pgx.Tx) (model.Snapshot, error) {
	r := &reader{tx: tx}
	var s model.Snapshot
	steps := []struct {
		what string
		read func(context.Context, *model.Snapshot) error
	}{
		{"keys", r.keys},
		{"keychains", r.keychains},
		{"roles", r.roles},
		{"users", r.users},
		{"organizations", r.organizations},
		{"teams", r.teams},
		{"workspaces", r.workspaces},
		{"designs", r.designs},
		{"assignments", r.assignments},
		{"tokens", r.tokens},
		{"routes", r.routes},
	}
	for _, st := range steps {
		if err := st.read(ctx, &s); err != nil {
			return model.Snapshot{}, fmt.Errorf("reading %s: %w", st.what, err)
		}
	}
	return s, nil
}

// reader streams query results. Text columns are read as raw wire values (text and binary formats are the
// same bytes for text), which avoids pgx's per-value scanning at millions of rows; ids repeated across tables
// are interned so they share memory.
type reader struct {
	tx     pgx.Tx
	intern map[string]string
}

// each runs q and calls fn with each row's raw values.
func (r *reader) each(ctx context.Context, q string, fn func(vals [][]byte) error) error {
	rows, err := r.tx.Query(ctx, q)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		if err := fn(rows.RawValues()); err != nil {
			return err
		}
	}
	return rows.Err()
}

// str returns a raw text value as a string, sharing the memory of an equal id seen before.
func (r *reader) str(b []byte) string {
	if s, ok := r.intern[string(b)]; ok {
		return s
	}
	s := string(b)
	if r.intern == nil {
		r.intern = map[string]string{}
	}
	r.intern[s] = s
	return s
}

// id returns a raw text value as a string without interning (values that occur once).
func id(b []byte) string { return string(b) }

// boolean decodes a raw boolean (binary format: one byte; text format: t or f).
func boolean(b []byte) bool { return len(b) == 1 && (b[0] == 1 || b[0] == 't') }

// children reads (parent, child) rows ordered by parent and gives each parent's list to set, with the parent's
// index in idx.
func (r *reader) children(ctx context.Context, q string, idx map[string]int, set func(i int, child string)) error {
	return r.each(ctx, q, func(v [][]byte) error {
		i, ok := idx[string(v[0])]
		if !ok {
			return fmt.Errorf("row of unknown parent %q", v[0])
		}
		set(i, r.str(v[1]))
		return nil
	})
}

func (r *reader) keys(ctx context.Context, s *model.Snapshot) error {
	rows, err := r.tx.Query(ctx, `SELECT id, name, category, function, aliases, system FROM keys ORDER BY id`)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var k model.Key
		if err := rows.Scan(&k.ID, &k.Name, &k.Category, &k.Function, &k.Aliases, &k.System); err != nil {
			return err
		}
		if len(k.Aliases) == 0 {
			k.Aliases = nil
		}
		k.ID = r.str([]byte(k.ID))
		s.Keys = append(s.Keys, k)
	}
	return rows.Err()
}

func (r *reader) keychains(ctx context.Context, s *model.Snapshot) error {
	idx := map[string]int{}
	err := r.each(ctx, `SELECT id, name, org_id FROM keychains WHERE NOT system ORDER BY id`, func(v [][]byte) error {
		kc := model.Keychain{ID: r.str(v[0]), Name: id(v[1]), Org: r.str(v[2])}
		idx[kc.ID] = len(s.Keychains)
		s.Keychains = append(s.Keychains, kc)
		return nil
	})
	if err != nil {
		return err
	}
	return r.children(ctx, `SELECT kk.keychain_id, kk.key_id FROM keychain_keys kk
		JOIN keychains kc ON kc.id = kk.keychain_id WHERE NOT kc.system ORDER BY kk.keychain_id, kk.key_id`,
		idx, func(i int, k string) { s.Keychains[i].Keys = append(s.Keychains[i].Keys, k) })
}

func (r *reader) roles(ctx context.Context, s *model.Snapshot) error {
	// Custom roles whole; default roles only if data extended them (as an entry named like the default role).
	idx := map[string]int{}
	err := r.each(ctx, `SELECT id, name, scope, org_id, system FROM roles r
		WHERE NOT system
			OR EXISTS (SELECT 1 FROM role_keychains rk WHERE rk.role_id = r.id AND rk.extension)
			OR EXISTS (SELECT 1 FROM role_owner_only ro WHERE ro.role_id = r.id AND ro.extension)
		ORDER BY system, id`, func(v [][]byte) error {
		role := model.Role{ID: r.str(v[0]), Name: id(v[1]), Scope: id(v[2]), Org: r.str(v[3])}
		idx[role.ID] = len(s.Roles)
		if boolean(v[4]) {
			role.ID, role.Scope = "", "" // an extension of the default role of this name
		}
		s.Roles = append(s.Roles, role)
		return nil
	})
	if err != nil {
		return err
	}
	if err := r.children(ctx, `SELECT rk.role_id, rk.keychain_id FROM role_keychains rk
		JOIN roles r ON r.id = rk.role_id WHERE NOT r.system OR rk.extension ORDER BY rk.role_id, rk.keychain_id`,
		idx, func(i int, kc string) { s.Roles[i].Keychains = append(s.Roles[i].Keychains, kc) }); err != nil {
		return err
	}
	return r.children(ctx, `SELECT ro.role_id, ro.key_id FROM role_owner_only ro
		JOIN roles r ON r.id = ro.role_id WHERE NOT r.system OR ro.extension ORDER BY ro.role_id, ro.key_id`,
		idx, func(i int, k string) { s.Roles[i].OwnerOnly = append(s.Roles[i].OwnerOnly, k) })
}

func (r *reader) users(ctx context.Context, s *model.Snapshot) error {
	var n int
	if err := r.tx.QueryRow(ctx, `SELECT count(*) FROM users`).Scan(&n); err != nil {
		return err
	}
	s.Users = make([]model.User, 0, n)
	if r.intern == nil {
		r.intern = make(map[string]string, n+n/4)
	}
	return r.each(ctx, `SELECT id, email, plan, deleted FROM users ORDER BY id`, func(v [][]byte) error {
		s.Users = append(s.Users, model.User{ID: r.str(v[0]), Email: id(v[1]), Plan: r.str(v[2]), Deleted: boolean(v[3])})
		return nil
	})
}

func (r *reader) organizations(ctx context.Context, s *model.Snapshot) error {
	return r.each(ctx, `SELECT id, name, owner_id FROM organizations ORDER BY id`, func(v [][]byte) error {
		s.Organizations = append(s.Organizations, model.Organization{ID: r.str(v[0]), Name: id(v[1]), Owner: r.str(v[2])})
		return nil
	})
}

func (r *reader) teams(ctx context.Context, s *model.Snapshot) error {
	idx := map[string]int{}
	err := r.each(ctx, `SELECT id, org_id, name, owner_id FROM teams ORDER BY id`, func(v [][]byte) error {
		t := model.Team{ID: r.str(v[0]), Org: r.str(v[1]), Name: id(v[2]), Owner: r.str(v[3])}
		idx[t.ID] = len(s.Teams)
		s.Teams = append(s.Teams, t)
		return nil
	})
	if err != nil {
		return err
	}
	return r.children(ctx, `SELECT team_id, user_id FROM team_members ORDER BY team_id, user_id`, idx,
		func(i int, u string) { s.Teams[i].Members = append(s.Teams[i].Members, u) })
}

func (r *reader) workspaces(ctx context.Context, s *model.Snapshot) error {
	idx := map[string]int{}
	err := r.each(ctx, `SELECT id, org_id, name, owner_id FROM workspaces ORDER BY id`, func(v [][]byte) error {
		w := model.Workspace{ID: r.str(v[0]), Org: r.str(v[1]), Name: id(v[2]), Owner: r.str(v[3])}
		idx[w.ID] = len(s.Workspaces)
		s.Workspaces = append(s.Workspaces, w)
		return nil
	})
	if err != nil {
		return err
	}
	if err := r.children(ctx, `SELECT workspace_id, team_id FROM workspace_teams ORDER BY workspace_id, team_id`,
		idx, func(i int, t string) { s.Workspaces[i].Teams = append(s.Workspaces[i].Teams, t) }); err != nil {
		return err
	}
	return r.children(ctx, `SELECT workspace_id, user_id FROM workspace_members ORDER BY workspace_id, user_id`,
		idx, func(i int, u string) { s.Workspaces[i].Members = append(s.Workspaces[i].Members, u) })
}

func (r *reader) designs(ctx context.Context, s *model.Snapshot) error {
	return r.each(ctx, `SELECT id, workspace_id, owner_id, visibility FROM designs ORDER BY id`, func(v [][]byte) error {
		s.Designs = append(s.Designs, model.Design{ID: id(v[0]), Workspace: r.str(v[1]), Owner: r.str(v[2]), Visibility: r.str(v[3])})
		return nil
	})
}

func (r *reader) assignments(ctx context.Context, s *model.Snapshot) error {
	var n int
	if err := r.tx.QueryRow(ctx, `SELECT count(*) FROM assignments`).Scan(&n); err != nil {
		return err
	}
	s.Assignments = make([]model.Assignment, 0, n)
	return r.each(ctx, `SELECT user_id, role_id, org_id, team_id, workspace_id FROM assignments
		ORDER BY user_id, role_id, org_id, team_id, workspace_id`, func(v [][]byte) error {
		s.Assignments = append(s.Assignments, model.Assignment{
			User: r.str(v[0]), Role: r.str(v[1]), Org: r.str(v[2]), Team: r.str(v[3]), Workspace: r.str(v[4]),
		})
		return nil
	})
}

func (r *reader) tokens(ctx context.Context, s *model.Snapshot) error {
	rows, err := r.tx.Query(ctx, `SELECT id, user_id, revoked, expires_at FROM tokens ORDER BY id`)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var t model.Token
		var user string
		var exp *time.Time
		if err := rows.Scan(&t.ID, &user, &t.Revoked, &exp); err != nil {
			return err
		}
		t.User = r.str([]byte(user))
		if exp != nil {
			t.ExpiresAt = exp.UTC().Format(time.RFC3339Nano)
		}
		s.Tokens = append(s.Tokens, t)
	}
	return rows.Err()
}

func (r *reader) routes(ctx context.Context, s *model.Snapshot) error {
	return r.each(ctx, `SELECT service, method, path, key_id, org_from, resource FROM routes ORDER BY service, method, path`,
		func(v [][]byte) error {
			s.Routes = append(s.Routes, model.Route{
				Service: id(v[0]), Method: id(v[1]), Path: id(v[2]), Key: r.str(v[3]), OrgFrom: id(v[4]), Resource: id(v[5]),
			})
			return nil
		})
}
