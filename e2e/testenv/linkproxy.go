// serve-link: the TCP proxy of one link, between clients and its cluster's API server. It forwards bytes
// both ways and can blackhole them (cut), refuse connections (reset) or delay them; its control listener switches
// the mode and answers only once the new mode is in force.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"
)

const (
	modeNormal = "normal"
	modeCut    = "cut"
	modeReset  = "reset"
)

// linkState is what the control listener reports.
type linkState struct {
	Mode    string `json:"mode"`
	DelayMs int    `json:"delayMs"`
	Conns   int    `json:"conns"`
}

// proxy is one link. One mutex guards everything; the cond wakes writers held by a cut and the control
// listener waiting for in-flight writes to finish.
type proxy struct {
	addr, upstream string

	mu       sync.Mutex
	cond     *sync.Cond
	mode     string
	delay    time.Duration // added round-trip time; each direction waits half of it
	listener net.Listener  // nil while reset
	conns    map[*proxied]struct{}
	inflight int // writes that passed the gate and have not returned yet
}

// proxied is one client connection and, once dialled, its upstream connection.
type proxied struct {
	client, upstream net.Conn
	done             chan struct{} // closed when the pair is torn down
	closed           bool
}

// chunk is what one read returned, stamped with when it was read, for the delay.
type chunk struct {
	buf *[]byte
	n   int
	err error
	at  time.Time
}

var chunkPool = sync.Pool{New: func() any { b := make([]byte, 32*1024); return &b }}

func serveLink(dir, name string) error {
	env, err := load(dir)
	if err != nil {
		return err
	}
	info, err := env.readLink(name)
	if err != nil {
		return err
	}
	ports, err := env.ports(info.target())
	if err != nil {
		return err
	}
	p := &proxy{
		addr:     fmt.Sprintf("127.0.0.1:%d", info.Port),
		upstream: fmt.Sprintf("127.0.0.1:%d", ports.APIServer),
		mode:     modeNormal,
		conns:    map[*proxied]struct{}{},
	}
	p.cond = sync.NewCond(&p.mu)
	control, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", info.ControlPort))
	if err != nil {
		return fmt.Errorf("control listener: %w", err)
	}
	p.mu.Lock()
	err = p.listen()
	p.mu.Unlock()
	if err != nil {
		return err
	}
	fmt.Printf("link %s: %s -> %s, control on %s\n", name, p.addr, p.upstream, control.Addr())
	for {
		c, err := control.Accept()
		if err != nil {
			return err
		}
		go p.serveControl(c)
	}
}

// listen opens the client listener and accepts on it until it is closed. Called with mu held.
func (p *proxy) listen() error {
	l, err := net.Listen("tcp", p.addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", p.addr, err)
	}
	p.listener = l
	go func() {
		for {
			c, err := l.Accept()
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if err != nil {
				time.Sleep(10 * time.Millisecond) // e.g. out of file descriptors: try again
				continue
			}
			go p.handle(c)
		}
	}()
	return nil
}

// serveControl answers one command line with the state after it took effect, as one JSON line.
func (p *proxy) serveControl(c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return
	}
	fields := strings.Fields(line)
	reply := struct {
		State *linkState `json:"state,omitempty"`
		Error string     `json:"error,omitempty"`
	}{}
	if len(fields) == 0 {
		fields = []string{"status"}
	}
	switch {
	case fields[0] == "status":
	case fields[0] == "delay" && len(fields) == 2:
		ms, cerr := strconv.Atoi(fields[1])
		if cerr != nil || ms < 0 {
			err = fmt.Errorf("delay wants milliseconds >= 0, not %q", fields[1])
			break
		}
		p.mu.Lock()
		p.delay = time.Duration(ms) * time.Millisecond
		p.cond.Broadcast()
		p.mu.Unlock()
	case fields[0] == modeNormal || fields[0] == modeCut || fields[0] == modeReset:
		err = p.setMode(fields[0])
	default:
		err = fmt.Errorf("unknown command %q", strings.TrimSpace(line))
	}
	if err != nil {
		reply.Error = err.Error()
	} else {
		state := p.state()
		reply.State = &state
	}
	raw, _ := json.Marshal(reply)
	_, _ = c.Write(append(raw, '\n'))
}

func (p *proxy) state() linkState {
	p.mu.Lock()
	defer p.mu.Unlock()
	return linkState{Mode: p.mode, DelayMs: int(p.delay / time.Millisecond), Conns: len(p.conns)}
}

// setMode switches the mode and returns once it is in force: after a cut, every write that had passed the gate
// has returned and no other byte is forwarded; after a reset, the listener and every connection are closed.
func (p *proxy) setMode(mode string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if mode == modeReset {
		if p.listener != nil {
			_ = p.listener.Close() // new connections are refused by the kernel from here on
			p.listener = nil
		}
		for pc := range p.conns {
			p.teardown(pc, true)
		}
	} else if p.listener == nil {
		if err := p.listen(); err != nil {
			return err
		}
	}
	p.mode = mode
	p.cond.Broadcast()
	if mode == modeNormal {
		return nil
	}
	// A write to a peer that does not read could block for ever; do not wait for it longer than this.
	timedOut := false
	timer := time.AfterFunc(5*time.Second, func() {
		p.mu.Lock()
		timedOut = true
		p.cond.Broadcast()
		p.mu.Unlock()
	})
	defer timer.Stop()
	for p.inflight > 0 && !timedOut {
		p.cond.Wait()
	}
	if timedOut {
		return fmt.Errorf("%d writes still blocked 5s after %s", p.inflight, mode)
	}
	return nil
}

// teardown closes both connections of a pair; abort sends a reset instead of a FIN. Called with mu held.
func (p *proxy) teardown(pc *proxied, abort bool) {
	if pc.closed {
		return
	}
	pc.closed = true
	close(pc.done)
	for _, c := range []net.Conn{pc.client, pc.upstream} {
		if c == nil {
			continue
		}
		if tcp, ok := c.(*net.TCPConn); ok && abort {
			_ = tcp.SetLinger(0)
		}
		_ = c.Close()
	}
	delete(p.conns, pc)
	p.cond.Broadcast()
}

// handle forwards one client connection. Accepted during a cut, it hangs (not even dialling upstream) until
// the cut ends; accepted just before a reset took effect, it is reset at once.
func (p *proxy) handle(client net.Conn) {
	pc := &proxied{client: client, done: make(chan struct{})}
	p.mu.Lock()
	p.conns[pc] = struct{}{}
	if p.mode == modeReset {
		p.teardown(pc, true)
	}
	for p.mode == modeCut && !pc.closed {
		p.cond.Wait()
	}
	if pc.closed {
		p.mu.Unlock()
		return
	}
	p.mu.Unlock()

	upstream, err := net.DialTimeout("tcp", p.upstream, 10*time.Second)
	p.mu.Lock()
	if err != nil || pc.closed {
		if upstream != nil {
			_ = upstream.Close()
		}
		// The control plane is down: the client sees its connection reset, as it would without the link.
		p.teardown(pc, true)
		p.mu.Unlock()
		return
	}
	pc.upstream = upstream
	p.mu.Unlock()

	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); p.pipe(pc, upstream, client) }()
	go func() { defer wg.Done(); p.pipe(pc, client, upstream) }()
	wg.Wait()
	p.mu.Lock()
	p.teardown(pc, false)
	p.mu.Unlock()
}

// pipe copies src to dst through a delay line: a reader stamps each chunk, the writer sends it once the delay
// has passed and the link is not cut. A clean EOF half-closes dst; any error tears the pair down.
func (p *proxy) pipe(pc *proxied, dst, src net.Conn) {
	chunks := make(chan chunk, 64)
	go func() {
		for {
			buf := chunkPool.Get().(*[]byte)
			n, err := src.Read(*buf)
			c := chunk{buf: buf, n: n, err: err, at: time.Now()}
			select {
			case chunks <- c:
			case <-pc.done:
				chunkPool.Put(buf)
				return
			}
			if err != nil {
				return
			}
		}
	}()
	for c := range chunks {
		if !p.pass(pc, c.at) {
			chunkPool.Put(c.buf)
			return
		}
		var err error
		if c.n > 0 {
			_, err = dst.Write((*c.buf)[:c.n])
		}
		chunkPool.Put(c.buf)
		if err == nil && c.err != nil {
			err = c.err
		}
		p.mu.Lock()
		p.inflight--
		p.cond.Broadcast()
		if errors.Is(err, io.EOF) {
			if tcp, ok := dst.(*net.TCPConn); ok {
				_ = tcp.CloseWrite()
			}
		} else if err != nil {
			p.teardown(pc, false)
		}
		p.mu.Unlock()
		if err != nil {
			return
		}
	}
}

// pass waits until a chunk read at `at` may be written: its half of the delay has passed and the link is not
// cut. It counts the write as in flight; false means the pair was torn down meanwhile.
func (p *proxy) pass(pc *proxied, at time.Time) bool {
	p.mu.Lock()
	for {
		for p.mode == modeCut && !pc.closed {
			p.cond.Wait()
		}
		if pc.closed {
			p.mu.Unlock()
			return false
		}
		wait := time.Until(at.Add(p.delay / 2))
		if wait <= 0 {
			p.inflight++
			p.mu.Unlock()
			return true
		}
		p.mu.Unlock()
		timer := time.NewTimer(wait)
		select {
		case <-timer.C:
		case <-pc.done:
			timer.Stop()
		}
		p.mu.Lock()
	}
}
