package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"
)

// Config configures a Watcher. The zero value of a duration field means its default.
type Config struct {
	// DatabaseURL is the PostgreSQL connection string (URL or key=value) of the database to watch. Required.
	DatabaseURL string `json:"database_url" yaml:"database_url"`
	// Debounce is how long changes are gathered after the first notification before onChange is called, so a
	// burst of statements (a load) causes one rebuild. Default 100ms.
	Debounce time.Duration `json:"debounce" yaml:"debounce"`
	// Rebuild is the period of an unconditional onChange call, a safety net for missed notifications.
	// Default 5m; negative disables it.
	Rebuild time.Duration `json:"rebuild" yaml:"rebuild"`
	// MinBackoff is the wait before the first reconnection attempt after the listener connection is lost; it
	// doubles (with jitter) on each failed attempt up to MaxBackoff. Default 100ms.
	MinBackoff time.Duration `json:"min_backoff" yaml:"min_backoff"`
	// MaxBackoff caps the reconnection wait. Default 500ms: two connection attempts a second while the database
	// is down, so a change committed during an outage is picked up within about a second of its end (Wake
	// cuts the wait short when a probe sees the database back).
	MaxBackoff time.Duration `json:"max_backoff" yaml:"max_backoff"`
	// Ping is how often an idle listener connection is checked, so a silently dead connection is noticed.
	// Default 30s.
	Ping time.Duration `json:"ping" yaml:"ping"`
	// Logger receives the watcher's logs. Default: discard.
	Logger *slog.Logger `json:"-" yaml:"-"`
}

// Defaults of Config.
const (
	DefaultDebounce   = 100 * time.Millisecond
	DefaultRebuild    = 5 * time.Minute
	DefaultMinBackoff = 100 * time.Millisecond
	DefaultMaxBackoff = 500 * time.Millisecond
	DefaultPing       = 30 * time.Second
)

// Validate reports the first bad field of c, by its configuration key.
func (c Config) Validate() error {
	if c.DatabaseURL == "" {
		return errors.New("database_url: required")
	}
	if _, err := pgx.ParseConfig(c.DatabaseURL); err != nil {
		return fmt.Errorf("database_url: %w", err)
	}
	for _, f := range []struct {
		key string
		d   time.Duration
	}{{"debounce", c.Debounce}, {"min_backoff", c.MinBackoff}, {"max_backoff", c.MaxBackoff}, {"ping", c.Ping}} {
		if f.d < 0 {
			return fmt.Errorf("%s: must not be negative, got %s", f.key, f.d)
		}
	}
	d := c.withDefaults()
	if d.MaxBackoff < d.MinBackoff {
		return fmt.Errorf("max_backoff: %s is less than min_backoff %s", d.MaxBackoff, d.MinBackoff)
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.Debounce == 0 {
		c.Debounce = DefaultDebounce
	}
	if c.Rebuild == 0 {
		c.Rebuild = DefaultRebuild
	}
	if c.MinBackoff == 0 {
		c.MinBackoff = DefaultMinBackoff
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = max(DefaultMaxBackoff, c.MinBackoff)
	}
	if c.Ping == 0 {
		c.Ping = DefaultPing
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Watcher calls onChange when the access model in the database may have changed: after notifications on
// ChangeChannel (debounced), after every (re)connection of its listener (to catch up on changes made while it
// was not listening, including the first connection), and every Rebuild period. onChange is called from one
// goroutine, never concurrently with itself; notifications arriving meanwhile cause one more call.
type Watcher struct {
	cfg      Config
	connCfg  *pgx.ConnConfig
	onChange func()
	pid      atomic.Uint32
	wake     chan struct{} // buffered(1): Wake cuts a reconnection wait short
}

// NewWatcher checks cfg and returns a watcher; Run starts it.
func NewWatcher(cfg Config, onChange func()) (*Watcher, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("store config: %w", err)
	}
	if onChange == nil {
		return nil, errors.New("store watcher: onChange is nil")
	}
	connCfg, err := pgx.ParseConfig(cfg.DatabaseURL)
	if err != nil {
		return nil, fmt.Errorf("store config: database_url: %w", err)
	}
	// A timed-out wait must leave the connection usable (the ping check relies on it): interrupt reads with a
	// deadline instead of a cancel request.
	connCfg.BuildContextWatcherHandler = func(pgConn *pgconn.PgConn) ctxwatch.Handler {
		return &pgconn.DeadlineContextWatcherHandler{Conn: pgConn.Conn()}
	}
	return &Watcher{cfg: cfg.withDefaults(), connCfg: connCfg, onChange: onChange, wake: make(chan struct{}, 1)}, nil
}

// Watch runs a Watcher until ctx is done.
func Watch(ctx context.Context, cfg Config, onChange func()) error {
	w, err := NewWatcher(cfg, onChange)
	if err != nil {
		return err
	}
	return w.Run(ctx)
}

// Wake makes a watcher waiting to reconnect try at once (the database answered a probe). It never blocks and
// does nothing while the watcher is connected.
func (w *Watcher) Wake() {
	if w.pid.Load() != 0 {
		return
	}
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// PID returns the server process id of the current listener connection, 0 while disconnected.
func (w *Watcher) PID() uint32 { return w.pid.Load() }

// Run listens until ctx is done, then returns nil.
func (w *Watcher) Run(ctx context.Context) error {
	changed := make(chan struct{}, 1)
	signal := func() {
		select {
		case changed <- struct{}{}:
		default:
		}
	}
	var wg sync.WaitGroup
	wg.Go(func() { w.listen(ctx, signal) })
	defer wg.Wait()

	var rebuild <-chan time.Time
	if w.cfg.Rebuild > 0 {
		t := time.NewTicker(w.cfg.Rebuild)
		defer t.Stop()
		rebuild = t.C
	}
	debounce := time.NewTimer(0)
	if !debounce.Stop() {
		<-debounce.C
	}
	defer debounce.Stop()
	pending := false
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
			if !pending {
				pending = true
				debounce.Reset(w.cfg.Debounce)
			}
		case <-debounce.C:
			pending = false
			w.cfg.Logger.DebugContext(ctx, "access model changed")
			w.onChange()
		case <-rebuild:
			w.cfg.Logger.DebugContext(ctx, "periodic rebuild")
			w.onChange()
		}
	}
}

// listen keeps a listener connection up until ctx is done, reconnecting with exponential backoff.
func (w *Watcher) listen(ctx context.Context, signal func()) {
	backoff := w.cfg.MinBackoff
	for {
		connected := false
		err := w.session(ctx, signal, func() { connected = true; backoff = w.cfg.MinBackoff })
		w.pid.Store(0)
		if ctx.Err() != nil {
			return
		}
		// Full jitter over [backoff/2, backoff].
		wait := backoff/2 + rand.N(backoff/2+1)
		if connected {
			w.cfg.Logger.WarnContext(ctx, "change listener lost; reconnecting", "error", err, "retry_in", wait)
		} else {
			w.cfg.Logger.WarnContext(ctx, "change listener cannot connect", "error", err, "retry_in", wait)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		case <-w.wake:
		}
		backoff = min(backoff*2, w.cfg.MaxBackoff)
	}
}

// session connects, listens and relays notifications until the connection fails or ctx is done.
func (w *Watcher) session(ctx context.Context, signal func(), connected func()) error {
	conn, err := pgx.ConnectConfig(ctx, w.connCfg)
	if err != nil {
		return err
	}
	defer func() {
		closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		_ = conn.Close(closeCtx)
	}()
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{ChangeChannel}.Sanitize()); err != nil {
		return fmt.Errorf("listening: %w", err)
	}
	// Notifications are database-wide and name "schema.table": only this connection's schema (its search_path,
	// where keygate's tables are) concerns this watcher.
	var schema string
	if err := conn.QueryRow(ctx, "SELECT current_schema()").Scan(&schema); err != nil {
		return fmt.Errorf("reading the current schema: %w", err)
	}
	connected()
	w.pid.Store(conn.PgConn().PID())
	w.cfg.Logger.InfoContext(ctx, "listening for changes", "channel", ChangeChannel, "pid", conn.PgConn().PID())
	signal() // catch up on whatever changed while not listening
	for {
		waitCtx, cancel := context.WithTimeout(ctx, w.cfg.Ping)
		n, err := conn.WaitForNotification(waitCtx)
		cancel()
		switch {
		case err == nil:
			if notified, _, qualified := strings.Cut(n.Payload, "."); qualified && notified != schema {
				continue // another schema's change
			}
			w.cfg.Logger.DebugContext(ctx, "change notified", "table", n.Payload)
			signal()
		case ctx.Err() != nil:
			return ctx.Err()
		case pgconn.Timeout(err) && !conn.IsClosed():
			if err := conn.Ping(ctx); err != nil {
				return fmt.Errorf("pinging: %w", err)
			}
		default:
			return err
		}
	}
}
