package sidecar

import (
	"os"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
)

func writeFile(path string, data []byte) error { return os.WriteFile(path, data, 0o644) }

func metricValue(t *testing.T, s *Sidecar, name, label string) (float64, bool) {
	t.Helper()
	mfs, err := s.metrics.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if label != "" && !hasLabelValue(m, label) {
				continue
			}
			switch {
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue(), true
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue(), true
			}
		}
	}
	return 0, false
}

func hasLabelValue(m *dto.Metric, v string) bool {
	for _, l := range m.GetLabel() {
		if l.GetValue() == v {
			return true
		}
	}
	return false
}

func counterValue(t *testing.T, s *Sidecar, name, label string) float64 {
	v, _ := metricValue(t, s, name, label)
	return v
}

func gaugeValue(t *testing.T, s *Sidecar, name, label string) float64 {
	v, _ := metricValue(t, s, name, label)
	return v
}

func TestMetricsLint(t *testing.T) {
	t.Parallel()
	m := newMetrics()
	m.decision("deny", "no_grant")
	m.checkAllow.Observe(0.0001)
	gathered, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	problems, err := promlint.NewWithMetricFamilies(gathered).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
	for _, name := range []string{"keygate_check_duration_seconds", "keygate_decisions_total",
		"keygate_bundle_activations_total", "keygate_bundle_activation_timestamp_seconds", "keygate_bundle_ready",
		"keygate_jwt_failures_total", "keygate_decision_logs_dropped_total"} {
		mfs, _ := m.reg.Gather()
		found := false
		for _, mf := range mfs {
			found = found || mf.GetName() == name
		}
		if !found {
			t.Errorf("metric %s not exported", name)
		}
	}
}
