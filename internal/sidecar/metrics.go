package sidecar

import (
	"sync/atomic"

	opametrics "github.com/open-policy-agent/opa/v1/metrics"
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
	logsDropped                       *decisionLogCollector
	downloadFailures                  *prometheus.CounterVec
	refused                           *prometheus.CounterVec // by refusedReasons
	lastSuccess                       prometheus.Gauge
	stale                             prometheus.Gauge
	dataRefused                       prometheus.Counter
}

// Values of keygate_bundle_refused_total's reason label: refusedOlderRevision is counted by the ordered store
// (order.go), the others from the bundle plugin's status (engine.go, refusedReason).
const refusedOlderRevision = "older_revision"

var refusedReasons = []string{refusedOlderRevision, "size_limit", "signature", "invalid"}

// decisionLogCollector reports keygate_decision_logs_dropped_total and keygate_decision_logs_uploads_total:
// the hand-off queue's drops (counted here) and OPA's decision log plugin's own counters (read from its
// metrics at scrape time).
type decisionLogCollector struct {
	queueFull        atomic.Uint64
	opa              atomic.Pointer[opametrics.Metrics]
	dropped, uploads *prometheus.Desc
}

// opaDropCounters maps keygate's drop reasons to OPA's decision log counters.
var opaDropCounters = [][2]string{
	{"rate_limit", "decision_logs_dropped_rate_limit_exceeded"},
	{"buffer_full", "decision_logs_dropped_buffer_size_limit_exceeded"},
	{"encoding", "decision_logs_encoding_failure"},
}

// Inc counts an entry dropped because the hand-off queue was full.
func (c *decisionLogCollector) Inc() { c.queueFull.Add(1) }

func (c *decisionLogCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.dropped; ch <- c.uploads }

func (c *decisionLogCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(c.dropped, prometheus.CounterValue, float64(c.queueFull.Load()), "queue_full")
	var om opametrics.Metrics
	if p := c.opa.Load(); p != nil {
		om = *p
	}
	value := func(name string) float64 {
		if om == nil {
			return 0
		}
		if v, ok := om.Counter(name).Value().(uint64); ok {
			return float64(v)
		}
		return 0
	}
	for _, rc := range opaDropCounters {
		ch <- prometheus.MustNewConstMetric(c.dropped, prometheus.CounterValue, value(rc[1]), rc[0])
	}
	ch <- prometheus.MustNewConstMetric(c.uploads, prometheus.CounterValue, value("decision_logs_chunks_uploaded"), "success")
	ch <- prometheus.MustNewConstMetric(c.uploads, prometheus.CounterValue, value("decision_logs_chunks_upload_failed"), "failure")
}

// watchOPA makes the collector read the counters of OPA's plugins.
func (m *metrics) watchOPA(om opametrics.Metrics) { m.logsDropped.opa.Store(&om) }

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
		logsDropped: &decisionLogCollector{
			dropped: prometheus.NewDesc("keygate_decision_logs_dropped_total",
				"Decision log entries dropped, by reason: queue_full (keygate's hand-off queue), rate_limit, buffer_full (OPA's chunks), encoding.",
				[]string{"reason"}, nil),
			uploads: prometheus.NewDesc("keygate_decision_logs_uploads_total",
				"Decision log chunks uploaded to the decision_logs service, by result.", []string{"result"}, nil),
		},
		downloadFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keygate_bundle_download_failures_total",
			Help: "Bundle downloads that failed, by reason: request (network), http_status, refused (a bundle arrived and was refused).",
		}, []string{"reason"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keygate_bundle_refused_total",
			Help: "Downloaded bundles (snapshots or deltas) refused before activation, the last good bundle kept answering, by reason: older_revision, size_limit, signature, invalid.",
		}, []string{"reason"}),
		lastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "keygate_bundle_last_success_timestamp_seconds",
			Help: "When the bundle server last confirmed the active bundle (a 200 or a 304; unix seconds).",
		}),
		stale: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "keygate_bundle_stale",
			Help: "1 while the active bundle is older than max_bundle_age (readiness fails).",
		}),
		dataRefused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "keygate_data_api_refused_total",
			Help: "Data API requests refused because they named a document that is not a decision entrypoint.",
		}),
	}
	f(m.decisions)
	f(m.activations)
	f(m.bundleInfo)
	f(m.activatedAt)
	f(m.ready)
	f(m.jwtFailures)
	f(m.logsDropped)
	f(m.downloadFailures)
	f(m.refused)
	f(m.lastSuccess)
	f(m.stale)
	for _, r := range []string{"request", "http_status", "refused"} {
		m.downloadFailures.WithLabelValues(r)
	}
	for _, r := range refusedReasons {
		m.refused.WithLabelValues(r)
	}
	f(m.dataRefused)
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
