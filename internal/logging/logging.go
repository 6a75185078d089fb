// Package logging builds the daemon's log/slog logger: text lines on stderr
// and, unless disabled, the same records in syslog (ident "butterfly",
// facility LOCAL0), with a level that can be changed while running.
//
// Levels use the original's names: none, error, warning, info, debug.
package logging

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"log/syslog"
	"strings"
)

// LevelNone is above every level a record can have: nothing is logged.
const LevelNone = slog.Level(1 << 10)

// LevelNames returns the accepted level names, most quiet first.
func LevelNames() []string {
	return []string{"none", "error", "warning", "info", "debug"}
}

// ParseLevel maps a level name (case-insensitive; "warn" and "err" are
// accepted too) to a slog level.
func ParseLevel(name string) (slog.Level, error) {
	switch strings.ToLower(strings.TrimSpace(name)) {
	case "none":
		return LevelNone, nil
	case "error", "err":
		return slog.LevelError, nil
	case "warning", "warn":
		return slog.LevelWarn, nil
	case "info":
		return slog.LevelInfo, nil
	case "debug":
		return slog.LevelDebug, nil
	}
	return 0, fmt.Errorf("unknown log level %q (want one of %s)", name, strings.Join(LevelNames(), ", "))
}

// LevelName is the inverse of ParseLevel for the levels it returns.
func LevelName(l slog.Level) string {
	switch l {
	case LevelNone:
		return "none"
	case slog.LevelError:
		return "error"
	case slog.LevelWarn:
		return "warning"
	case slog.LevelInfo:
		return "info"
	case slog.LevelDebug:
		return "debug"
	}
	return l.String()
}

// Options configure New.
type Options struct {
	// Level is the initial level name ("" = info).
	Level string
	// Stderr receives text lines; nil = no stderr output.
	Stderr io.Writer
	// Syslog enables the syslog output.
	Syslog bool
	// SyslogNetwork and SyslogAddr select the syslog server as for
	// log/syslog.Dial; both empty = the local syslog daemon.
	SyslogNetwork, SyslogAddr string
}

// Logging is the daemon's logger and the control over its level.
type Logging struct {
	logger *slog.Logger
	level  *slog.LevelVar
	sys    *syslog.Writer
}

// New builds the logger. If syslog is asked for but cannot be reached, New
// returns a working stderr-only Logging together with an error describing
// why syslog is off; the caller decides whether that is fatal.
func New(opts Options) (*Logging, error) {
	lv := new(slog.LevelVar)
	if opts.Level != "" {
		l, err := ParseLevel(opts.Level)
		if err != nil {
			return nil, err
		}
		lv.Set(l)
	}
	lg := &Logging{level: lv}
	var handlers []slog.Handler
	if opts.Stderr != nil {
		handlers = append(handlers, slog.NewTextHandler(opts.Stderr, &slog.HandlerOptions{Level: lv}))
	}
	var sysErr error
	if opts.Syslog {
		w, err := syslog.Dial(opts.SyslogNetwork, opts.SyslogAddr, syslog.LOG_LOCAL0|syslog.LOG_INFO, "butterfly")
		if err != nil {
			sysErr = fmt.Errorf("syslog unavailable, logging to stderr only: %w", err)
		} else {
			lg.sys = w
			handlers = append(handlers, NewSyslogHandler(w, lv))
		}
	}
	switch len(handlers) {
	case 0:
		lg.logger = slog.New(discard{})
	case 1:
		lg.logger = slog.New(handlers[0])
	default:
		lg.logger = slog.New(fanout(handlers))
	}
	return lg, sysErr
}

// Logger returns the logger.
func (l *Logging) Logger() *slog.Logger { return l.logger }

// SetLevel changes the level of every output at once; the API's
// app_config log_level uses it.
func (l *Logging) SetLevel(name string) error {
	lv, err := ParseLevel(name)
	if err != nil {
		return err
	}
	l.level.Set(lv)
	return nil
}

// Level returns the current level name.
func (l *Logging) Level() string { return LevelName(l.level.Level()) }

// Close closes the syslog connection, if any.
func (l *Logging) Close() error {
	if l.sys == nil {
		return nil
	}
	if err := l.sys.Close(); err != nil {
		return fmt.Errorf("close syslog: %w", err)
	}
	return nil
}

// discard drops every record.
type discard struct{}

func (discard) Enabled(context.Context, slog.Level) bool  { return false }
func (discard) Handle(context.Context, slog.Record) error { return nil }
func (d discard) WithAttrs([]slog.Attr) slog.Handler      { return d }
func (d discard) WithGroup(string) slog.Handler           { return d }

// fanout sends each record to every handler that accepts its level.
type fanout []slog.Handler

func (f fanout) Enabled(ctx context.Context, l slog.Level) bool {
	for _, h := range f {
		if h.Enabled(ctx, l) {
			return true
		}
	}
	return false
}

func (f fanout) Handle(ctx context.Context, r slog.Record) error {
	var errs []error
	for _, h := range f {
		if h.Enabled(ctx, r.Level) {
			if err := h.Handle(ctx, r.Clone()); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

func (f fanout) WithAttrs(as []slog.Attr) slog.Handler {
	out := make(fanout, len(f))
	for i, h := range f {
		out[i] = h.WithAttrs(as)
	}
	return out
}

func (f fanout) WithGroup(name string) slog.Handler {
	out := make(fanout, len(f))
	for i, h := range f {
		out[i] = h.WithGroup(name)
	}
	return out
}
