package sidecar

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	opametrics "github.com/open-policy-agent/opa/v1/metrics"
	"github.com/open-policy-agent/opa/v1/server"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/util"

	"github.com/keygate/keygate/internal/envoyauth"
)

// decisionEntry is what a Check or a data API decision hands to the decision log: plain values, so the
// hot path copies a few words; the OPA event (input document, result document) is built on the log's
// goroutine.
type decisionEntry struct {
	ID       string
	Time     time.Time
	Path     string // the decision's path (data.keygate.envoy.response, ...)
	Revision string
	Input    ast.Value // the data API's input
	// Request is the Check the decision was made on (nil when it could not be read); its input document is
	// built here, on the log's goroutine, not on the Check's.
	Request *envoyauth.Request
	// Decision is a Check's decision (its result document); Result is a data API's result.
	Decision envoyauth.Decision
	Result   any
	Outcome  string // allow, deny, dry_run
	Reason   string
	Peer     net.Addr // a Check's gRPC peer
	From     string   // a data API request's remote address
	Duration time.Duration
}

// decisionLog hands decision entries to OPA's decision log plugin (plugins/logs: drop_decision,
// mask_decision, the console sink and the batched, retried HTTP upload) through a bounded queue drained by
// one goroutine; when the queue is full the entry is dropped and counted, so logging never slows a Check.
type decisionLog struct {
	logger  *slog.Logger
	store   storage.Store
	sink    func(context.Context, *server.Info) error
	ch      chan decisionEntry
	dropped func()
	wg      sync.WaitGroup
	once    sync.Once
}

func newDecisionLog(logger *slog.Logger, store storage.Store, size int, sink func(context.Context, *server.Info) error, dropped func()) *decisionLog {
	l := &decisionLog{logger: logger, store: store, sink: sink, ch: make(chan decisionEntry, size), dropped: dropped}
	l.wg.Add(1)
	go l.run()
	return l
}

func (l *decisionLog) log(e decisionEntry) {
	if l == nil {
		return
	}
	select {
	case l.ch <- e:
	default:
		l.dropped()
	}
}

func (l *decisionLog) run() {
	defer l.wg.Done()
	ctx := context.Background()
	for e := range l.ch {
		if err := l.hand(ctx, e.info()); err != nil {
			l.logger.Warn("decision log", "decision_id", e.ID, "error", err)
		}
	}
}

// hand gives one entry to the sink inside a read transaction of the store, as OPA's server does (Info.Txn): the
// plugin's mask and drop queries then use it instead of opening their own while holding the plugin's query
// cache lock, which deadlocked against a bundle activation (the store's write lock, then that cache lock).
func (l *decisionLog) hand(ctx context.Context, info *server.Info) error {
	if l.store == nil {
		return l.sink(ctx, info)
	}
	txn, err := l.store.NewTransaction(ctx)
	if err != nil {
		return err
	}
	defer l.store.Abort(ctx, txn)
	info.Txn = txn
	return l.sink(ctx, info)
}

// info is the entry as OPA's server hands a decision to the decision log plugin. The plugin turns it into
// an EventV1 (OPA's decision log schema): labels, decision_id, path, input, result, bundles, requested_by,
// timestamp, metrics, and custom.keygate with keygate's own fields (docs/metrics.md, "Decision logs").
func (e *decisionEntry) info() *server.Info {
	in := e.Input
	if e.Request != nil {
		in = e.Request.Input()
	}
	info := &server.Info{
		DecisionID: e.ID,
		Path:       logPath(e.Path),
		Timestamp:  e.Time.UTC(),
		Bundles:    map[string]server.BundleInfo{bundleName: {Revision: e.Revision}},
		RemoteAddr: e.From,
		Metrics:    handlerMetrics{Metrics: opametrics.NoOp(), ns: e.Duration.Nanoseconds()},
	}
	if e.Peer != nil {
		info.RemoteAddr = e.Peer.String()
	}
	if _, seq, ok := strings.Cut(e.ID, "-"); ok {
		info.RequestID, _ = strconv.ParseUint(seq, 16, 64) // req_id: the decision's sequence number
	}
	if in != nil {
		if x, err := ast.JSON(in); err == nil {
			info.Input, info.InputAST = &x, in
		}
	}
	result := e.Result
	if result == nil && e.Outcome != "" {
		result = decisionDocument(e.Decision)
	}
	if result != nil {
		info.Results = &result
	}
	kg := map[string]any{"result": e.Outcome, "revision": e.Revision}
	if e.Reason != "" {
		kg["reason"] = e.Reason
	}
	info.Custom = map[string]any{"keygate": kg}
	return info
}

// logPath is a decision's path as OPA logs it: data.keygate.envoy.response -> keygate/envoy/response.
func logPath(path string) string {
	ref, err := ast.ParseRef(path)
	if err != nil || len(ref) == 0 {
		return path
	}
	segs := make([]string, 0, len(ref)-1)
	for _, t := range ref[1:] {
		if s, ok := t.Value.(ast.String); ok {
			segs = append(segs, string(s))
		} else {
			segs = append(segs, t.String())
		}
	}
	return strings.Join(segs, "/")
}

// decisionDocument is a Check's decision as the data.keygate.envoy.response document it stands for.
func decisionDocument(d envoyauth.Decision) any {
	raw, err := json.Marshal(d)
	if err != nil {
		return nil
	}
	var v any
	if err := util.UnmarshalJSON(raw, &v); err != nil {
		return nil
	}
	return v
}

// handlerMetrics is the event's metrics: the decision's server-side time, as OPA's
// timer_server_handler_ns. The plugin only reads All.
type handlerMetrics struct {
	opametrics.Metrics
	ns int64
}

func (m handlerMetrics) All() map[string]any { return map[string]any{"timer_server_handler_ns": m.ns} }

// close drains the queue and stops the writer.
func (l *decisionLog) close() {
	if l == nil {
		return
	}
	l.once.Do(func() {
		close(l.ch)
		l.wg.Wait()
	})
}
