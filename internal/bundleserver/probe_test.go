package bundleserver

import (
	"context"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keygate/keygate/internal/model"
)

// probe is a test Probe whose answer the test sets.
type probe struct{ err atomic.Pointer[error] }

func (p *probe) set(err error) { p.err.Store(&err) }

func (p *probe) ping(context.Context) error {
	if e := p.err.Load(); e != nil {
		return *e
	}
	return nil
}

func waitUntil(t *testing.T, s *Server, what string, within time.Duration, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > within {
			t.Fatalf("%s: not within %s (last build error: %v)", what, within, s.LastError())
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(start)
}

func healthOf(t *testing.T, url string) (int, health) {
	t.Helper()
	resp, body := get(t, url, nil)
	var h health
	if err := json.Unmarshal(body, &h); err != nil {
		t.Fatalf("%s: %v: %s", url, err, body)
	}
	return resp.StatusCode, h
}

// TestProbeReportsAnOutage: with the default 1s probe, keygate_source_up goes to 0 and the staleness starts
// moving within 5s of the source failing, without any build running; /health stays 200 (the last good bundle
// is served) but says degraded, /health?source is 503; when the source is back, the change made during the
// outage is served at once.
func TestProbeReportsAnOutage(t *testing.T) {
	t.Parallel()
	src := newSource(t)
	var p probe
	s := newServer(t, src, func(c *Config) { c.Probe = p.ping })
	run(t, s)
	waitUntil(t, s, "first bundle", 10*time.Second, s.Ready)
	rev := s.Revision()
	hs := httptest.NewServer(s.Handler())
	t.Cleanup(hs.Close)
	if code, h := healthOf(t, hs.URL+"/health?source"); code != 200 || h.Status != "ok" || !h.SourceUp {
		t.Fatalf("health before the outage: %d %+v", code, h)
	}
	builds := src.calls.Load()

	outage := errors.New("connection refused")
	p.set(outage)
	src.set(grantHeidi, outage) // a change committed during the outage
	took := waitUntil(t, s, "source_up 0", 5*time.Second, func() bool { return value(t, s.metrics.sourceUp) == 0 })
	t.Logf("source_up went to 0 %s after the outage began", took.Round(time.Millisecond))
	waitUntil(t, s, "staleness moving", 5*time.Second, func() bool { return s.staleness() > 0 })
	if n := src.calls.Load(); n != builds {
		t.Errorf("the outage was noticed by %d builds; the probe alone should notice it", n-builds)
	}
	code, h := healthOf(t, hs.URL+"/health")
	if code != 200 || h.Status != "degraded" || h.SourceUp || h.SourceError == "" || h.Revision != rev {
		t.Errorf("health during the outage: %d %+v, want 200 degraded with the source's error", code, h)
	}
	if code, _ := healthOf(t, hs.URL+"/health?source"); code != 503 {
		t.Errorf("health?source during the outage: %d, want 503", code)
	}
	if resp, _ := get(t, hs.URL+BundlePath, nil); resp.StatusCode != 200 {
		t.Errorf("bundle during the outage: %d, want the last good bundle", resp.StatusCode)
	}
	s1 := s.staleness()
	time.Sleep(1100 * time.Millisecond)
	if s2 := s.staleness(); s2 <= s1 {
		t.Errorf("staleness did not grow during the outage: %v then %v", s1, s2)
	}

	back := time.Now()
	src.set(nil, nil)
	p.set(nil)
	waitUntil(t, s, "the change made during the outage", 2*time.Second, func() bool { return s.Revision() != rev })
	t.Logf("new revision %s after the source came back", time.Since(back).Round(time.Millisecond))
	if up := value(t, s.metrics.sourceUp); up != 1 {
		t.Errorf("source_up %v after the source came back", up)
	}
	if st := s.staleness(); st != 0 {
		t.Errorf("staleness %v after catching up", st)
	}
	if code, h := healthOf(t, hs.URL+"/health?source"); code != 200 || h.Status != "ok" {
		t.Errorf("health after the outage: %d %+v", code, h)
	}
}

// TestSourceErrorIsRetriedFast: a build that fails reading the source (a dead pooled connection) is retried
// within a fraction of a second, not after RetryInterval (10s).
func TestSourceErrorIsRetriedFast(t *testing.T) {
	t.Parallel()
	src := newSource(t)
	var failures atomic.Int32
	s := newServer(t, src, func(c *Config) {
		c.Source = func(ctx context.Context) (model.Snapshot, error) {
			if failures.Add(-1) >= 0 {
				return model.Snapshot{}, errors.New("unexpected EOF")
			}
			return src.read(ctx)
		}
	})
	run(t, s)
	waitUntil(t, s, "first bundle", 10*time.Second, s.Ready)
	rev := s.Revision()

	failures.Store(3)
	src.set(grantHeidi, nil)
	s.Trigger()
	took := waitUntil(t, s, "the rebuild after 3 source errors", 2*time.Second, func() bool { return s.Revision() != rev })
	if err := s.LastError(); err != nil {
		t.Errorf("LastError after the rebuild: %v", err)
	}
	t.Logf("rebuilt after 3 source errors in %s", took.Round(time.Millisecond))
}

// TestDataErrorWaitsForRetryInterval: a build that fails on the data is not retried in a tight loop.
func TestDataErrorWaitsForRetryInterval(t *testing.T) {
	t.Parallel()
	src := newSource(t)
	s := newServer(t, src, nil)
	run(t, s)
	waitUntil(t, s, "first bundle", 10*time.Second, s.Ready)
	src.set(func(s *model.Snapshot) {
		s.Assignments = append(s.Assignments, model.Assignment{User: "u-ghost", Role: "User", Org: "org-layer5"})
	}, nil)
	n := src.calls.Load()
	s.Trigger()
	time.Sleep(1500 * time.Millisecond)
	if got := src.calls.Load() - n; got != 1 {
		t.Errorf("%d reads in 1.5s after a data error, want 1 (the next retry is RetryInterval later)", got)
	}
}

// grantHeidi is a change of the data that changes the bundle.
func grantHeidi(s *model.Snapshot) {
	s.Assignments = append(s.Assignments, model.Assignment{User: "u-heidi", Role: "Organization Admin", Org: "org-layer5"})
}
