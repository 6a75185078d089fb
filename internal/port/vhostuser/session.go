package vhostuser

import (
	"fmt"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// listenUnix creates a listening socket at path (backlog 1: one front
// end at a time) on the runtime's poller. The listener never removes
// path itself.
func listenUnix(path string) (*net.UnixListener, error) {
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
		os.Remove(path)
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("vhost-user %s: socket: %w", path, err)
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		return nil, fmt.Errorf("vhost-user %s: bind: %w", path, err)
	}
	if err := unix.Listen(fd, 1); err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("vhost-user %s: listen: %w", path, err)
	}
	l, err := net.FileListener(f)
	if err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("vhost-user %s: listener: %w", path, err)
	}
	ln := l.(*net.UnixListener)
	ln.SetUnlinkOnClose(false)
	return ln, nil
}

// serve accepts front ends one at a time until Close.
func (p *Port) serve() {
	defer close(p.done)
	for !p.closed.Load() {
		c, err := p.ln.AcceptUnix()
		if err != nil {
			if p.closed.Load() {
				return
			}
			p.log.Error("vhost-user accept failed", "err", err)
			if !p.pause(100 * time.Millisecond) {
				return
			}
			continue
		}
		if served, _ := p.session(c); !served {
			return
		}
	}
}

// pause waits for d, or until Close; it reports whether the port is
// still open.
func (p *Port) pause(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-p.stop:
		return false
	case <-t.C:
		return true
	}
}

// session serves the front end on the connected socket c until it
// disconnects or Close, then closes c. served is false, and nothing was
// served, if the port is already closed; ran reports whether a ring was
// started (the front end completed its setup).
func (p *Port) session(c *net.UnixConn) (served, ran bool) {
	p.connMu.Lock()
	if p.closed.Load() {
		p.connMu.Unlock()
		c.Close()
		return false, false
	}
	p.conn = c
	p.connMu.Unlock()
	p.conns.Add(1)
	p.log.Info("vhost-user front end connected")
	d := newDevice(p, c)
	err := d.run()
	d.teardown()
	p.connMu.Lock()
	p.conn = nil
	p.connMu.Unlock()
	c.Close()
	p.log.Info("vhost-user front end disconnected", "reason", err)
	return true, d.ran
}

// Client-mode redial delays: the first after a failure, and the bound.
const (
	dialRetryMin = 100 * time.Millisecond
	dialRetryMax = time.Second
)

// dialLoop connects to the front end's socket and serves each connection
// until Close, waiting between attempts: dialRetryMin after a session in
// which a ring ran, or after the first failure; the wait doubles up to
// dialRetryMax while dials fail or front ends hang up before starting a
// ring, so a missing or flapping front end costs at most one dial a
// second. Only the first failure of a series is logged at Info, the rest
// at Debug.
func (p *Port) dialLoop() {
	defer close(p.done)
	delay := time.Duration(0)
	failing := false
	for {
		if delay > 0 && !p.pause(delay) {
			return
		}
		if p.closed.Load() {
			return
		}
		c, err := dialUnix(p.path)
		if err != nil {
			if !failing {
				p.log.Info("vhost-user front end not reachable, retrying", "err", err)
				failing = true
			} else {
				p.log.Debug("vhost-user dial failed", "err", err)
			}
			delay = min(max(2*delay, dialRetryMin), dialRetryMax)
			continue
		}
		failing = false
		served, ran := p.session(c)
		if !served {
			return
		}
		if ran {
			delay = dialRetryMin
		} else {
			delay = min(max(2*delay, dialRetryMin), dialRetryMax)
		}
	}
}

// dialUnix connects a stream socket to path on the runtime's poller. A
// unix connect does not wait: a full backlog is a failed attempt.
func dialUnix(path string) (*net.UnixConn, error) {
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("vhost-user: %w", err)
	}
	return c, nil
}
