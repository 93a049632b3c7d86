package sidecar

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/keygate/keygate/internal/envoyauth"
)

// decisionEntry is one decision log record.
type decisionEntry struct {
	ID       string
	Time     time.Time
	Path     string // the decision's path (data.keygate.envoy.response, ...)
	Revision string
	Input    ast.Value // the data API's input
	// Request is the Check the decision was made on (nil when it could not be read); its input document is
	// built here, on the log's goroutine, not on the Check's.
	Request  *envoyauth.Request
	Result   string // allow, deny, dry_run
	Reason   string
	Status   int
	User     string
	Org      string
	Key      string
	Route    string
	Duration time.Duration
}

// decisionLog writes decision records through a bounded queue drained by one goroutine; when the queue is
// full the entry is dropped and counted, so logging never slows a Check.
type decisionLog struct {
	logger  *slog.Logger
	ch      chan decisionEntry
	dropped func()
	wg      sync.WaitGroup
	once    sync.Once
}

func newDecisionLog(logger *slog.Logger, size int, dropped func()) *decisionLog {
	l := &decisionLog{logger: logger, ch: make(chan decisionEntry, size), dropped: dropped}
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
		attrs := []slog.Attr{
			slog.String("decision_id", e.ID),
			slog.Time("time", e.Time),
			slog.String("path", e.Path),
			slog.String("revision", e.Revision),
			slog.String("result", e.Result),
			slog.Duration("duration", e.Duration),
		}
		if e.Reason != "" {
			attrs = append(attrs, slog.String("reason", e.Reason))
		}
		if e.Status != 0 {
			attrs = append(attrs, slog.Int("http_status", e.Status))
		}
		for _, kv := range [][2]string{{"user", e.User}, {"org", e.Org}, {"key", e.Key}, {"route", e.Route}} {
			if kv[1] != "" {
				attrs = append(attrs, slog.String(kv[0], kv[1]))
			}
		}
		if e.Request != nil {
			e.Input = e.Request.Input()
		}
		if e.Input != nil {
			attrs = append(attrs, slog.String("input", e.Input.String()))
		}
		l.logger.LogAttrs(ctx, slog.LevelInfo, "decision", attrs...)
	}
}

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
