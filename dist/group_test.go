package dist

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// fast shortens the protocol's timings so that a lost rank shows in about
// two seconds.
var fast = timing{heartbeat: 50 * time.Millisecond, lostAfter: 2 * time.Second, closeWait: 5 * time.Second, linger: 2 * time.Second}

// lostWithin bounds how long a test waits for Lost: lostAfter plus a few
// heartbeats, with room for -race on a loaded machine.
const lostWithin = 10 * time.Second

// testMaster returns 127.0.0.1:P with P..P+n+1 free.
func testMaster(t *testing.T, n int) string {
	t.Helper()
	p, err := freePorts(0, n+2)
	if err != nil {
		t.Fatal(err)
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(p))
}

func configs(master string, n int, timeout time.Duration) []Config {
	cs := make([]Config, n)
	for r := range cs {
		cs[r] = Config{Rank: r, WorldSize: n, LocalRank: r, Master: master, Timeout: timeout, t: fast}
	}
	return cs
}

// joinAll joins every config concurrently (config i with hashes[i]).
func joinAll(t *testing.T, cs []Config, hashes []string) ([]*Group, []error) {
	t.Helper()
	gs := make([]*Group, len(cs))
	errs := make([]error, len(cs))
	var wg sync.WaitGroup
	for i := range cs {
		wg.Go(func() { gs[i], errs[i] = Join(context.Background(), cs[i], hashes[i]) })
	}
	wg.Wait()
	t.Cleanup(func() { closeAll(gs) })
	return gs, errs
}

func closeAll(gs []*Group) []error {
	errs := make([]error, len(gs))
	var wg sync.WaitGroup
	for i, g := range gs {
		if g != nil {
			wg.Go(func() { errs[i] = g.Close() })
		}
	}
	wg.Wait()
	return errs
}

func same(h string, n int) []string {
	hs := make([]string, n)
	for i := range hs {
		hs[i] = h
	}
	return hs
}

// joined joins n ranks that must all succeed.
func joined(t *testing.T, n int) ([]*Group, string) {
	t.Helper()
	master := testMaster(t, n)
	gs, errs := joinAll(t, configs(master, n, 20*time.Second), same("recipe-hash", n))
	for r, err := range errs {
		if err != nil {
			t.Fatalf("rank %d: Join: %v", r, err)
		}
	}
	return gs, master
}

// stepAll runs one Step on every rank concurrently.
func stepAll(gs []*Group, vs []Vals) ([]Vals, []error) {
	out := make([]Vals, len(gs))
	errs := make([]error, len(gs))
	var wg sync.WaitGroup
	for i, g := range gs {
		wg.Go(func() { out[i], errs[i] = g.Step(context.Background(), vs[i]) })
	}
	wg.Wait()
	return out, errs
}

func TestJoinParallel(t *testing.T) {
	gs, master := joined(t, 3)
	_, p, _ := net.SplitHostPort(master)
	port, _ := strconv.Atoi(p)
	for r, g := range gs {
		par := g.Parallel()
		// Ports: the store is P+1, rank r's TensorFlow server P+2+r, on the
		// local address of its connection to the master (loopback here).
		wantStore := fmt.Sprintf("127.0.0.1:%d", port+1)
		if par.Rank != r || par.WorldSize != 3 || g.Rank() != r || g.WorldSize() != 3 || g.LocalRank() != r {
			t.Errorf("rank %d: got rank %d world %d, want %d and 3", r, par.Rank, par.WorldSize, r)
		}
		if par.Store != wantStore {
			t.Errorf("rank %d: got store %s, want %s", r, par.Store, wantStore)
		}
		if len(par.Workers) != 3 {
			t.Fatalf("rank %d: got %d workers, want 3", r, len(par.Workers))
		}
		for w, addr := range par.Workers {
			if want := fmt.Sprintf("127.0.0.1:%d", port+2+w); addr != want {
				t.Errorf("rank %d: got worker %d %s, want %s", r, w, addr, want)
			}
		}
		if par.Timeout != 20*time.Second {
			t.Errorf("rank %d: got timeout %v, want the configured 20s", r, par.Timeout)
		}
		if err := par.Validate(); err != nil {
			t.Errorf("rank %d: Parallel().Validate: %v", r, err)
		}
	}
}

func TestJoinWorkersGiven(t *testing.T) {
	master := testMaster(t, 2)
	cs := configs(master, 2, 20*time.Second)
	workers := []string{"10.0.0.1:7000", "10.0.0.2:7000"} // never dialled: dist only passes them on
	for r := range cs {
		cs[r].Workers = workers
	}
	gs, errs := joinAll(t, cs, same("h", 2))
	for r, err := range errs {
		if err != nil {
			t.Fatalf("rank %d: %v", r, err)
		}
		if got := gs[r].Parallel().Workers; strings.Join(got, ",") != strings.Join(workers, ",") {
			t.Errorf("rank %d: got workers %v, want %v", r, got, workers)
		}
	}
}

func TestCheck(t *testing.T) {
	gs, _ := joined(t, 3)
	check := func(vals []string) []error {
		errs := make([]error, len(gs))
		var wg sync.WaitGroup
		for i, g := range gs {
			wg.Go(func() { errs[i] = g.Check(context.Background(), "weights", vals[i]) })
		}
		wg.Wait()
		return errs
	}
	for r, err := range check(same("abc", 3)) {
		if err != nil {
			t.Errorf("rank %d: equal values: got %v, want nil", r, err)
		}
	}
	for r, err := range check([]string{"abc", "abc", "xyz"}) {
		if !errors.Is(err, ErrMismatch) || !strings.Contains(fmt.Sprint(err), `check "weights": rank 2 has xyz; rank 0 has abc`) {
			t.Errorf("rank %d: got %v, want ErrMismatch naming rank 2's xyz and rank 0's abc", r, err)
		}
	}
	// A mismatched Check does not break the group: the next Step works.
	if _, errs := stepAll(gs, make([]Vals, 3)); errs[0] != nil || errs[1] != nil || errs[2] != nil {
		t.Errorf("step after a mismatched check: got %v, want no errors", errs)
	}
}

func TestStep(t *testing.T) {
	gs, _ := joined(t, 3)
	tests := []struct {
		name string
		in   []Vals
		want Vals
	}{
		// Sums: 0.5+1.25+2 = 3.75 and 1+2+3 = 6 are exact in float64.
		{"sums", []Vals{{Loss: 0.5, Correct: 1, Images: 8}, {Loss: 1.25, Correct: 2, Images: 8}, {Loss: 2, Correct: 3, Images: 8}}, Vals{Loss: 3.75, Correct: 6, Images: 24}},
		{"one rank stops", []Vals{{}, {Stop: true}, {}}, Vals{Stop: true}},
		{"every rank stops", []Vals{{Stop: true}, {Stop: true}, {Stop: true}}, Vals{Stop: true}},
		// IEEE 754: NaN + x is NaN, +Inf + x is +Inf (JSON alone cannot carry either).
		{"nan loss", []Vals{{Loss: 1}, {Loss: math.NaN()}, {Loss: 1}}, Vals{Loss: math.NaN()}},
		{"inf loss", []Vals{{Loss: math.Inf(1)}, {Loss: 1}, {Loss: 1}}, Vals{Loss: math.Inf(1)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, errs := stepAll(gs, tt.in)
			for r := range gs {
				if errs[r] != nil {
					t.Fatalf("rank %d: %v", r, errs[r])
				}
				got := out[r]
				lossOK := got.Loss == tt.want.Loss || (math.IsNaN(got.Loss) && math.IsNaN(tt.want.Loss))
				if !lossOK || got.Correct != tt.want.Correct || got.Images != tt.want.Images || got.Stop != tt.want.Stop {
					t.Errorf("rank %d: got %+v, want %+v", r, got, tt.want)
				}
			}
		})
	}
}

func TestStepLockStep(t *testing.T) {
	gs, _ := joined(t, 3)
	const late = 300 * time.Millisecond
	var wg sync.WaitGroup
	returned := make([]time.Duration, 3)
	start := time.Now()
	for i, g := range gs {
		wg.Go(func() {
			if i == 2 {
				time.Sleep(late)
			}
			if _, err := g.Step(context.Background(), Vals{}); err != nil {
				t.Errorf("rank %d: %v", i, err)
			}
			returned[i] = time.Since(start)
		})
	}
	wg.Wait()
	for r, d := range returned {
		if d < late {
			t.Errorf("rank %d: Step returned after %v, want ≥ %v (rank 2 called it then)", r, d, late)
		}
	}
}

func TestCloseInOrder(t *testing.T) {
	gs, _ := joined(t, 3)
	if _, errs := stepAll(gs, make([]Vals, 3)); errs[0] != nil || errs[1] != nil || errs[2] != nil {
		t.Fatalf("step: %v", errs)
	}
	// Rank 0 closes first: its Close waits for the others.
	errs := make([]error, 3)
	var wg sync.WaitGroup
	wg.Go(func() { errs[0] = gs[0].Close() })
	time.Sleep(100 * time.Millisecond)
	for _, r := range []int{2, 1} {
		errs[r] = gs[r].Close()
	}
	wg.Wait()
	for r, g := range gs {
		if errs[r] != nil {
			t.Errorf("rank %d: Close: got %v, want nil", r, errs[r])
		}
		select {
		case <-g.Lost():
			t.Errorf("rank %d: Lost closed after an orderly Close: %v", r, g.Err())
		default:
		}
		if err := g.Close(); err != nil {
			t.Errorf("rank %d: second Close: got %v, want nil", r, err)
		}
		if _, err := g.Step(context.Background(), Vals{}); !errors.Is(err, ErrClosed) {
			t.Errorf("rank %d: Step after Close: got %v, want ErrClosed", r, err)
		}
	}
}

func TestJoinMismatch(t *testing.T) {
	tests := []struct {
		name   string
		edit   func([]Config, []string)
		n      int
		wantIn string
	}{
		{"recipe hash", func(cs []Config, hs []string) { hs[1] = "bbbbbbbbbbbbbbbbbbbb" }, 3,
			"rank 1's recipe hash bbbbbbbbbbbb differs from rank 0's aaaaaaaaaaaa"},
		{"world size", func(cs []Config, hs []string) { cs[2].WorldSize = 4 }, 3,
			"rank 2 has world size 4, rank 0 has 3"},
		{"duplicate rank", func(cs []Config, hs []string) { cs[2].Rank = 1; cs[2].LocalRank = 1 }, 3,
			"rank 1 joined twice"},
		{"workers", func(cs []Config, hs []string) {
			cs[0].Workers = []string{"h0:1", "h1:1"}
			cs[1].Workers = []string{"h0:1", "h1:2"}
		}, 2, "rank 1's worker list h0:1,h1:2 differs from rank 0's h0:1,h1:1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			master := testMaster(t, 4)
			cs := configs(master, tt.n, 20*time.Second)
			hs := same("aaaaaaaaaaaaaaaaaaaa", tt.n)
			tt.edit(cs, hs)
			start := time.Now()
			_, errs := joinAll(t, cs, hs)
			for i, err := range errs {
				if !errors.Is(err, ErrMismatch) || !strings.Contains(fmt.Sprint(err), tt.wantIn) {
					t.Errorf("process %d (rank %d): got %v, want ErrMismatch with %q", i, cs[i].Rank, err, tt.wantIn)
				}
			}
			if d := time.Since(start); d > 10*time.Second {
				t.Errorf("joins failed after %v, want well before the 20s timeout", d)
			}
		})
	}
}

func TestJoinRankZeroLast(t *testing.T) {
	master := testMaster(t, 3)
	cs := configs(master, 3, 20*time.Second)
	gs := make([]*Group, 3)
	errs := make([]error, 3)
	var wg sync.WaitGroup
	for r := range 3 {
		wg.Go(func() {
			if r == 0 {
				time.Sleep(500 * time.Millisecond) // ranks 1 and 2 dial a closed port meanwhile
			}
			gs[r], errs[r] = Join(context.Background(), cs[r], "h")
		})
	}
	wg.Wait()
	t.Cleanup(func() { closeAll(gs) })
	for r, err := range errs {
		if err != nil {
			t.Errorf("rank %d: got %v, want nil", r, err)
		}
	}
}

func TestJoinMissingRank(t *testing.T) {
	master := testMaster(t, 3)
	cs := configs(master, 3, time.Second)[:2] // rank 2 never comes
	start := time.Now()
	_, errs := joinAll(t, cs, same("h", 2))
	for r, err := range errs {
		if !errors.Is(err, ErrTimeout) || !strings.Contains(fmt.Sprint(err), "rank 2 did not join within 1s") {
			t.Errorf("rank %d: got %v, want ErrTimeout naming rank 2", r, err)
		}
	}
	if d := time.Since(start); d > 6*time.Second {
		t.Errorf("got failure after %v, want about the 1s timeout", d)
	}
}

func TestJoinNoMaster(t *testing.T) {
	master := testMaster(t, 2)
	c := configs(master, 2, 500*time.Millisecond)[1]
	_, err := Join(context.Background(), c, "h")
	if !errors.Is(err, ErrTimeout) || !strings.Contains(fmt.Sprint(err), "rank 0's rendezvous at "+master+" was not reachable") {
		t.Errorf("got %v, want ErrTimeout naming %s", err, master)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	c.Timeout = time.Minute
	if _, err := Join(ctx, c, "h"); !errors.Is(err, context.Canceled) {
		t.Errorf("canceled: got %v, want context.Canceled", err)
	}
}

func TestJoinPortBusy(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	master := ln.Addr().String()
	_, err = Join(context.Background(), configs(master, 2, time.Second)[0], "h")
	if !errors.Is(err, ErrPortBusy) || !strings.Contains(fmt.Sprint(err), master) {
		t.Errorf("got %v, want ErrPortBusy naming %s", err, master)
	}
}

func TestJoinInvalid(t *testing.T) {
	tests := []struct {
		name string
		c    Config
		hash string
	}{
		{"rank", Config{Rank: 3, WorldSize: 3, Master: "127.0.0.1:1234"}, "h"},
		{"empty hash", Config{WorldSize: 1, Master: "127.0.0.1:1234"}, ""},
		{"long hash", Config{WorldSize: 1, Master: "127.0.0.1:1234"}, strings.Repeat("h", maxHashLen+1)},
	}
	for _, tt := range tests {
		if _, err := Join(context.Background(), tt.c, tt.hash); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: got %v, want ErrInvalid", tt.name, err)
		}
	}
}

func TestJoinSingle(t *testing.T) {
	gs, _ := joined(t, 1)
	got, err := gs[0].Step(context.Background(), Vals{Loss: 2, Correct: 1, Images: 4})
	if err != nil || got != (Vals{Loss: 2, Correct: 1, Images: 4}) {
		t.Errorf("got %+v, %v, want the values back", got, err)
	}
}

// waitLost waits for g's Lost and checks its error.
func waitLost(t *testing.T, r int, g *Group, wantIn string) {
	t.Helper()
	select {
	case <-g.Lost():
	case <-time.After(lostWithin):
		t.Errorf("rank %d: Lost not closed within %v", r, lostWithin)
		return
	}
	if err := g.Err(); !errors.Is(err, ErrLost) || !strings.Contains(fmt.Sprint(err), wantIn) {
		t.Errorf("rank %d: got %v, want ErrLost with %q", r, err, wantIn)
	}
	if _, err := g.Step(context.Background(), Vals{}); !errors.Is(err, ErrLost) {
		t.Errorf("rank %d: Step after Lost: got %v, want ErrLost", r, err)
	}
}

func TestLostConnectionDropped(t *testing.T) {
	gs, _ := joined(t, 3)
	gs[2].l.c.Close() // abrupt: no bye
	for r := range 2 {
		waitLost(t, r, gs[r], "rank 2 is lost: the connection closed")
	}
}

func TestLostRankSilent(t *testing.T) {
	master := testMaster(t, 3)
	cs := configs(master, 3, 20*time.Second)
	gs := make([]*Group, 2)
	var wg sync.WaitGroup
	for r := range 2 {
		wg.Go(func() {
			var err error
			if gs[r], err = Join(context.Background(), cs[r], "h"); err != nil {
				t.Errorf("rank %d: %v", r, err)
			}
		})
	}
	t.Cleanup(func() { closeAll(gs) })
	// Rank 2 says hello, then nothing: no heartbeats, but its connection
	// stays open.
	conn, err := dial(context.Background(), master)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, `{"v":1,"t":"hello","rank":2,"world_size":3,"hash":"h","addr":"127.0.0.1:1"}`+"\n")
	wg.Wait()
	if gs[0] == nil || gs[1] == nil {
		t.FailNow()
	}
	for r := range 2 {
		waitLost(t, r, gs[r], "rank 2 is lost: nothing came for 2s")
	}
}

func TestLostMaster(t *testing.T) {
	gs, _ := joined(t, 3)
	gs[0].srv.kill() // rank 0's process vanishes: no message to anyone
	for r := 1; r < 3; r++ {
		waitLost(t, r, gs[r], "the master (rank 0 at 127.0.0.1:")
	}
}

func TestFail(t *testing.T) {
	gs, _ := joined(t, 3)
	gs[1].Fail("out of memory")
	for _, r := range []int{0, 2} {
		waitLost(t, r, gs[r], "rank 1 failed: out of memory")
	}
	waitLost(t, 1, gs[1], "rank 1 failed: out of memory")
	for r, g := range gs {
		if got, want := g.FailedHere(), r == 1; got != want {
			t.Errorf("rank %d: FailedHere got %v, want %v (rank 1 called Fail)", r, got, want)
		}
	}
	gs[0].Fail("too late") // the group is already broken: not this rank's failure
	if gs[0].FailedHere() {
		t.Error("rank 0: FailedHere after Fail on a broken group got true, want false")
	}
}

func TestLostWhileWaiting(t *testing.T) {
	tests := []struct {
		name   string
		act    func(g *Group)
		wantIn string
	}{
		{"rank 2 closes", func(g *Group) { g.Close() }, "rank 2 left the group while ranks 0, 1 wait in step #1"},
		{"rank 2 never steps", func(g *Group) {}, "step #1: rank 2 did not arrive within 1s"},
		{"rank 2 checks", func(g *Group) { g.Check(context.Background(), "weights", "x") }, `collective #1: rank 2 called check "weights" where rank`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			master := testMaster(t, 3)
			gs, errs := joinAll(t, configs(master, 3, time.Second), same("h", 3))
			for r, err := range errs {
				if err != nil {
					t.Fatalf("rank %d: %v", r, err)
				}
			}
			var wg sync.WaitGroup
			stepErrs := make([]error, 2)
			for r := range 2 {
				wg.Go(func() { _, stepErrs[r] = gs[r].Step(context.Background(), Vals{}) })
			}
			time.Sleep(100 * time.Millisecond)
			tt.act(gs[2])
			wg.Wait()
			for r := range 2 {
				if !errors.Is(stepErrs[r], ErrLost) || !strings.Contains(fmt.Sprint(stepErrs[r]), tt.wantIn) {
					t.Errorf("rank %d: got %v, want ErrLost with %q", r, stepErrs[r], tt.wantIn)
				}
			}
		})
	}
}

func TestStepCanceled(t *testing.T) {
	gs, _ := joined(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := gs[1].Step(ctx, Vals{}); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("rank 1: got %v, want context.DeadlineExceeded", err)
	}
	waitLost(t, 0, gs[0], "rank 1 failed: it gave up step #1: context deadline exceeded")
}

func TestCloseEndsGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	master := testMaster(t, 3)
	gs, errs := joinAll(t, configs(master, 3, 20*time.Second), same("h", 3))
	for r, err := range errs {
		if err != nil {
			t.Fatalf("rank %d: %v", r, err)
		}
	}
	stepAll(gs, make([]Vals, 3))
	closeAll(gs)
	// Every link's reader and writer, the accept loop and the ticker end
	// with Close (polling: a goroutine's exit is not synchronous with Close).
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<16)
		t.Errorf("got %d goroutines after Close, want at most the %d before\n%s", n, before, buf[:runtime.Stack(buf, true)])
	}
}

func TestCloseDuringStep(t *testing.T) {
	gs, _ := joined(t, 2)
	done := make(chan error, 1)
	go func() {
		_, err := gs[1].Step(context.Background(), Vals{}) // rank 0 never steps
		done <- err
	}()
	time.Sleep(100 * time.Millisecond)
	gs[1].Close()
	select {
	case err := <-done:
		if !errors.Is(err, ErrClosed) {
			t.Errorf("got %v, want ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Errorf("Step still waiting 5s after Close, want it to return ErrClosed")
	}
}
