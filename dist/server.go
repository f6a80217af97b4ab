package dist

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// server is rank 0's rendezvous and control service: it admits the ranks,
// runs the collectives (Step sums, Check comparisons) and tells every rank
// when the group broke.
type server struct {
	c        Config
	hash     string
	t        timing
	timeout  time.Duration
	deadline time.Time // of the join
	ln       net.Listener

	mu       sync.Mutex
	links    []*link // every accepted connection, refused ones included
	peers    []*peer // by rank; nil until that rank joined
	joined   int
	nGone    int // joined peers whose connection ended
	hellos   int // hello messages, refused ones included
	running  bool
	closing  bool
	failed   *msg // the abort or lost message every rank was sent
	cur      *coll
	done     int64 // the last completed collective
	leftRank int   // the first rank that left, -1 if none
	changed  chan struct{}

	quit     chan struct{}
	quitOnce sync.Once
	wg       sync.WaitGroup
}

type peer struct {
	rank         int
	l            *link
	remote, addr string
	left, gone   bool
}

// coll is one collective (a Step or a Check) being gathered.
type coll struct {
	seq        int64
	kind, name string
	firstRank  int
	first      time.Time
	got        []bool
	n          int
	vals       []Vals
	values     []string
}

func (c *coll) what() string { return what(c.kind, c.name) }

func what(kind, name string) string {
	if kind == tCheck {
		return fmt.Sprintf("check %q", name)
	}
	return kind
}

// listen starts serving the rendezvous on exactly c.Master.
func listen(c Config, hash string, t timing, timeout time.Duration, deadline time.Time) (*server, error) {
	ln, err := net.Listen("tcp", c.Master)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return nil, fmt.Errorf("dist: rendezvous: %w: %s (another run, or another program, listens there; pick another --master port)", ErrPortBusy, c.Master)
		}
		return nil, fmt.Errorf("dist: rendezvous: listen on %s: %w", c.Master, err)
	}
	s := &server{
		c: c, hash: hash, t: t, timeout: timeout, deadline: deadline, ln: ln,
		peers: make([]*peer, c.WorldSize), leftRank: -1,
		changed: make(chan struct{}, 1), quit: make(chan struct{}),
	}
	s.wg.Add(2)
	go s.accept()
	go s.tick()
	return s, nil
}

func (s *server) signal() {
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

func (s *server) accept() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			select {
			case <-s.quit:
				return
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(50 * time.Millisecond) // e.g. out of file descriptors: try again
			continue
		}
		s.wg.Add(1)
		go s.serve(c)
	}
}

// serve reads one connection: its hello, then, once admitted, its messages.
func (s *server) serve(c net.Conn) {
	defer s.wg.Done()
	l := newLink(c, s.t)
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		l.abort()
		return
	}
	s.links = append(s.links, l)
	s.mu.Unlock()
	m, err := l.read()
	if err != nil {
		l.finish() // not a rank (or a dead one): the join's deadline names missing ranks
		return
	}
	p := s.hello(l, m, c.RemoteAddr().String())
	if p == nil {
		return
	}
	for {
		m, err := l.read()
		if err != nil {
			s.gone(p, err)
			return
		}
		s.handle(p, m)
	}
}

// hello admits a rank or refuses it (nil).
func (s *server) hello(l *link, m msg, remote string) *peer {
	s.mu.Lock()
	defer s.mu.Unlock()
	refuse := func(code, why string) *peer {
		l.send(msg{T: tAbort, Code: code, Err: why})
		l.finish()
		return nil
	}
	if m.T != tHello {
		return refuse(codeMismatch, fmt.Sprintf("%s sent %q before hello: not an fwbench rank", remote, clip(m.T, 32)))
	}
	s.hellos++
	s.signal()
	n := s.c.WorldSize
	if s.failed != nil {
		l.send(*s.failed)
		l.finish()
		return nil
	}
	if s.running {
		return refuse(codeMismatch, fmt.Sprintf("rank %d (from %s) tried to join the group of %d, which is complete", m.Rank, remote, n))
	}
	var why string
	switch {
	case m.V != protoVersion:
		why = fmt.Sprintf("rank %d speaks protocol version %d, rank 0 speaks %d", m.Rank, m.V, protoVersion)
	case m.WorldSize != n:
		why = fmt.Sprintf("rank %d has world size %d, rank 0 has %d", m.Rank, m.WorldSize, n)
	case m.Rank < 0 || m.Rank >= n:
		why = fmt.Sprintf("rank %d is outside [0, %d)", m.Rank, n)
	case m.Hash != s.hash:
		why = fmt.Sprintf("rank %d's recipe hash %s differs from rank 0's %s", m.Rank, short(m.Hash), short(s.hash))
	case s.peers[m.Rank] != nil:
		why = fmt.Sprintf("rank %d joined twice (from %s and from %s)", m.Rank, s.peers[m.Rank].remote, remote)
	case len(m.Workers) > 0 && len(s.c.Workers) > 0 && !slices.Equal(m.Workers, s.c.Workers):
		why = fmt.Sprintf("rank %d's worker list %s differs from rank 0's %s", m.Rank, clip(strings.Join(m.Workers, ","), 200), clip(strings.Join(s.c.Workers, ","), 200))
	}
	if why == "" {
		if _, _, err := splitHostPort(m.Addr); err != nil {
			why = fmt.Sprintf("rank %d's TensorFlow address: %v", m.Rank, err)
		}
	}
	if why != "" {
		s.fail(msg{T: tAbort, Rank: m.Rank, Code: codeMismatch, Err: why}, l)
		return nil
	}
	p := &peer{rank: m.Rank, l: l, remote: remote, addr: m.Addr}
	s.peers[m.Rank] = p
	s.joined++
	if s.joined == n {
		s.running = true
		workers := make([]string, n)
		for r, q := range s.peers {
			workers[r] = q.addr
		}
		s.broadcast(msg{T: tWelcome, Workers: workers})
	}
	return p
}

// broadcast sends m to every rank still connected; a rank whose queue is
// full stopped reading and breaks the group.
func (s *server) broadcast(m msg) {
	stuck := -1
	for _, p := range s.peers {
		if p != nil && !p.gone && !p.left && !p.l.send(m) && stuck < 0 {
			stuck = p.rank
		}
	}
	if stuck >= 0 {
		s.fail(msg{T: tLost, Rank: stuck, Code: codeLost, Err: fmt.Sprintf("rank %d is lost: it stopped reading from rank 0", stuck)}, nil)
	}
}

// fail ends the join or the group: every rank still connected (and extra,
// when not nil) is sent m, then disconnected. Only the first call counts.
// s.mu is held.
func (s *server) fail(m msg, extra *link) {
	if s.failed != nil {
		return
	}
	s.failed = &m
	s.cur = nil
	for _, p := range s.peers {
		if p != nil && !p.gone && !p.left {
			p.l.send(m)
			p.l.finish()
		}
	}
	if extra != nil {
		extra.send(m)
		extra.finish()
	}
	s.signal()
}

// gone records that p's connection ended; unless p left or the group is
// already over, p is lost.
func (s *server) gone(p *peer, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p.gone = true
	s.nGone++
	s.signal()
	if p.left || s.failed != nil || s.closing {
		return
	}
	why := fmt.Sprintf("rank %d is lost: %s", p.rank, describe(err, s.t.lostAfter))
	if !s.running {
		s.fail(msg{T: tAbort, Rank: p.rank, Code: codeLost, Err: why + " (before every rank joined)"}, nil)
		return
	}
	s.fail(msg{T: tLost, Rank: p.rank, Code: codeLost, Err: why}, nil)
}

func (s *server) handle(p *peer, m msg) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failed != nil {
		return
	}
	lost := func(code, why string) { s.fail(msg{T: tLost, Rank: p.rank, Code: code, Err: why}, nil) }
	switch m.T {
	case tHB:
	case tStep, tCheck:
		s.contribute(p, m)
	case tFail:
		lost(codeLost, fmt.Sprintf("rank %d failed: %s", p.rank, clip(m.Err, maxReasonLen)))
	case tBye:
		p.left = true
		p.l.send(msg{T: tBye})
		p.l.finish()
		if s.leftRank < 0 {
			s.leftRank = p.rank
		}
		if c := s.cur; c != nil && !c.got[p.rank] {
			lost(codeLost, fmt.Sprintf("rank %d left the group while %s %s wait in %s #%d", p.rank, plural(c.n), rankList(c.ranks(true)), c.what(), c.seq))
		}
		s.signal()
	default:
		lost(codeLost, fmt.Sprintf("rank %d sent %q, which is not a message of a running group", p.rank, clip(m.T, 32)))
	}
}

// ranks lists the ranks that did (got) or did not contribute.
func (c *coll) ranks(got bool) []int {
	var rs []int
	for r, g := range c.got {
		if g == got {
			rs = append(rs, r)
		}
	}
	return rs
}

// contribute adds p's part of a collective; the last part sends every rank
// the result. s.mu is held.
func (s *server) contribute(p *peer, m msg) {
	lost := func(code, why string) { s.fail(msg{T: tLost, Rank: p.rank, Code: code, Err: why}, nil) }
	n := s.c.WorldSize
	if !s.running {
		lost(codeLost, fmt.Sprintf("rank %d sent %s before every rank joined", p.rank, m.T))
		return
	}
	if s.leftRank >= 0 {
		lost(codeLost, fmt.Sprintf("rank %d called %s #%d after rank %d left the group", p.rank, what(m.T, m.Name), m.Seq, s.leftRank))
		return
	}
	if m.Seq != s.done+1 {
		lost(codeLost, fmt.Sprintf("rank %d sent collective #%d while the group is at #%d", p.rank, m.Seq, s.done+1))
		return
	}
	c := s.cur
	if c == nil {
		c = &coll{seq: m.Seq, kind: m.T, name: m.Name, firstRank: p.rank, first: time.Now(),
			got: make([]bool, n), vals: make([]Vals, n), values: make([]string, n)}
		s.cur = c
	}
	if c.kind != m.T || c.name != m.Name {
		lost(codeMismatch, fmt.Sprintf("collective #%d: rank %d called %s where rank %d called %s", c.seq, p.rank, what(m.T, m.Name), c.firstRank, c.what()))
		return
	}
	if c.got[p.rank] {
		lost(codeLost, fmt.Sprintf("rank %d sent %s #%d twice", p.rank, c.what(), c.seq))
		return
	}
	c.got[p.rank] = true
	c.n++
	c.vals[p.rank] = fromWire(m.Vals)
	c.values[p.rank] = m.Value
	if c.n < n {
		return
	}
	s.cur = nil
	s.done = c.seq
	res := msg{T: c.kind, Seq: c.seq, Name: c.name}
	switch c.kind {
	case tStep:
		var sum Vals
		for _, v := range c.vals { // in rank order: every rank gets the same float sum
			sum.Loss += v.Loss
			sum.Correct += v.Correct
			sum.Images += v.Images
			sum.Stop = sum.Stop || v.Stop
		}
		res.Vals = toWire(sum)
	case tCheck:
		var diff []string
		for r := 1; r < n; r++ {
			if c.values[r] != c.values[0] {
				diff = append(diff, fmt.Sprintf("rank %d has %s", r, clip(c.values[r], 64)))
			}
		}
		if diff != nil {
			res.Code = codeMismatch
			res.Err = fmt.Sprintf("check %q: %s; rank 0 has %s", c.name, strings.Join(diff, ", "), clip(c.values[0], 64))
		}
	}
	s.broadcast(res)
}

// tick sends the join's progress, and ends a join or a collective that
// passed its deadline.
func (s *server) tick() {
	defer s.wg.Done()
	tk := time.NewTicker(s.t.heartbeat)
	defer tk.Stop()
	for {
		select {
		case <-s.quit:
			return
		case now := <-tk.C:
			s.check(now)
		}
	}
}

func (s *server) check(now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failed != nil || s.closing {
		return
	}
	if !s.running {
		var missing []int
		for r, p := range s.peers {
			if p == nil {
				missing = append(missing, r)
			}
		}
		if now.After(s.deadline) {
			s.fail(msg{T: tAbort, Rank: missing[0], Code: codeTimeout, Missing: missing,
				Err: fmt.Sprintf("%s %s did not join within %v", plural(len(missing)), rankList(missing), s.timeout)}, nil)
			return
		}
		s.broadcast(msg{T: tWait, Missing: missing})
		return
	}
	if c := s.cur; c != nil && now.Sub(c.first) > s.timeout {
		missing := c.ranks(false)
		s.fail(msg{T: tLost, Rank: missing[0], Code: codeTimeout, Missing: missing,
			Err: fmt.Sprintf("%s #%d: %s %s did not arrive within %v", c.what(), c.seq, plural(len(missing)), rankList(missing), s.timeout)}, nil)
	}
}

// linger keeps serving (refusing) until every rank said hello or d passed.
func (s *server) linger(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		s.mu.Lock()
		done := s.hellos >= s.c.WorldSize
		s.mu.Unlock()
		if done {
			return
		}
		select {
		case <-s.changed:
		case <-t.C:
			return
		}
	}
}

// waitGone waits until every rank's connection ended or d passed; the error
// names the ranks still connected.
func (s *server) waitGone(d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		s.mu.Lock()
		var left []int
		for _, p := range s.peers {
			if p != nil && !p.gone {
				left = append(left, p.rank)
			}
		}
		s.mu.Unlock()
		if left == nil {
			return nil
		}
		select {
		case <-s.changed:
		case <-t.C:
			return fmt.Errorf("dist: close: %s %s did not leave within %v", plural(len(left)), rankList(left), d)
		}
	}
}

// shutdown stops serving: the listener closes, every connection sends what
// was queued and closes, and every goroutine returns.
func (s *server) shutdown() { s.stop(false) }

// kill stops serving at once, telling no one (tests: the master vanishes).
func (s *server) kill() { s.stop(true) }

func (s *server) stop(abort bool) {
	s.quitOnce.Do(func() { close(s.quit) })
	s.ln.Close()
	s.mu.Lock()
	s.closing = true
	links := s.links
	s.mu.Unlock()
	for _, l := range links {
		if abort {
			l.abort()
		} else {
			l.finish()
		}
	}
	for _, l := range links {
		l.wait()
	}
	s.wg.Wait()
}
