package sidecar

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/keygate/keygate/internal/envoyauth"
	"github.com/keygate/keygate/internal/identity"
)

// metrics are the sidecar's series of docs/metrics.md, on a private registry.
type metrics struct {
	reg *prometheus.Registry

	checkAllow, checkDeny, checkError prometheus.Observer
	decisions                         *prometheus.CounterVec
	allowed                           prometheus.Counter // decisions{result="allow",reason="none"}, the hot one
	activations                       *prometheus.CounterVec
	bundleInfo                        *prometheus.GaugeVec
	activatedAt                       prometheus.Gauge
	ready                             prometheus.Gauge
	jwtFailures                       *prometheus.CounterVec
	logsDropped                       prometheus.Counter
	refused                           *prometheus.CounterVec // by refusedReasons
}

// Values of keygate_bundle_refused_total's reason label.
const refusedOlderRevision = "older_revision"

var refusedReasons = []string{refusedOlderRevision}

func newMetrics() *metrics {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	f := func(c prometheus.Collector) { reg.MustRegister(c) }

	check := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "keygate_check_duration_seconds",
		Help:    "ext_authz Check latency, server side.",
		Buckets: []float64{.00001, .00002, .00003, .00005, .000075, .0001, .00015, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1},
	}, []string{"result"})
	f(check)
	m := &metrics{
		reg:        reg,
		checkAllow: check.WithLabelValues("allow"),
		checkDeny:  check.WithLabelValues("deny"),
		checkError: check.WithLabelValues("error"),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keygate_decisions_total",
			Help: "Decisions made (Check and /v1/data) by result and reason code.",
		}, []string{"result", "reason"}),
		activations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keygate_bundle_activations_total",
			Help: "Bundle activations by result.",
		}, []string{"result"}),
		bundleInfo: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "keygate_bundle_info",
			Help: "The active bundle's revision (one series at a time).",
		}, []string{"revision"}),
		activatedAt: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "keygate_bundle_activation_timestamp_seconds",
			Help: "When the active bundle was activated (unix seconds).",
		}),
		ready: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "keygate_bundle_ready",
			Help: "1 once a bundle is active.",
		}),
		jwtFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keygate_jwt_failures_total",
			Help: "Bearer tokens rejected, by reason.",
		}, []string{"reason"}),
		logsDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "keygate_decision_logs_dropped_total",
			Help: "Decision log entries dropped because the log queue was full.",
		}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keygate_bundle_refused_total",
			Help: "Bundles (snapshots or deltas) refused before activation, by reason; the active bundle stays.",
		}, []string{"reason"}),
	}
	f(m.decisions)
	f(m.activations)
	f(m.bundleInfo)
	f(m.activatedAt)
	f(m.ready)
	f(m.jwtFailures)
	f(m.logsDropped)
	f(m.refused)
	for _, r := range refusedReasons {
		m.refused.WithLabelValues(r)
	}
	for _, r := range []string{"success", "failure"} {
		m.activations.WithLabelValues(r)
	}
	for _, r := range identity.Reasons {
		m.jwtFailures.WithLabelValues(string(r))
	}
	m.allowed = m.decisions.WithLabelValues("allow", envoyauth.ReasonNone)
	return m
}

func (m *metrics) decision(result, reason string) {
	if result == "allow" && reason == "" {
		m.allowed.Inc()
		return
	}
	m.decisions.WithLabelValues(result, envoyauth.MetricReason(reason)).Inc()
}
