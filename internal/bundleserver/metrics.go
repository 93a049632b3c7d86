package bundleserver

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/keygate/keygate/internal/model"
)

// objectKinds are the values of keygate_bundle_objects' kind label.
var objectKinds = []string{"keys", "keychains", "roles", "users", "organizations", "teams", "workspaces",
	"designs", "assignments", "tokens", "routes"}

// requestCodes are the values of keygate_bundle_requests_total's code label. 503 is the answer before the
// first successful build.
var requestCodes = []int{200, 304, 401, 404, 500, 503}

// metrics are the bundle server's series of docs/metrics.md, on a private registry.
type metrics struct {
	reg *prometheus.Registry

	buildDuration *prometheus.HistogramVec
	builds        *prometheus.CounterVec
	lastSuccess   prometheus.Gauge
	size          prometheus.Gauge
	objects       *prometheus.GaugeVec
	sourceUp      prometheus.Gauge
	requests      map[int]prometheus.Counter
	sentCount     *prometheus.CounterVec
	sentBytes     *prometheus.CounterVec
	deltaDuration prometheus.Histogram
}

// bundleKinds are the values of the kind label: what a 200 answer carried.
var bundleKinds = []string{"snapshot", "delta"}

func newMetrics(staleness func() float64, h *history) *metrics {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := &metrics{
		reg: reg,
		buildDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "keygate_build_duration_seconds",
			Help:    "Bundle build time: snapshot + compile + sign.",
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"result"}),
		builds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keygate_builds_total",
			Help: "Bundle builds by result.",
		}, []string{"result"}),
		lastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "keygate_build_last_success_timestamp_seconds",
			Help: "End of the last successful build (unix seconds).",
		}),
		size: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "keygate_bundle_size_bytes",
			Help: "Size of the served bundle.",
		}),
		objects: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "keygate_bundle_objects",
			Help: "Objects in the served bundle, by kind.",
		}, []string{"kind"}),
		sourceUp: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "keygate_source_up",
			Help: "1 when the data source (database) answered its last probe (every second) or read.",
		}),
		requests: map[int]prometheus.Counter{},
	}
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "keygate_bundle_requests_total",
		Help: "Bundle downloads served, by HTTP status code.",
	}, []string{"code"})
	staleGauge := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "keygate_source_staleness_seconds",
		Help: "Seconds since the first change not yet in the served bundle, or since the source last answered while it is down (0 when up to date).",
	}, staleness)
	m.sentCount = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "keygate_bundle_responses_total",
		Help: "Bundles sent (200 answers), by kind: snapshot or delta.",
	}, []string{"kind"})
	m.sentBytes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "keygate_bundle_response_bytes_total",
		Help: "Bytes of the bundles sent, by kind: snapshot or delta.",
	}, []string{"kind"})
	m.deltaDuration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "keygate_bundle_delta_duration_seconds",
		Help:    "Time to compute one delta bundle (diff of two retained data documents + writing it).",
		Buckets: []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
	})
	retained := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "keygate_bundle_retained_revisions",
		Help: "Revisions whose data document is retained as a base of delta bundles (0 when deltas are off).",
	}, func() float64 {
		if h == nil {
			return 0
		}
		n, _ := h.stats()
		return float64(n)
	})
	retainedBytes := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "keygate_bundle_retained_bytes",
		Help: "Total size of the retained data documents.",
	}, func() float64 {
		if h == nil {
			return 0
		}
		_, b := h.stats()
		return float64(b)
	})
	reg.MustRegister(m.buildDuration, m.builds, m.lastSuccess, m.size, m.objects, m.sourceUp, requests, staleGauge,
		m.sentCount, m.sentBytes, m.deltaDuration, retained, retainedBytes)
	for _, k := range bundleKinds {
		m.sentCount.WithLabelValues(k)
		m.sentBytes.WithLabelValues(k)
	}
	for _, r := range []string{"success", "failure"} {
		m.builds.WithLabelValues(r)
		m.buildDuration.WithLabelValues(r)
	}
	for _, k := range objectKinds {
		m.objects.WithLabelValues(k)
	}
	for _, c := range requestCodes {
		m.requests[c] = requests.WithLabelValues(strconv.Itoa(c))
	}
	return m
}

func (m *metrics) request(code int) {
	if c, ok := m.requests[code]; ok {
		c.Inc()
	}
}

// sent counts a bundle sent.
func (m *metrics) sent(kind string, n int) {
	m.sentCount.WithLabelValues(kind).Inc()
	m.sentBytes.WithLabelValues(kind).Add(float64(n))
}

func (m *metrics) buildDone(ok bool, d time.Duration) {
	result := "failure"
	if ok {
		result = "success"
	}
	m.builds.WithLabelValues(result).Inc()
	m.buildDuration.WithLabelValues(result).Observe(d.Seconds())
}

// served records the served bundle's size and object counts.
func (m *metrics) served(size int, md *model.Model) {
	m.size.Set(float64(size))
	counts := map[string]int{
		"keys": len(md.Keys), "keychains": len(md.Keychains), "roles": len(md.Roles), "users": len(md.Users),
		"organizations": len(md.Organizations), "teams": len(md.Teams), "workspaces": len(md.Workspaces),
		"designs": len(md.Designs), "assignments": len(md.Assignments), "tokens": len(md.Tokens),
		"routes": len(md.Routes),
	}
	for _, k := range objectKinds {
		m.objects.WithLabelValues(k).Set(float64(counts[k]))
	}
}
