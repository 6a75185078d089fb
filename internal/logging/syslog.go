package logging

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// SyslogWriter is the part of *log/syslog.Writer the handler uses: one
// method per severity.
type SyslogWriter interface {
	Err(m string) error
	Warning(m string) error
	Info(m string) error
	Debug(m string) error
}

// SyslogHandler is a slog.Handler that writes each record as one syslog
// message "msg key=value ..." at the matching severity (records above
// error go out as err, below debug as debug). Time and level are left to
// syslog itself.
type SyslogHandler struct {
	w     SyslogWriter
	level slog.Leveler
	// attrs holds the attributes added with WithAttrs, already formatted
	// (each with a leading space).
	attrs string
	// group is the dotted group prefix for keys of later attributes.
	group string
}

// NewSyslogHandler returns a handler writing records at or above level to w.
func NewSyslogHandler(w SyslogWriter, level slog.Leveler) *SyslogHandler {
	return &SyslogHandler{w: w, level: level}
}

// Enabled reports whether l is at or above the handler's level.
func (h *SyslogHandler) Enabled(_ context.Context, l slog.Level) bool {
	return l >= h.level.Level()
}

// Handle formats and sends one record.
func (h *SyslogHandler) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Message)
	b.WriteString(h.attrs)
	r.Attrs(func(a slog.Attr) bool {
		appendAttr(&b, h.group, a)
		return true
	})
	msg := b.String()
	var err error
	switch {
	case r.Level >= slog.LevelError:
		err = h.w.Err(msg)
	case r.Level >= slog.LevelWarn:
		err = h.w.Warning(msg)
	case r.Level >= slog.LevelInfo:
		err = h.w.Info(msg)
	default:
		err = h.w.Debug(msg)
	}
	if err != nil {
		return fmt.Errorf("syslog write: %w", err)
	}
	return nil
}

// WithAttrs returns a handler that adds as to every record.
func (h *SyslogHandler) WithAttrs(as []slog.Attr) slog.Handler {
	if len(as) == 0 {
		return h
	}
	var b strings.Builder
	b.WriteString(h.attrs)
	for _, a := range as {
		appendAttr(&b, h.group, a)
	}
	h2 := *h
	h2.attrs = b.String()
	return &h2
}

// WithGroup returns a handler that qualifies later keys with name.
func (h *SyslogHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	h2 := *h
	h2.group = h.group + name + "."
	return &h2
}

// appendAttr writes " key=value" (groups flattened to dotted keys).
func appendAttr(b *strings.Builder, prefix string, a slog.Attr) {
	a.Value = a.Value.Resolve()
	if a.Equal(slog.Attr{}) {
		return
	}
	if a.Value.Kind() == slog.KindGroup {
		p := prefix
		if a.Key != "" {
			p = prefix + a.Key + "."
		}
		for _, ga := range a.Value.Group() {
			appendAttr(b, p, ga)
		}
		return
	}
	b.WriteByte(' ')
	b.WriteString(quoteIfNeeded(prefix + a.Key))
	b.WriteByte('=')
	b.WriteString(quoteIfNeeded(a.Value.String()))
}

// quoteIfNeeded quotes s when it is empty or holds spaces, quotes, '=' or
// characters that are not printable.
func quoteIfNeeded(s string) string {
	if s == "" {
		return `""`
	}
	for _, r := range s {
		if r == ' ' || r == '"' || r == '=' || r == utf8.RuneError || !unicode.IsPrint(r) {
			return strconv.Quote(s)
		}
	}
	return s
}
