package compiler

import (
	"strconv"
	"testing"
)

// TestRolesetIDsAreStableAndUnique: a role set's id depends on its roles only, and sets whose first 8 hex
// digits collide get 16.
func TestRolesetIDsAreStableAndUnique(t *testing.T) {
	t.Parallel()
	seen := map[string]int{}
	var a, b int
	for i := 0; ; i++ {
		id := rolesetIDs([]roleset{{roles: []string{"role-" + strconv.Itoa(i)}}})[0]
		if j, ok := seen[id]; ok {
			a, b = j, i
			break
		}
		seen[id] = i
	}
	sets := []roleset{{roles: []string{"role-" + strconv.Itoa(a)}}, {roles: []string{"x", "y"}}, {roles: []string{"role-" + strconv.Itoa(b)}}}
	ids := rolesetIDs(sets)
	if len(ids[0]) != 16 || len(ids[2]) != 16 || ids[0] == ids[2] {
		t.Fatalf("colliding sets got ids %q and %q, want two distinct 16-digit ids", ids[0], ids[2])
	}
	alone := rolesetIDs(sets[1:2])[0]
	if ids[1] != alone || len(alone) != 8 {
		t.Fatalf("set {x,y}: id %q beside others, %q alone; want the same 8 digits", ids[1], alone)
	}
}
