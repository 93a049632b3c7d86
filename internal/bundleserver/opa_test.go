package bundleserver

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// opaBinary returns the path of the opa pinned in go.mod (built by go tool if needed).
func opaBinary(t *testing.T) string {
	t.Helper()
	if out, err := exec.Command("go", "tool", "opa", "version").CombinedOutput(); err != nil {
		t.Fatalf("go tool opa version: %v\n%s", err, out)
	}
	out, err := exec.Command("go", "tool", "-n", "opa").Output()
	if err != nil {
		t.Fatalf("go tool -n opa: %v", err)
	}
	return string(bytes.TrimSpace(out))
}

// startStockOPA runs `opa run --server` on a unix socket with a bundle from url (long polling) until the
// test ends and returns an HTTP client for it.
func startStockOPA(t *testing.T, url string) *http.Client {
	t.Helper()
	dir := t.TempDir()
	sock := filepath.Join(dir, "opa.sock")
	cfg := map[string]any{
		"services": map[string]any{"keygate": map[string]any{"url": strings.TrimSuffix(url, BundlePath)}},
		"bundles": map[string]any{"keygate": map[string]any{"service": "keygate", "resource": BundlePath,
			"polling": map[string]any{"min_delay_seconds": 1, "max_delay_seconds": 2, "long_polling_timeout_seconds": 5}}},
	}
	raw, _ := json.Marshal(cfg)
	cfgFile := filepath.Join(dir, "opa.json")
	if err := os.WriteFile(cfgFile, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, opaBinary(t), "run", "--server", "--addr", "unix://"+sock,
		"--config-file", cfgFile, "--log-level", "error")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); _ = cmd.Wait() })
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		}}}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		resp, err := client.Get("http://opa/health?bundles")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return client
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("opa did not become healthy: %s", stderr.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func opaAllow(t *testing.T, c *http.Client, input map[string]string) bool {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"input": input})
	resp, err := c.Post("http://opa/v1/data/keygate/authz/allow", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		Result bool `json:"result"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != 200 {
		t.Fatalf("opa /v1/data: %d %v", resp.StatusCode, err)
	}
	return out.Result
}

// TestStockOPAAppliesDeltas: a stock `opa run --server` long polling keygate's bundle server gets a delta
// bundle for one assignment change and answers the new decision.
func TestStockOPAAppliesDeltas(t *testing.T) {
	if testing.Short() {
		t.Skip("starts opa")
	}
	t.Parallel()
	src := newSource(t)
	s := newServer(t, src, nil)
	run(t, s)
	deadline := time.Now().Add(time.Minute)
	for !s.Ready() {
		if time.Now().After(deadline) {
			t.Fatal("no bundle built")
		}
		time.Sleep(50 * time.Millisecond)
	}
	opa := startStockOPA(t, s.URL())
	frank := map[string]string{"user": "u-frank", "org": "org-layer5", "key": "Manage Subscriptions"}
	if opaAllow(t, opa, frank) {
		t.Fatal("u-frank (User) may manage subscriptions before the change")
	}
	src.set(changeFrank, nil)
	s.Trigger()
	deadline = time.Now().Add(time.Minute)
	for !opaAllow(t, opa, frank) {
		if time.Now().After(deadline) {
			t.Fatal("opa did not take the change")
		}
		time.Sleep(100 * time.Millisecond)
	}
	deltas := value(t, s.metrics.sentCount.WithLabelValues("delta"))
	size := value(t, s.metrics.sentBytes.WithLabelValues("delta"))
	if snapshots := value(t, s.metrics.sentCount.WithLabelValues("snapshot")); deltas != 1 || snapshots != 1 {
		t.Fatalf("sent %v snapshot(s) and %v delta(s), want the first snapshot and one delta", snapshots, deltas)
	}
	if size > 4096 {
		t.Errorf("the delta is %v bytes, want at most 4 KiB", size)
	}
}
