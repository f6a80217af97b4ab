package dist

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/fwbench/fwbench/recipe"
)

// Group is this process's membership of a data-parallel run. Step and
// Check must not be called concurrently (they are the group's lock-step);
// Lost, Err, Fail and Close may be called from any goroutine.
type Group struct {
	c       Config
	t       timing
	timeout time.Duration
	workers []string
	srv     *server // rank 0 only
	l       *link

	callMu sync.Mutex // one collective at a time
	seq    int64

	mu        sync.Mutex
	waitSeq   int64
	waitCh    chan msg
	closing   bool
	failed    bool // the group broke because this rank called Fail
	err       error
	lost      chan struct{}
	byeAck    chan struct{}
	byeOnce   sync.Once
	rdone     chan struct{}
	closed    chan struct{} // closed when Close starts: wakes a collective in flight
	closeOnce sync.Once
	closeErr  error
}

// Vals is one rank's part of a training step; Step returns the sums over
// the ranks (Loss summed in rank order, so every rank gets the same float)
// and Stop when any rank asked to stop.
type Vals struct {
	Loss            float64
	Correct, Images int
	Stop            bool
}

// Join connects this rank to the group. Rank 0 serves the rendezvous on
// exactly c.Master; every rank, rank 0 included, connects to it and sends
// its rank, world size, recipeHash and TensorFlow server address. Rank 0
// refuses a rank whose protocol version, world size, recipe hash or worker
// list differs from its own, or a rank that joined twice; then every rank's
// Join returns an error wrapping ErrMismatch that names the ranks and the
// values (hashes shortened to 12 characters). Ranks other than 0 retry
// dialing until the deadline, so rank 0 may start last.
//
// Join returns when all c.WorldSize ranks joined. It fails at ctx's end
// (wrapping ctx.Err()) or after c.Timeout (wrapping ErrTimeout, naming the
// ranks still missing as rank 0 last reported them); rank 0's Join fails
// with ErrPortBusy when c.Master is in use.
func Join(ctx context.Context, c Config, recipeHash string) (*Group, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if recipeHash == "" || len(recipeHash) > maxHashLen {
		return nil, fmt.Errorf("dist: %w: the recipe hash must have 1 to %d characters, not %d", ErrInvalid, maxHashLen, len(recipeHash))
	}
	t := c.t.withDefaults()
	timeout := c.timeout()
	deadline := time.Now().Add(timeout)
	var srv *server
	if c.Rank == 0 {
		var err error
		if srv, err = listen(c, recipeHash, t, timeout, deadline); err != nil {
			return nil, err
		}
	}
	// The ranks' own deadline comes two heartbeats after rank 0's, so that
	// rank 0's verdict (which names the missing ranks) arrives first.
	g, err := join(ctx, c, t, recipeHash, timeout, deadline.Add(2*t.heartbeat))
	if err != nil {
		if srv != nil {
			if errors.Is(err, ErrMismatch) {
				srv.linger(t.linger) // the ranks still connecting learn why
			}
			srv.shutdown()
		}
		return nil, err
	}
	g.srv = srv
	return g, nil
}

func join(ctx context.Context, c Config, t timing, hash string, timeout time.Duration, deadline time.Time) (*Group, error) {
	jctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	fail := func(what string, last error) error {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("dist: join: %w", err)
		}
		return fmt.Errorf("dist: join: %w: %s within %v: %v", ErrTimeout, what, timeout, last)
	}
	conn, err := dial(jctx, c.Master)
	if err != nil {
		return nil, fail(fmt.Sprintf("rank 0's rendezvous at %s was not reachable", c.Master), err)
	}
	l := newLink(conn, t)
	_, port, _ := splitHostPort(c.Master)
	addr := ""
	if c.Workers != nil {
		addr = c.Workers[c.Rank]
	} else {
		host, _, _ := net.SplitHostPort(conn.LocalAddr().String())
		addr = net.JoinHostPort(host, strconv.Itoa(port+2+c.Rank))
	}
	l.send(msg{T: tHello, Rank: c.Rank, WorldSize: c.WorldSize, Hash: hash, Addr: addr, Workers: c.Workers})
	stop := context.AfterFunc(jctx, l.abort)
	defer stop()
	var missing []int
	for {
		m, err := l.read()
		if err != nil {
			l.abort()
			l.wait()
			if jctx.Err() != nil {
				if missing == nil {
					return nil, fail("rank 0 did not answer", jctx.Err())
				}
				return nil, fail("the group was not complete", fmt.Errorf("rank 0 last reported %s %s missing", plural(len(missing)), rankList(missing)))
			}
			return nil, fmt.Errorf("dist: join: %w: rank 0 at %s: %s", ErrLost, c.Master, describe(err, t.lostAfter))
		}
		switch m.T {
		case tHB:
		case tWait:
			missing = m.Missing
		case tAbort:
			l.finish()
			l.wait()
			switch m.Code {
			case codeMismatch:
				return nil, fmt.Errorf("dist: join: %w: %s", ErrMismatch, m.Err)
			case codeTimeout:
				return nil, fmt.Errorf("dist: join: %w: %s", ErrTimeout, m.Err)
			default:
				return nil, fmt.Errorf("dist: join: %w: %s", ErrLost, m.Err)
			}
		case tWelcome:
			if !stop() { // jctx ended as the welcome came: l is closed
				l.wait()
				return nil, fail("the group was not complete", jctx.Err())
			}
			if len(m.Workers) != c.WorldSize {
				l.abort()
				l.wait()
				return nil, fmt.Errorf("dist: join: %w: rank 0 sent %d worker addresses for %d ranks", ErrMismatch, len(m.Workers), c.WorldSize)
			}
			g := &Group{c: c, t: t, timeout: timeout, workers: m.Workers, l: l,
				lost: make(chan struct{}), byeAck: make(chan struct{}), rdone: make(chan struct{}), closed: make(chan struct{})}
			go g.reader()
			return g, nil
		default:
			l.abort()
			l.wait()
			return nil, fmt.Errorf("dist: join: %w: rank 0 sent %q during the join", ErrLost, clip(m.T, 32))
		}
	}
}

// dial connects to addr, retrying until ctx ends.
func dial(ctx context.Context, addr string) (net.Conn, error) {
	var d net.Dialer
	wait := 50 * time.Millisecond
	for {
		c, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			return c, nil
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, err
		case <-t.C:
		}
		wait = min(2*wait, time.Second)
	}
}

// reader receives rank 0's messages until the connection ends.
func (g *Group) reader() {
	defer close(g.rdone)
	for {
		m, err := g.l.read()
		if err != nil {
			g.setLost(fmt.Errorf("dist: %w: the master (rank 0 at %s) is lost: %s", ErrLost, g.c.Master, describe(err, g.t.lostAfter)))
			return
		}
		switch m.T {
		case tHB, tWait:
		case tStep, tCheck:
			g.mu.Lock()
			if g.waitCh != nil && m.Seq == g.waitSeq {
				g.waitCh <- m
				g.waitCh = nil
			}
			g.mu.Unlock()
		case tLost:
			if m.Code == codeMismatch {
				g.setLost(fmt.Errorf("dist: %w: %w: %s", ErrLost, ErrMismatch, m.Err))
			} else {
				g.setLost(fmt.Errorf("dist: %w: %s", ErrLost, m.Err))
			}
		case tBye:
			g.byeOnce.Do(func() { close(g.byeAck) })
		default:
			g.setLost(fmt.Errorf("dist: %w: the master sent %q, which is not a message of a running group", ErrLost, clip(m.T, 32)))
		}
	}
}

// setLost breaks the group with err, unless it broke already or this rank
// is leaving in order.
func (g *Group) setLost(err error) {
	g.mu.Lock()
	if g.err != nil || g.closing {
		g.mu.Unlock()
		return
	}
	g.err = err
	close(g.lost)
	g.mu.Unlock()
	g.l.finish()
}

// Rank returns this process's rank.
func (g *Group) Rank() int { return g.c.Rank }

// LocalRank returns this process's rank on its machine.
func (g *Group) LocalRank() int { return g.c.LocalRank }

// WorldSize returns the number of ranks.
func (g *Group) WorldSize() int { return g.c.WorldSize }

// Parallel returns this rank's place for a framework driver: Rank,
// WorldSize, Store (HOST:PORT+1 of the master), Workers (the exchanged
// list: every rank's TensorFlow server address) and Timeout (the resolved
// collective timeout).
func (g *Group) Parallel() recipe.Parallel {
	return recipe.Parallel{
		Rank: g.c.Rank, WorldSize: g.c.WorldSize,
		Store:   storeAddr(g.c.Master),
		Workers: append([]string(nil), g.workers...),
		Timeout: g.timeout,
	}
}

// Lost is closed when the group broke: a rank's connection dropped or went
// silent for LostAfter, the master vanished, a rank failed (Fail), a rank
// left while others waited for it, or a collective passed the timeout. A
// rank that left with Close is not lost, and Lost never closes after this
// rank's own Close.
func (g *Group) Lost() <-chan struct{} { return g.lost }

// Err says why the group broke (wrapping ErrLost), or nil.
func (g *Group) Err() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.err
}

// FailedHere reports whether the group broke because this rank called Fail
// (its own error says why; the others' name this rank).
func (g *Group) FailedHere() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.failed
}

// Fail tells the group that this rank is failing, with a reason for the
// others' errors; every rank's Lost closes at once. It is a no-op on a
// broken or closed group.
func (g *Group) Fail(reason string) {
	g.mu.Lock()
	done := g.err != nil || g.closing
	g.failed = g.failed || !done
	g.mu.Unlock()
	if done {
		return
	}
	g.l.send(msg{T: tFail, Err: clip(reason, maxReasonLen)})
	g.setLost(fmt.Errorf("dist: %w: rank %d failed: %s", ErrLost, g.c.Rank, reason))
}

// Step is one training step's exchange: every rank sends v and gets the
// sums over the ranks. No rank's Step returns before every rank called it.
// It fails with Err() when the group breaks, and after the timeout. When
// ctx ends first, this rank gives up and, as the others cannot go on
// without it, fails the group: a loop that wants an orderly stop on an
// interrupt passes a ctx that the interrupt does not cancel and sets
// v.Stop instead.
func (g *Group) Step(ctx context.Context, v Vals) (Vals, error) {
	r, err := g.collective(ctx, msg{T: tStep, Vals: toWire(v)})
	if err != nil {
		return Vals{}, err
	}
	return fromWire(r.Vals), nil
}

// Check returns nil when every rank passed the same value under name (e.g.
// "weights" and the SHA-256 of the weights read back), else an error
// wrapping ErrMismatch naming the ranks that differ from rank 0 and their
// values. It is a collective, as Step: every rank must call it at the same
// point, with the same name.
func (g *Group) Check(ctx context.Context, name, value string) error {
	if len(name) > maxNameLen || len(value) > maxValueLen {
		return fmt.Errorf("dist: check: %w: name of %d bytes (at most %d) or value of %d bytes (at most %d)", ErrInvalid, len(name), maxNameLen, len(value), maxValueLen)
	}
	r, err := g.collective(ctx, msg{T: tCheck, Name: name, Value: value})
	if err != nil {
		return err
	}
	if r.Code == codeMismatch {
		return fmt.Errorf("dist: %w: %s", ErrMismatch, r.Err)
	}
	return nil
}

func (g *Group) collective(ctx context.Context, m msg) (msg, error) {
	g.callMu.Lock()
	defer g.callMu.Unlock()
	name := what(m.T, m.Name)
	g.mu.Lock()
	if g.closing {
		g.mu.Unlock()
		return msg{}, fmt.Errorf("dist: %s: %w", name, ErrClosed)
	}
	if g.err != nil {
		err := g.err
		g.mu.Unlock()
		return msg{}, err
	}
	g.seq++
	m.Seq = g.seq
	ch := make(chan msg, 1)
	g.waitSeq, g.waitCh = m.Seq, ch
	g.mu.Unlock()
	if !g.l.send(m) {
		g.setLost(fmt.Errorf("dist: %w: rank %d could not send %s #%d to the master", ErrLost, g.c.Rank, name, m.Seq))
		return msg{}, g.Err()
	}
	// Rank 0 ends a late collective after the timeout and names the missing
	// ranks; this timer only covers a master that says nothing.
	t := time.NewTimer(g.timeout + g.t.lostAfter)
	defer t.Stop()
	select {
	case r := <-ch:
		return r, nil
	case <-g.lost:
		select {
		case r := <-ch:
			return r, nil
		default:
		}
		return msg{}, g.Err()
	case <-g.closed:
		return msg{}, fmt.Errorf("dist: %s #%d: %w", name, m.Seq, ErrClosed)
	case <-ctx.Done():
		g.Fail(fmt.Sprintf("it gave up %s #%d: %v", name, m.Seq, ctx.Err()))
		return msg{}, fmt.Errorf("dist: %s #%d: %w", name, m.Seq, ctx.Err())
	case <-t.C:
		g.Fail(fmt.Sprintf("no answer to %s #%d within %v", name, m.Seq, g.timeout))
		return msg{}, g.Err()
	}
}

// Close leaves the group in order: the others do not see this rank as
// lost. Rank 0's Close then waits (at most CloseWait) for the other ranks
// to leave, and stops serving; its error names the ranks that did not
// leave. Close is idempotent; Step and Check fail with ErrClosed after it,
// and a Step or Check in flight returns ErrClosed.
func (g *Group) Close() error {
	g.closeOnce.Do(func() {
		g.mu.Lock()
		broken := g.err != nil
		g.closing = true
		g.mu.Unlock()
		close(g.closed)
		if !broken && g.l.send(msg{T: tBye}) {
			t := time.NewTimer(g.t.lostAfter)
			select {
			case <-g.byeAck:
			case <-g.rdone:
			case <-t.C:
			}
			t.Stop()
		}
		g.l.finish()
		g.l.wait()
		<-g.rdone
		if g.srv != nil {
			g.closeErr = g.srv.waitGone(g.t.closeWait)
			g.srv.shutdown()
		}
	})
	return g.closeErr
}
