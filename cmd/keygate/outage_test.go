package main

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// nextRevision polls the bundle until its ETag differs from etag and returns the new one and how long it took.
func nextRevision(t *testing.T, addr, etag string, within time.Duration) (string, time.Duration) {
	t.Helper()
	start := time.Now()
	for time.Since(start) < within {
		req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/bundles/keygate.tar.gz", nil)
		req.Header.Set("If-None-Match", etag)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && resp.Header.Get("ETag") != etag {
				return resp.Header.Get("ETag"), time.Since(start)
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no new revision within %s (ETag still %s)", within, etag)
	return "", 0
}

func metricsOf(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// loadedDatabase migrates a fresh test database, loads the demo into it and opens an admin pool on it.
func loadedDatabase(t *testing.T) (string, *pgxpool.Pool) {
	t.Helper()
	db := testDatabaseURL(t)
	runOK(t, "migrate", "--database-url", db)
	runOK(t, "db", "load", "--database-url", db)
	admin, err := pgxpool.New(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(admin.Close)
	return db, admin
}

// TestServeRecoversFromTerminatedBackends: pg_terminate_backend on every connection of keygate serve (the
// watcher's LISTEN connection and the pool's), then a commit: the new revision is served well under the old
// 10s (a dead pooled connection and a fixed 10s retry).
func TestServeRecoversFromTerminatedBackends(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, admin := loadedDatabase(t)
	app := fmt.Sprintf("keygate-outage-%d", rand.Uint64())
	addr := freeAddr(t)
	etag, stop := serveUntilReady(t, addr, "--database-url", db+"&application_name="+app, "--rebuild-interval", "-1s")
	t.Cleanup(stop)

	backends := func() int {
		var n int
		if err := admin.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE application_name = $1`, app).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	for round := range 3 {
		deadline := time.Now().Add(10 * time.Second)
		for backends() < 2 { // the watcher's and at least one pooled connection
			if time.Now().After(deadline) {
				t.Fatalf("round %d: keygate serve has %d backends, want the watcher's and the pool's", round, backends())
			}
			time.Sleep(20 * time.Millisecond)
		}
		var killed int
		if err := admin.QueryRow(ctx, `SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
			WHERE application_name = $1) t`, app).Scan(&killed); err != nil {
			t.Fatal(err)
		}
		if _, err := admin.Exec(ctx, `INSERT INTO tokens (id, user_id) VALUES ($1, 'u-alice')`, fmt.Sprintf("tok-outage-%d", round)); err != nil {
			t.Fatal(err)
		}
		var took time.Duration
		etag, took = nextRevision(t, addr, etag, 10*time.Second)
		t.Logf("round %d: %d backends terminated; commit served %s later", round, killed, took.Round(time.Millisecond))
		if took > 2*time.Second {
			t.Errorf("round %d: the commit took %s to be served, want < 2s", round, took)
		}
	}
}

// tcpProxy forwards connections to target until refused: a database that refuses connections, without stopping
// the shared PostgreSQL.
type tcpProxy struct {
	target string
	addr   string
	mu     sync.Mutex
	lis    net.Listener
	conns  map[net.Conn]bool
}

func newTCPProxy(t *testing.T, target string) *tcpProxy {
	t.Helper()
	p := &tcpProxy{target: target, addr: "127.0.0.1:0", conns: map[net.Conn]bool{}}
	p.open(t)
	t.Cleanup(p.refuse)
	return p
}

func (p *tcpProxy) open(t *testing.T) {
	t.Helper()
	lis, err := net.Listen("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	p.lis, p.addr = lis, lis.Addr().String()
	p.mu.Unlock()
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			go p.forward(c)
		}
	}()
}

func (p *tcpProxy) forward(c net.Conn) {
	up, err := net.Dial("tcp", p.target)
	if err != nil {
		c.Close()
		return
	}
	p.mu.Lock()
	p.conns[c], p.conns[up] = true, true
	p.mu.Unlock()
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(up, c); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, up); done <- struct{}{} }()
	<-done
	c.Close()
	up.Close()
	p.mu.Lock()
	delete(p.conns, c)
	delete(p.conns, up)
	p.mu.Unlock()
}

// refuse closes the listener (connections are refused) and every forwarded connection.
func (p *tcpProxy) refuse() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.lis != nil {
		p.lis.Close()
		p.lis = nil
	}
	for c := range p.conns {
		c.Close()
	}
}

// TestServeThroughADatabaseOutage: the database refuses connections for a while (a proxy in front of the test
// PostgreSQL closes): within 5s keygate_source_up is 0 and /health says degraded (still 200, the last bundle is
// served), and a change committed during the outage is served soon after the database is back.
func TestServeThroughADatabaseOutage(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, admin := loadedDatabase(t)
	u, err := url.Parse(db)
	if err != nil {
		t.Fatal(err)
	}
	proxy := newTCPProxy(t, u.Host)
	u.Host = proxy.addr
	q := u.Query()
	q.Set("connect_timeout", "1")
	u.RawQuery = q.Encode()
	addr := freeAddr(t)
	etag, stop := serveUntilReady(t, addr, "--database-url", u.String(), "--rebuild-interval", "-1s")
	t.Cleanup(stop)

	outage := time.Now()
	proxy.refuse()
	for !strings.Contains(metricsOf(t, addr), "\nkeygate_source_up 0\n") {
		if time.Since(outage) > 5*time.Second {
			t.Fatalf("keygate_source_up is not 0 within 5s of the outage")
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("keygate_source_up 0 after %s", time.Since(outage).Round(time.Millisecond))
	resp, err := http.Get("http://" + addr + "/health")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"status":"degraded"`) {
		t.Errorf("/health during the outage: %d %s", resp.StatusCode, body)
	}
	if _, err := admin.Exec(ctx, `INSERT INTO tokens (id, user_id) VALUES ('tok-during-outage', 'u-alice')`); err != nil {
		t.Fatal(err)
	}
	time.Sleep(6 * time.Second) // long enough for the old backoff to have grown past 3s
	proxy.open(t)
	back := time.Now()
	_, took := nextRevision(t, addr, etag, 20*time.Second)
	t.Logf("outage of %s: the change committed during it was served %s after the database was back",
		back.Sub(outage).Round(time.Millisecond), took.Round(time.Millisecond))
	if took > 2*time.Second {
		t.Errorf("served %s after the database was back, want < 2s", took)
	}
	// A trigger that arrived during the catching-up build (the listener's catch-up) may cost one more build.
	deadline := time.Now().Add(3 * time.Second)
	for {
		m := metricsOf(t, addr)
		if strings.Contains(m, "\nkeygate_source_up 1\n") && strings.Contains(m, "\nkeygate_source_staleness_seconds 0\n") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("3s after catching up: source_up/staleness not 1/0:\n%s", m)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
