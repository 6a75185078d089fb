package vhostuser

import (
	"fmt"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// fileID identifies a file: its device and inode numbers.
type fileID struct{ dev, ino uint64 }

// statID returns the identity of the file at path (not following a
// symlink).
func statID(path string) (fileID, error) {
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		return fileID{}, err
	}
	return fileID{st.Dev, st.Ino}, nil
}

// listenUnix creates a listening socket at path (backlog 1: one front
// end at a time) on the runtime's poller and returns it with the
// identity of the socket file it bound. A socket already at path is
// replaced only if nobody listens on it (a stale socket of an earlier
// run); one that something listens on, such as a VM's QEMU in client
// mode on its side or another daemon, is left alone and Listen fails.
// The listener never removes path itself.
func listenUnix(path string) (*net.UnixListener, fileID, error) {
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
		live, err := listening(path)
		if err != nil {
			return nil, fileID{}, err
		}
		if live {
			return nil, fileID{}, fmt.Errorf("vhost-user %s: a socket exists there and something listens on it (a VM's QEMU in client mode, or another daemon); not replacing it", path)
		}
		if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
			return nil, fileID{}, fmt.Errorf("vhost-user %s: remove stale socket: %w", path, err)
		}
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return nil, fileID{}, fmt.Errorf("vhost-user %s: socket: %w", path, err)
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		return nil, fileID{}, fmt.Errorf("vhost-user %s: bind: %w", path, err)
	}
	// The bound socket holds the file's inode until it is closed, so the
	// identity cannot be reused by another file while the port lives.
	id, err := statID(path)
	if err != nil {
		os.Remove(path)
		return nil, fileID{}, fmt.Errorf("vhost-user %s: stat: %w", path, err)
	}
	if err := unix.Listen(fd, 1); err != nil {
		os.Remove(path)
		return nil, fileID{}, fmt.Errorf("vhost-user %s: listen: %w", path, err)
	}
	l, err := net.FileListener(f)
	if err != nil {
		os.Remove(path)
		return nil, fileID{}, fmt.Errorf("vhost-user %s: listener: %w", path, err)
	}
	ln := l.(*net.UnixListener)
	ln.SetUnlinkOnClose(false)
	return ln, id, nil
}

// listening reports whether something accepts connections on the
// socket at path: it connects without waiting (a full backlog counts as
// listening) and hangs up at once.
func listening(path string) (bool, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return false, fmt.Errorf("vhost-user %s: socket: %w", path, err)
	}
	defer unix.Close(fd)
	switch err := unix.Connect(fd, &unix.SockaddrUnix{Name: path}); err {
	case nil, unix.EAGAIN:
		return true, nil
	case unix.ECONNREFUSED, unix.ENOENT:
		return false, nil
	default:
		return false, fmt.Errorf("vhost-user %s: probe the existing socket: %w", path, err)
	}
}

// removeSocket removes the port's socket file if path still names the
// socket the port bound: a path that another process has since taken
// over (its own socket after ours was removed) is left alone. It runs
// while the listener is open, so the inode cannot have been reused.
func (p *Port) removeSocket() {
	id, err := statID(p.path)
	if err != nil {
		return
	}
	if id != p.sockID {
		p.log.Info("vhost-user socket path now names another file; leaving it")
		return
	}
	if err := os.Remove(p.path); err != nil && !os.IsNotExist(err) {
		p.log.Warn("vhost-user socket not removed", "err", err)
	}
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
