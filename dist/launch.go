package dist

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// DefaultGrace is LaunchOptions.Grace when zero: long enough for rank 0 to
// finish its step and write a checkpoint after an interrupt.
const DefaultGrace = 30 * time.Second

// LaunchOptions describes N local ranks of one command.
type LaunchOptions struct {
	N int
	// Args is every rank's argv; Args[0] is the executable.
	Args []string
	// Env is the base environment (normally os.Environ()). Launch replaces
	// RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR (127.0.0.1) and MASTER_PORT.
	Env []string
	// Port is the master port to use; zero picks a free port P such that
	// P..P+N+1 (the rendezvous, the store, the TensorFlow servers) are all
	// free on 127.0.0.1, checked by binding them.
	Port int
	// Rank 0's output passes through unchanged; every other rank's lines
	// get a "rank r: " prefix. Nil discards.
	Stdout, Stderr io.Writer
	// Grace is how long the other ranks get to exit after the first rank
	// failed or ctx ended, before SIGKILL (DefaultGrace when zero).
	Grace time.Duration
}

// RankError is Launch's error when a rank failed: the first rank that
// exited non-zero (or was killed by a signal), and its exit status (128+n
// for signal n, as a shell reports it).
type RankError struct {
	Rank, Code int
	Signal     syscall.Signal // 0 when the rank exited
}

func (e *RankError) Error() string {
	if e.Signal != 0 {
		return fmt.Sprintf("rank %d was killed by signal %d (%v)", e.Rank, int(e.Signal), e.Signal)
	}
	return fmt.Sprintf("rank %d exited with status %d", e.Rank, e.Code)
}

// ExitCode is the status the launcher should exit with.
func (e *RankError) ExitCode() int { return e.Code }

// portTries bounds the search for a free run of ports.
const portTries = 64

// Launch runs o.N local ranks of one command and waits for them. Every rank
// runs in its own process group and is killed if the launcher dies. When
// ctx ends (the CLI cancels it on Ctrl-C or SIGTERM) every rank gets one
// SIGINT, then SIGKILL after Grace. When a rank fails, the others are
// expected to stop on their own (their Group is lost) and are killed after
// Grace. Launch returns nil when every rank exited 0; otherwise an error
// holding a *RankError for the first rank that failed (and ctx's error
// when it ended). Port problems wrap ErrPortBusy, bad options ErrInvalid.
func Launch(ctx context.Context, o LaunchOptions) error {
	switch {
	case o.N < 1 || o.N > MaxWorldSize:
		return fmt.Errorf("dist: launch: %w: %d ranks is outside [1, %d]", ErrInvalid, o.N, MaxWorldSize)
	case len(o.Args) == 0 || o.Args[0] == "":
		return fmt.Errorf("dist: launch: %w: no command", ErrInvalid)
	case o.Grace < 0:
		return fmt.Errorf("dist: launch: %w: grace %v is negative", ErrInvalid, o.Grace)
	case o.Port < 0 || o.Port+o.N+1 > 65535:
		return fmt.Errorf("dist: launch: %w: port %d leaves no room for %d ports", ErrInvalid, o.Port, o.N+2)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("dist: launch: %w", err)
	}
	grace := o.Grace
	if grace == 0 {
		grace = DefaultGrace
	}
	port, err := freePorts(o.Port, o.N+2)
	if err != nil {
		return err
	}

	var outMu sync.Mutex // every write to o.Stdout and o.Stderr
	type exit struct {
		r   int
		err error
	}
	ranks := make([]*launched, o.N)
	exits := make(chan exit, o.N)
	started := make(chan error)
	base := withoutVars(o.Env, "RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
	var startErr error
	for r := range o.N {
		cmd := exec.Command(o.Args[0], o.Args[1:]...)
		cmd.Env = append(append([]string(nil), base...),
			"RANK="+strconv.Itoa(r), "LOCAL_RANK="+strconv.Itoa(r), "WORLD_SIZE="+strconv.Itoa(o.N),
			"MASTER_ADDR=127.0.0.1", "MASTER_PORT="+strconv.Itoa(port))
		cmd.SysProcAttr = sysProcAttr()
		cmd.WaitDelay = grace // a grandchild holding the output pipes open cannot block Wait
		rk := &launched{cmd: cmd}
		cmd.Stdout = rk.output(o.Stdout, r, &outMu)
		cmd.Stderr = rk.output(o.Stderr, r, &outMu)
		ranks[r] = rk
		go func() {
			// Pdeathsig fires when the thread that started the child ends:
			// keep this goroutine on its thread until the child exited.
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			if err := cmd.Start(); err != nil {
				started <- err
				return
			}
			started <- nil
			exits <- exit{r, cmd.Wait()}
		}()
		if err := <-started; err != nil {
			startErr = fmt.Errorf("dist: launch: rank %d: %w", r, err)
			break
		}
		rk.running = true
	}

	signalAll := func(sig syscall.Signal) {
		for _, rk := range ranks {
			if rk != nil && rk.running {
				syscall.Kill(-rk.cmd.Process.Pid, sig) // the rank's process group
			}
		}
	}
	running := 0
	for _, rk := range ranks {
		if rk != nil && rk.running {
			running++
		}
	}
	var first *RankError
	var graceC <-chan time.Time
	startGrace := func() {
		if graceC == nil {
			graceC = time.After(grace)
		}
	}
	if startErr != nil {
		signalAll(syscall.SIGKILL)
	}
	done := ctx.Done()
	for running > 0 {
		select {
		case e := <-exits:
			running--
			rk := ranks[e.r]
			rk.running = false
			for _, w := range rk.flush {
				w.flush()
			}
			if re := rankError(e.r, e.err); re != nil && first == nil {
				first = re
				startGrace()
			}
		case <-done:
			done = nil
			signalAll(syscall.SIGINT)
			startGrace()
		case <-graceC:
			signalAll(syscall.SIGKILL)
		}
	}
	switch {
	case startErr != nil:
		return startErr
	case first == nil:
		return nil
	case ctx.Err() != nil:
		return fmt.Errorf("dist: launch: interrupted (%w): %w", ctx.Err(), first)
	default:
		return fmt.Errorf("dist: launch: %w", first)
	}
}

// launched is one rank's process.
type launched struct {
	cmd     *exec.Cmd
	flush   []*lineWriter // its prefixed outputs, flushed when it exited
	running bool
}

// output returns rank r's writer for dst: dst itself for rank 0 when it is
// a file (a terminal keeps its behaviour), else a writer that serialises
// with the other ranks' and, for r > 0, prefixes every line.
func (rk *launched) output(dst io.Writer, r int, mu *sync.Mutex) io.Writer {
	if dst == nil {
		return nil
	}
	if _, ok := dst.(*os.File); ok && r == 0 {
		return dst
	}
	if r == 0 {
		return &lockedWriter{mu: mu, w: dst}
	}
	w := &lineWriter{mu: mu, w: dst, prefix: []byte("rank " + strconv.Itoa(r) + ": ")}
	rk.flush = append(rk.flush, w)
	return w
}

// rankError turns Wait's error into a RankError (nil for a clean exit).
func rankError(r int, err error) *RankError {
	if err == nil || errors.Is(err, exec.ErrWaitDelay) { // exited 0, a child of its own kept the output open
		return nil
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return &RankError{Rank: r, Code: 128 + int(ws.Signal()), Signal: ws.Signal()}
		}
		if c := ee.ExitCode(); c != 0 {
			return &RankError{Rank: r, Code: c}
		}
		return nil
	}
	return &RankError{Rank: r, Code: 1}
}

// withoutVars returns env without the variables named.
func withoutVars(env []string, names ...string) []string {
	out := make([]string, 0, len(env))
	for _, kv := range env {
		name, _, _ := strings.Cut(kv, "=")
		keep := true
		for _, n := range names {
			if name == n {
				keep = false
			}
		}
		if keep {
			out = append(out, kv)
		}
	}
	return out
}

// freePorts returns fixed, or a random port P, such that P..P+n-1 can all
// be bound on 127.0.0.1. Random ports come from below Linux's ephemeral
// range (32768), so that no outgoing connection takes one before the ranks
// bind it.
func freePorts(fixed, n int) (int, error) {
	if fixed != 0 {
		if err := probe(fixed, n); err != nil {
			return 0, fmt.Errorf("dist: launch: %w: %v", ErrPortBusy, err)
		}
		return fixed, nil
	}
	const lo, hi = 20000, 32768
	var last error
	for range portTries {
		p := lo + rand.IntN(max(hi-lo-n, 1))
		if p+n-1 > 65535 {
			continue
		}
		if last = probe(p, n); last == nil {
			return p, nil
		}
	}
	return 0, fmt.Errorf("dist: launch: %w: no %d consecutive free ports on 127.0.0.1 in %d tries (last: %v)", ErrPortBusy, n, portTries, last)
}

// probe binds 127.0.0.1:p..p+n-1 and releases them.
func probe(p, n int) error {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for i := range n {
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p+i)))
		if err != nil {
			return fmt.Errorf("port %d (of %d..%d) is in use: %v", p+i, p, p+n-1, err)
		}
		ls = append(ls, l)
	}
	return nil
}

// lockedWriter serialises writes with the other ranks' output.
type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// lineWriter writes whole lines, each with prefix; a line longer than
// maxLine is cut.
type lineWriter struct {
	mu     *sync.Mutex
	w      io.Writer
	prefix []byte
	buf    []byte
}

const maxLine = 64 << 10

func (l *lineWriter) Write(p []byte) (int, error) {
	l.buf = append(l.buf, p...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 && len(l.buf) < maxLine {
			break
		}
		if i < 0 {
			i = maxLine - 1
		}
		l.line(l.buf[:i+1])
		l.buf = l.buf[i+1:]
	}
	if len(l.buf) == 0 {
		l.buf = nil
	}
	return len(p), nil
}

func (l *lineWriter) line(b []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := append(append([]byte(nil), l.prefix...), b...)
	if out[len(out)-1] != '\n' {
		out = append(out, '\n')
	}
	l.w.Write(out) // a failing terminal must not stop the rank
}

// flush writes a last line without its newline.
func (l *lineWriter) flush() {
	if len(l.buf) > 0 {
		l.line(l.buf)
		l.buf = nil
	}
}
