package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keygate/keygate/internal/identity"
)

func TestTokenCommand(t *testing.T) {
	t.Parallel()
	keyPath, jwksPath, err := identity.GenerateDevKey(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"token", "--user", "u-alice", "--jti", "tok-alice", "--ttl", "10m",
		"--key", keyPath}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	v, err := identity.New(context.Background(), identity.Config{JWKSFile: jwksPath})
	if err != nil {
		t.Fatal(err)
	}
	c, err := v.Verify(context.Background(), strings.TrimSpace(out.String()))
	if err != nil || c.Subject != "u-alice" || c.ID != "tok-alice" {
		t.Fatalf("minted token: %+v %v", c, err)
	}

	for _, args := range [][]string{
		{"token", "--key", keyPath},
		{"token", "--user", "u"},
		{"token", "--user", "u", "--key", filepath.Join(t.TempDir(), "missing.pem")},
	} {
		if code := run(context.Background(), args, &out, &errb); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
	}
}
