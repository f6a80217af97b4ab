package dist

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"strconv"
	"sync"
	"time"
)

// protoVersion is every message's "v"; ranks of another version are refused.
const protoVersion = 1

// Bounds on what a peer may send.
const (
	maxMsgSize   = 1 << 20 // one JSON line, the worker list of MaxWorldSize long host names included
	maxHashLen   = 256
	maxNameLen   = 256
	maxValueLen  = 4096
	maxReasonLen = 4096
	queueLen     = 256 // messages waiting for one connection's writer; a fuller queue is a peer that stopped reading
)

// Message types.
const (
	tHello   = "hello"   // rank → master: join
	tWait    = "wait"    // master → rank, during the join: the ranks still missing
	tWelcome = "welcome" // master → rank: every rank joined; Workers
	tAbort   = "abort"   // master → rank: the join failed (Code, Err)
	tHB      = "hb"      // both ways: nothing to say
	tStep    = "step"    // rank → master: a Step's values; master → rank: the sums
	tCheck   = "check"   // rank → master: a Check's value; master → rank: the verdict
	tFail    = "fail"    // rank → master: this rank is failing (Err)
	tLost    = "lost"    // master → rank: the group broke (Rank, Code, Err)
	tBye     = "bye"     // rank → master: leaving in order; master → rank: acknowledged
)

// Codes of abort and lost messages and of a Check's verdict.
const (
	codeMismatch = "mismatch"
	codeTimeout  = "timeout"
	codeLost     = "lost"
)

// msg is one line of the protocol (JSON). Unused fields are omitted.
type msg struct {
	V         int       `json:"v"`
	T         string    `json:"t"`
	Rank      int       `json:"rank"`
	WorldSize int       `json:"world_size,omitempty"`
	Hash      string    `json:"hash,omitempty"`
	Addr      string    `json:"addr,omitempty"`
	Workers   []string  `json:"workers,omitempty"`
	Seq       int64     `json:"seq,omitempty"`
	Name      string    `json:"name,omitempty"`
	Value     string    `json:"value,omitempty"`
	Vals      *wireVals `json:"vals,omitempty"`
	Code      string    `json:"code,omitempty"`
	Err       string    `json:"err,omitempty"`
	Missing   []int     `json:"missing,omitempty"`
}

// wireVals is Vals on the wire: a loss that is NaN or infinite travels as a
// string, which plain JSON numbers cannot carry.
type wireVals struct {
	Loss    wireFloat `json:"loss"`
	Correct int       `json:"correct"`
	Images  int       `json:"images"`
	Stop    bool      `json:"stop,omitempty"`
}

type wireFloat float64

func (f wireFloat) MarshalJSON() ([]byte, error) {
	v := float64(f)
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return []byte(`"` + strconv.FormatFloat(v, 'g', -1, 64) + `"`), nil
	}
	return strconv.AppendFloat(nil, v, 'g', -1, 64), nil
}

func (f *wireFloat) UnmarshalJSON(b []byte) error {
	s := string(b)
	if len(s) >= 2 && s[0] == '"' {
		s = s[1 : len(s)-1]
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return fmt.Errorf("loss %s is not a number", b)
	}
	*f = wireFloat(v)
	return nil
}

func toWire(v Vals) *wireVals {
	return &wireVals{Loss: wireFloat(v.Loss), Correct: v.Correct, Images: v.Images, Stop: v.Stop}
}

func fromWire(w *wireVals) Vals {
	if w == nil {
		return Vals{}
	}
	return Vals{Loss: float64(w.Loss), Correct: w.Correct, Images: w.Images, Stop: w.Stop}
}

// link is one connection of the protocol: a writer goroutine that sends the
// queued messages and a heartbeat, each under a write deadline, and read,
// which fails when the peer said nothing for lostAfter.
type link struct {
	c        net.Conn
	sc       *bufio.Scanner
	out      chan msg
	stop     chan struct{} // closed by finish or abort
	stopOnce sync.Once
	wdone    chan struct{} // closed when the writer returned (and closed c)
	t        timing
}

// newLink starts c's writer; the caller must end it with finish or abort.
func newLink(c net.Conn, t timing) *link {
	sc := bufio.NewScanner(c)
	sc.Buffer(make([]byte, 0, 4096), maxMsgSize)
	l := &link{c: c, sc: sc, out: make(chan msg, queueLen), stop: make(chan struct{}), wdone: make(chan struct{}), t: t}
	go l.writer()
	return l
}

func (l *link) writer() {
	defer close(l.wdone)
	defer l.c.Close()
	tick := time.NewTicker(l.t.heartbeat)
	defer tick.Stop()
	for {
		select {
		case m := <-l.out:
			if l.write(m) != nil {
				return
			}
		case <-tick.C:
			if l.write(msg{T: tHB}) != nil {
				return
			}
		case <-l.stop:
			for { // flush what was queued before finish
				select {
				case m := <-l.out:
					if l.write(m) != nil {
						return
					}
				default:
					return
				}
			}
		}
	}
}

func (l *link) write(m msg) error {
	m.V = protoVersion
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	if len(b) >= maxMsgSize {
		return fmt.Errorf("message of %d bytes is above %d", len(b), maxMsgSize)
	}
	l.c.SetWriteDeadline(time.Now().Add(l.t.lostAfter))
	_, err = l.c.Write(append(b, '\n'))
	return err
}

// send queues m; false when the link is finishing or the peer stopped
// reading (its queue is full).
func (l *link) send(m msg) bool {
	select {
	case <-l.stop:
		return false
	default:
	}
	select {
	case l.out <- m:
		return true
	default:
		return false
	}
}

// read returns the next message; it fails when nothing came for lostAfter.
func (l *link) read() (msg, error) {
	l.c.SetReadDeadline(time.Now().Add(l.t.lostAfter))
	if !l.sc.Scan() {
		err := l.sc.Err()
		if err == nil {
			err = io.EOF
		}
		return msg{}, err
	}
	var m msg
	if err := json.Unmarshal(l.sc.Bytes(), &m); err != nil {
		return msg{}, fmt.Errorf("malformed message: %v", err)
	}
	return m, nil
}

// finish sends what is queued, then closes the connection.
func (l *link) finish() { l.stopOnce.Do(func() { close(l.stop) }) }

// abort closes the connection now.
func (l *link) abort() {
	l.finish()
	l.c.Close()
}

// wait waits for the writer to return (bounded by one write deadline).
func (l *link) wait() { <-l.wdone }

// describe says why a read failed, for the messages about lost ranks.
func describe(err error, silence time.Duration) string {
	switch {
	case errors.Is(err, io.EOF):
		return "the connection closed without an orderly leave"
	case errors.Is(err, os.ErrDeadlineExceeded):
		return fmt.Sprintf("nothing came for %v", silence)
	case errors.Is(err, bufio.ErrTooLong):
		return fmt.Sprintf("a message was above %d bytes", maxMsgSize)
	default:
		return err.Error()
	}
}

// short shortens a hash for messages.
func short(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	return h
}

// clip bounds a peer-supplied text.
func clip(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// rankList writes ranks as "2, 5".
func rankList(rs []int) string {
	b := make([]byte, 0, 4*len(rs))
	for i, r := range rs {
		if i > 0 {
			b = append(b, ", "...)
		}
		b = strconv.AppendInt(b, int64(r), 10)
	}
	return string(b)
}

// plural returns "rank" or "ranks".
func plural(n int) string {
	if n == 1 {
		return "rank"
	}
	return "ranks"
}
