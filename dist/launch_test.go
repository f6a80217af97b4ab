package dist

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The launch tests re-execute this test binary as the ranks: with
// DIST_TEST_CHILD set, TestMain runs child instead of the tests.
func TestMain(m *testing.M) {
	if mode := os.Getenv("DIST_TEST_CHILD"); mode != "" {
		os.Exit(child(mode, os.Getenv("DIST_TEST_DIR")))
	}
	os.Exit(m.Run())
}

// child is one rank of a launch test; it returns its exit status.
func child(mode, dir string) int {
	rank, _ := strconv.Atoi(os.Getenv("RANK"))
	mark := func(name string) { os.WriteFile(filepath.Join(dir, name), nil, 0o644) }
	switch mode {
	case "env":
		fmt.Printf("RANK=%s WORLD_SIZE=%s MASTER_ADDR=%s MASTER_PORT=%s LOCAL_RANK=%s\n",
			os.Getenv("RANK"), os.Getenv("WORLD_SIZE"), os.Getenv("MASTER_ADDR"), os.Getenv("MASTER_PORT"), os.Getenv("LOCAL_RANK"))
		fmt.Fprint(os.Stderr, "two\nlines and no newline")
		return 0
	case "fail":
		if rank == 1 {
			time.Sleep(100 * time.Millisecond)
			return 3
		}
		time.Sleep(time.Minute) // the launcher kills it after Grace
		return 0
	case "sigint":
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, syscall.SIGINT)
		mark(fmt.Sprintf("ready-%d", rank))
		select {
		case <-sigs:
			mark(fmt.Sprintf("sigint-%d", rank))
			return 130
		case <-time.After(time.Minute):
			return 0
		}
	case "group":
		return groupChild(rank, dir)
	}
	fmt.Fprintf(os.Stderr, "unknown mode %q\n", mode)
	return 2
}

// groupChild trains a pretend model in lock-step: it joins from torchrun's
// variables, checks the "weights", and steps until DIST_TEST_STEPS steps
// are done or a rank asks to stop (SIGINT). Rank DIST_TEST_DIE dies at step
// 3 without leaving. An interrupted run's rank 0 writes "checkpoint".
func groupChild(rank int, dir string) int {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT)
	go func() {
		<-sigs
		os.WriteFile(filepath.Join(dir, fmt.Sprintf("sigint-%d", rank)), nil, 0o644)
		cancel()
	}()
	c, ok, err := FromEnv(os.Getenv)
	if !ok || err != nil {
		fmt.Fprintln(os.Stderr, "FromEnv:", ok, err)
		return 2
	}
	c.Timeout = 30 * time.Second
	g, err := Join(context.Background(), c, "recipe-hash")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer g.Close()
	os.WriteFile(filepath.Join(dir, fmt.Sprintf("ready-%d", rank)), nil, 0o644)
	if err := g.Check(context.Background(), "weights", "sha256:same"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	steps, _ := strconv.Atoi(os.Getenv("DIST_TEST_STEPS"))
	die, _ := strconv.Atoi(os.Getenv("DIST_TEST_DIE"))
	for i := 1; i <= steps; i++ {
		if rank == die && i == 3 {
			os.Exit(3) // no Close: the others must notice
		}
		time.Sleep(20 * time.Millisecond) // the step's work
		sum, err := g.Step(context.Background(), Vals{Loss: 1, Images: 1, Stop: ctx.Err() != nil})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		if sum.Images != g.WorldSize() {
			fmt.Fprintf(os.Stderr, "step %d: got %d images, want %d\n", i, sum.Images, g.WorldSize())
			return 1
		}
		if sum.Stop {
			fmt.Printf("stopped at step %d\n", i)
			if rank == 0 {
				os.WriteFile(filepath.Join(dir, "checkpoint"), []byte(strconv.Itoa(i)), 0o644)
			}
			return 130
		}
	}
	if err := g.Close(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

func launchOpts(t *testing.T, mode string, n int, extra ...string) (LaunchOptions, string, *bytes.Buffer, *bytes.Buffer) {
	dir := t.TempDir()
	var stdout, stderr bytes.Buffer
	env := append(os.Environ(), "DIST_TEST_CHILD="+mode, "DIST_TEST_DIR="+dir, "RANK=99", "MASTER_PORT=1")
	return LaunchOptions{N: n, Args: []string{os.Args[0]}, Env: append(env, extra...),
		Stdout: &stdout, Stderr: &stderr, Grace: 20 * time.Second}, dir, &stdout, &stderr
}

func TestLaunchEnvAndOutput(t *testing.T) {
	o, _, stdout, stderr := launchOpts(t, "env", 3)
	if err := Launch(context.Background(), o); err != nil {
		t.Fatalf("got %v, want nil", err)
	}
	// Rank 0 unchanged, the others prefixed; RANK and MASTER_PORT from the
	// base environment are replaced.
	re := regexp.MustCompile(`(?m)^(rank (\d): )?RANK=(\d) WORLD_SIZE=3 MASTER_ADDR=127\.0\.0\.1 MASTER_PORT=(\d+) LOCAL_RANK=(\d)$`)
	ms := re.FindAllStringSubmatch(stdout.String(), -1)
	if len(ms) != 3 {
		t.Fatalf("got stdout %q, want one line per rank", stdout.String())
	}
	seen := map[string]bool{}
	port := ms[0][4]
	for _, m := range ms {
		prefix, r := m[2], m[3]
		if (r == "0") != (prefix == "") || (r != "0" && prefix != r) || m[5] != r || m[4] != port {
			t.Errorf("got line %q, want rank %s's own prefix, LOCAL_RANK and the common port %s", m[0], r, port)
		}
		seen[r] = true
	}
	if len(seen) != 3 {
		t.Errorf("got ranks %v, want 0, 1, 2", seen)
	}
	if p, _ := strconv.Atoi(port); p < 1024 || p+4 > 65535 {
		t.Errorf("got master port %d, want a free port with room for 5", p)
	}
	// Lines of different ranks may interleave, but each prefixed line is
	// whole; rank 0's last partial line is left as it is.
	for _, want := range []string{"rank 1: two\n", "rank 1: lines and no newline\n", "rank 2: two\n", "rank 2: lines and no newline\n"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("got stderr %q, want %q", stderr.String(), want)
		}
	}
	if !regexp.MustCompile(`(?m)^two$`).MatchString(stderr.String()) {
		t.Errorf("got stderr %q, want rank 0's line unprefixed", stderr.String())
	}
}

func TestLaunchRankFails(t *testing.T) {
	o, _, _, _ := launchOpts(t, "fail", 2)
	o.Grace = time.Second
	start := time.Now()
	err := Launch(context.Background(), o)
	var re *RankError
	if !errors.As(err, &re) || re.Rank != 1 || re.Code != 3 || re.ExitCode() != 3 {
		t.Fatalf("got %v, want rank 1's status 3", err)
	}
	if !strings.Contains(err.Error(), "rank 1 exited with status 3") {
		t.Errorf("got %q, want it to name rank 1 and status 3", err)
	}
	// Rank 0 sleeps a minute: it must be killed after the 1s grace.
	if d := time.Since(start); d > 15*time.Second {
		t.Errorf("Launch returned after %v, want about the 1s grace", d)
	}
}

func waitFiles(t *testing.T, dir string, names ...string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for _, n := range names {
		for {
			if _, err := os.Stat(filepath.Join(dir, n)); err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s did not appear within 60s", n)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

func TestLaunchInterrupt(t *testing.T) {
	o, dir, _, _ := launchOpts(t, "sigint", 3)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Launch(ctx, o) }()
	waitFiles(t, dir, "ready-0", "ready-1", "ready-2")
	cancel()
	err := <-done
	var re *RankError
	if !errors.Is(err, context.Canceled) || !errors.As(err, &re) || re.Code != 130 {
		t.Errorf("got %v, want context.Canceled and a rank's status 130", err)
	}
	waitFiles(t, dir, "sigint-0", "sigint-1", "sigint-2") // each rank got SIGINT
}

func TestLaunchGroup(t *testing.T) {
	o, _, _, stderr := launchOpts(t, "group", 3, "DIST_TEST_STEPS=10", "DIST_TEST_DIE=-1")
	if err := Launch(context.Background(), o); err != nil {
		t.Fatalf("got %v (stderr %q), want nil", err, stderr.String())
	}
}

// The requirement: a rank killed mid-run makes the others exit
// non-zero within 60 s, on their own (before the grace's SIGKILL).
func TestLaunchGroupRankDies(t *testing.T) {
	o, _, _, stderr := launchOpts(t, "group", 3, "DIST_TEST_STEPS=1000", "DIST_TEST_DIE=1")
	o.Grace = 45 * time.Second
	start := time.Now()
	err := Launch(context.Background(), o)
	d := time.Since(start)
	var re *RankError
	if !errors.As(err, &re) || re.Rank != 1 || re.Code != 3 {
		t.Fatalf("got %v, want rank 1's status 3", err)
	}
	if d > 30*time.Second {
		t.Errorf("Launch returned after %v, want the survivors out well before the 45s grace", d)
	}
	for _, want := range []string{"dist: group lost: rank 1 is lost: the connection closed", "rank 2: dist: group lost: rank 1 is lost"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("got stderr %q, want %q", stderr.String(), want)
		}
	}
}

// Ctrl-C: every rank gets SIGINT, the ranks agree on the step to stop at,
// and rank 0 writes the checkpoint.
func TestLaunchGroupInterrupt(t *testing.T) {
	o, dir, stdout, stderr := launchOpts(t, "group", 3, "DIST_TEST_STEPS=100000", "DIST_TEST_DIE=-1")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Launch(ctx, o) }()
	waitFiles(t, dir, "ready-0", "ready-1", "ready-2")
	time.Sleep(200 * time.Millisecond)
	cancel()
	err := <-done
	var re *RankError
	if !errors.Is(err, context.Canceled) || !errors.As(err, &re) || re.Code != 130 {
		t.Fatalf("got %v (stderr %q), want context.Canceled and status 130", err, stderr.String())
	}
	waitFiles(t, dir, "sigint-0", "sigint-1", "sigint-2", "checkpoint")
	ck, _ := os.ReadFile(filepath.Join(dir, "checkpoint"))
	stops := regexp.MustCompile(`(?m)^(?:rank \d: )?stopped at step (\d+)$`).FindAllStringSubmatch(stdout.String(), -1)
	if len(stops) != 3 {
		t.Fatalf("got stdout %q, want three ranks stopped", stdout.String())
	}
	for _, s := range stops {
		if s[1] != string(ck) {
			t.Errorf("got a rank stopped at step %s, want every rank at the checkpoint's step %s", s[1], ck)
		}
	}
}

func TestLaunchPortBusy(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	busy := ln.Addr().(*net.TCPAddr).Port
	o, _, _, _ := launchOpts(t, "env", 2)
	o.Port = busy - 1 // P+1, the store's port, is taken
	err = Launch(context.Background(), o)
	if !errors.Is(err, ErrPortBusy) || !strings.Contains(fmt.Sprint(err), fmt.Sprintf("port %d (of %d..%d) is in use", busy, busy-1, busy+2)) {
		t.Errorf("got %v, want ErrPortBusy naming port %d", err, busy)
	}
}

func TestLaunchInvalid(t *testing.T) {
	tests := []struct {
		name string
		o    LaunchOptions
		is   error
	}{
		{"no ranks", LaunchOptions{N: 0, Args: []string{"true"}}, ErrInvalid},
		{"too many ranks", LaunchOptions{N: MaxWorldSize + 1, Args: []string{"true"}}, ErrInvalid},
		{"no command", LaunchOptions{N: 1}, ErrInvalid},
		{"negative grace", LaunchOptions{N: 1, Args: []string{"true"}, Grace: -1}, ErrInvalid},
		{"port too high", LaunchOptions{N: 2, Args: []string{"true"}, Port: 65533}, ErrInvalid},
		{"missing executable", LaunchOptions{N: 2, Args: []string{filepath.Join(t.TempDir(), "nothing")}}, os.ErrNotExist},
	}
	for _, tt := range tests {
		if err := Launch(context.Background(), tt.o); !errors.Is(err, tt.is) {
			t.Errorf("%s: got %v, want %v", tt.name, err, tt.is)
		}
	}
}
