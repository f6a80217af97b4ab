package main

import (
	"bufio"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fwbench/fwbench/compare"
	"github.com/fwbench/fwbench/recipe"
	"github.com/fwbench/fwbench/weights"
)

// Data-parallel training through the real binary and the real frameworks' distributed
// runtimes (libtorch's c10d Gloo, TensorFlow's gRPC server with collective ops), on
// 127.0.0.1 only.

// dpData is a synthetic set big enough for a global batch of 16: 3 classes × 20 images at
// 32 px, 48 of them for training (ValSplit 0.2), so 3 steps an epoch.
func dpData(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "data")
	if out, err := exec.Command(fwbench, "dataset", "synth", "--out", dir, "--classes", "3", "--per-class", "20", "--size", "32", "--seed", "5").CombinedOutput(); err != nil {
		t.Fatalf("dataset synth: %v\n%s", err, out)
	}
	return dir
}

// dpRecipe is the acceptance recipe: VGG11 (no batch norm), dropout 0, SGD with
// momentum, global batch 16, 3 steps.
func dpRecipe(data string, extra ...string) []string {
	return append([]string{"--model", "vgg11", "--data", data, "--image-size", "32", "--hidden", "16", "--dropout", "0",
		"--optimizer", "sgd", "--lr", "0.01", "--momentum", "0.9", "--batch-size", "16", "--epochs", "1",
		"--warmup-steps", "0", "--quiet"}, extra...)
}

// freePorts returns a port P of 127.0.0.1 such that P..P+n-1 are all free now.
func freePorts(t *testing.T, n int) int {
	t.Helper()
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p := l.Addr().(*net.TCPAddr).Port
		l.Close()
		ok := p+n-1 <= 65535
		for q := p + 1; ok && q < p+n; q++ {
			if l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", q)); err != nil {
				ok = false
			} else {
				l.Close()
			}
		}
		if ok {
			return p
		}
	}
	t.Fatal("no run of free ports on 127.0.0.1")
	return 0
}

// TestDataParallelEqualsOneProcess is the acceptance test: after 3 SGD steps on VGG11
// (dropout 0, no BN), the weights `train --nproc 2 --batch-size 16` saves equal those of
// `train --nproc 1 --batch-size 16` within 1e-4 relative (each tensor's largest difference
// over its largest |value|), for each framework.
func TestDataParallelEqualsOneProcess(t *testing.T) {
	data := dpData(t)
	for _, fw := range []string{fwTorch, fwTF} {
		t.Run(fw, func(t *testing.T) {
			dir := t.TempDir()
			files := map[int]string{}
			recs := map[int]compare.RunRecord{}
			for _, n := range []int{1, 2} {
				files[n] = filepath.Join(dir, fmt.Sprintf("n%d.safetensors", n))
				rec := filepath.Join(dir, fmt.Sprintf("n%d.json", n))
				start := time.Now()
				_, serr, code := runCLIWith(t, cliRun{timeout: 5 * time.Minute}, append([]string{"train", "--framework", fw, "--nproc", strconv.Itoa(n),
					"--save-weights", files[n], "--json", rec}, dpRecipe(data)...)...)
				if code != 0 {
					t.Fatalf("--nproc %d: exit %d\n%s", n, code, serr)
				}
				t.Logf("--nproc %d: %.1f s", n, time.Since(start).Seconds())
				recs[n] = readRecord(t, rec)
			}
			one, two := recs[1], recs[2]
			if one.WorldSize != 1 || two.WorldSize != 2 || two.Rank != 0 || two.Backend == "" {
				t.Errorf("records: world sizes %d and %d, rank %d, backend %q; want 1, 2, 0 and the framework's backend",
					one.WorldSize, two.WorldSize, two.Rank, two.Backend)
			}
			if len(one.StepLosses) != 3 || len(two.StepLosses) != 3 {
				t.Fatalf("step losses: got %d and %d, want 3 each", len(one.StepLosses), len(two.StepLosses))
			}
			for i := range 3 { // the global batch's mean loss, summed over the ranks
				if d := math.Abs(one.StepLosses[i]-two.StepLosses[i]) / math.Abs(one.StepLosses[i]); d > 1e-4 {
					t.Errorf("step %d loss: one process %.7g, two %.7g (relative %.2g > 1e-4)", i+1, one.StepLosses[i], two.StepLosses[i], d)
				}
			}
			a, err := weights.Load(files[1])
			if err != nil {
				t.Fatal(err)
			}
			b, err := weights.Load(files[2])
			if err != nil {
				t.Fatal(err)
			}
			init := seededInit(t, a)
			var worst, moved float64
			for i := range a {
				d, big, m := 0.0, 0.0, 0.0
				for j, x := range a[i].Data {
					d = math.Max(d, math.Abs(float64(x-b[i].Data[j])))
					big = math.Max(big, math.Abs(float64(x)))
					m = math.Max(m, math.Abs(float64(x-init[a[i].Name][j])))
				}
				if rel := d / big; rel > worst {
					worst = rel
				}
				moved = math.Max(moved, m)
				if d > 1e-4*big {
					t.Errorf("%s: largest difference %.3g, %.3g of its largest |value| (want ≤ 1e-4)", a[i].Name, d, d/big)
				}
			}
			if moved == 0 {
				t.Fatalf("no weight moved from its initial value: the test compares nothing")
			}
			t.Logf("largest relative difference %.3g over %d tensors; largest update %.3g", worst, len(a), moved)
		})
	}
}

// seededInit is the initial weights of dpRecipe's model (seeded, no file), by name.
func seededInit(t *testing.T, trained []*weights.Tensor) map[string][]float32 {
	t.Helper()
	c := recipe.Default()
	c.Model, c.Hidden, c.Classes, c.ImageSize, c.Dropout = "vgg11", 16, 3, 32, 0
	net, err := c.Net()
	if err != nil {
		t.Fatal(err)
	}
	ts, err := weights.InitParams(net.Params, c.Seed)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string][]float32{}
	for _, x := range ts {
		m[x.Name] = x.Data
	}
	for _, x := range trained {
		if len(m[x.Name]) != len(x.Data) {
			t.Fatalf("%s: %d initial values, %d trained", x.Name, len(m[x.Name]), len(x.Data))
		}
	}
	return m
}

// rankCmd is one rank of a group started by hand, as on several machines.
func rankCmd(t *testing.T, dir string, rank, world, port int, args ...string) *exec.Cmd {
	cmd := exec.Command(fwbench, args...)
	cmd.Env = append(os.Environ(), "FWBENCH_CACHE="+dir, "RANK="+strconv.Itoa(rank), "WORLD_SIZE="+strconv.Itoa(world),
		"MASTER_ADDR=127.0.0.1", "MASTER_PORT="+strconv.Itoa(port), "LOCAL_RANK="+strconv.Itoa(rank))
	return cmd
}

// TestDataParallelRankDies kills rank 1 with SIGKILL once rank 0 trains: rank 0 must exit
// non-zero within 60 s, naming the lost rank.
func TestDataParallelRankDies(t *testing.T) {
	data := dpData(t)
	for _, fw := range []string{fwTorch, fwTF} {
		t.Run(fw, func(t *testing.T) {
			dir := t.TempDir()
			port := freePorts(t, 4)
			args := append([]string{"train", "--framework", fw, "--progress-json"}, dpRecipe(data, "--epochs", "100", "--threads", "1")...)
			r0, r1 := rankCmd(t, dir, 0, 2, port, args...), rankCmd(t, dir, 1, 2, port, args...)
			stderr, _ := r0.StderrPipe()
			if err := r0.Start(); err != nil {
				t.Fatal(err)
			}
			defer r0.Process.Kill()
			if err := r1.Start(); err != nil {
				t.Fatal(err)
			}
			defer r1.Process.Kill()
			lines := make(chan string, 1024)
			go func() {
				sc := bufio.NewScanner(stderr)
				for sc.Scan() {
					lines <- sc.Text()
				}
				close(lines)
			}()
			var tail []string
			deadline := time.After(3 * time.Minute)
		wait:
			for {
				select {
				case l, ok := <-lines:
					if !ok {
						t.Fatalf("rank 0 exited before training:\n%s", strings.Join(tail, "\n"))
					}
					tail = append(tail, l)
					if strings.Contains(l, `"Phase":"train"`) {
						break wait
					}
				case <-deadline:
					t.Fatalf("rank 0 did not train within 3 minutes:\n%s", strings.Join(tail, "\n"))
				}
			}
			r1.Process.Signal(syscall.SIGKILL)
			killed := time.Now()
			r1.Wait()
			exited := make(chan error, 1)
			go func() {
				for l := range lines {
					tail = append(tail, l)
				}
				exited <- r0.Wait()
			}()
			select {
			case err := <-exited:
				var ee *exec.ExitError
				if !errors.As(err, &ee) || ee.ExitCode() == 0 {
					t.Errorf("rank 0: got %v, want a non-zero exit", err)
				}
				t.Logf("rank 0 exited %v, %.1f s after rank 1 was killed; its last lines:\n%s", err, time.Since(killed).Seconds(),
					strings.Join(tail[max(0, len(tail)-3):], "\n"))
				if msg := strings.Join(tail, "\n"); !strings.Contains(msg, "rank 1") {
					t.Errorf("rank 0's message does not name rank 1:\n%s", msg)
				}
			case <-time.After(60 * time.Second):
				t.Fatalf("rank 0 still running 60 s after rank 1 was killed")
			}
		})
	}
}

// TestDataParallelRefusals: what cannot run is refused with one clear message, before any
// training.
func TestDataParallelRefusals(t *testing.T) {
	data := dpData(t)
	tests := []struct {
		name string
		args []string
		env  []string
		code int
		want string
	}{
		{"batch does not split", append([]string{"train", "--nproc", "3"}, dpRecipe(data)...), nil, 2, "must split evenly over 3 processes"},
		{"nproc 0", append([]string{"train", "--nproc", "0"}, dpRecipe(data)...), nil, 2, "--nproc must be at least 1"},
		{"nproc with a rank", append([]string{"train", "--nproc", "2", "--rank", "1"}, dpRecipe(data)...), nil, 2, "--nproc starts its own ranks"},
		{"rank outside the world", append([]string{"train", "--rank", "2", "--world-size", "2", "--master", "127.0.0.1:29400"}, dpRecipe(data)...), nil, 2, "rank"},
		{"bad RANK", append([]string{"train"}, dpRecipe(data)...), []string{"RANK=x", "WORLD_SIZE=2", "MASTER_ADDR=127.0.0.1", "MASTER_PORT=29400"}, 2, "RANK"},
		{"torch on a GPU", append([]string{"train", "--framework", fwTorch, "--nproc", "2", "--gpu"}, dpRecipe(data)...), nil, 2, "torch trains data-parallel on CUDA with c10d's NCCL, which cannot be used here"},
		// A rank that fails after the rendezvous says why once (the group's watchdog stays quiet about its own rank).
		{"a rank's own failure", append(append([]string{"train", "--rank", "0", "--world-size", "1", "--master", fmt.Sprintf("127.0.0.1:%d", freePorts(t, 4))}, dpRecipe(data)...), "--data", t.TempDir()), nil, 2, "found 0 class folder(s)"},
		{"one GPU for every local process", append([]string{"train", "--framework", fwTF, "--nproc", "2", "--device", "cuda:1"}, dpRecipe(data)...), nil, 2, "would put all 2 local processes on one GPU"},
		{"compare: batch does not split", append([]string{"compare", "--nproc", "3", "--out", t.TempDir()}, dpRecipe(data)...), nil, 2, "must split evenly over 3 processes"},
	}
	for _, tt := range tests {
		_, serr, code := runCLIWith(t, cliRun{env: tt.env, timeout: time.Minute}, tt.args...)
		if code != tt.code || !strings.Contains(serr, tt.want) || strings.Count(strings.TrimSpace(serr), "\n") > 0 {
			t.Errorf("%s: exit %d, stderr %q; want exit %d and one line containing %q", tt.name, code, serr, tt.code, tt.want)
		}
	}
}

// TestRankDevice: --gpu ("cuda") gives each local rank its own GPU; any other device is kept.
func TestRankDevice(t *testing.T) {
	for _, tt := range []struct {
		device string
		lr     int
		want   string
	}{{"cuda", 1, "cuda:1"}, {" CUDA ", 0, "cuda:0"}, {"cuda:0", 1, "cuda:0"}, {"cpu", 1, "cpu"}, {"", 1, ""}} {
		if got := rankDevice(tt.device, tt.lr); got != tt.want {
			t.Errorf("rankDevice(%q, %d) got %q, want %q", tt.device, tt.lr, got, tt.want)
		}
	}
}

// TestDataParallelRendezvous: ranks started with different recipes are refused at the
// rendezvous, and a busy master port is named.
func TestDataParallelRendezvous(t *testing.T) {
	data := dpData(t)
	t.Run("recipes differ", func(t *testing.T) {
		dir := t.TempDir()
		port := freePorts(t, 4)
		base := append([]string{"train", "--framework", fwTorch}, dpRecipe(data)...)
		r0 := rankCmd(t, dir, 0, 2, port, base...)
		r1 := rankCmd(t, dir, 1, 2, port, append(base, "--lr", "0.02")...)
		var e0, e1 strings.Builder
		r0.Stderr, r1.Stderr = &e0, &e1
		if err := r0.Start(); err != nil {
			t.Fatal(err)
		}
		if err := r1.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { r0.Wait(); r1.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(2 * time.Minute):
			r0.Process.Kill()
			r1.Process.Kill()
			t.Fatal("ranks with different recipes still running after 2 minutes")
		}
		for i, c := range []*exec.Cmd{r0, r1} {
			msg := []*strings.Builder{&e0, &e1}[i].String()
			if c.ProcessState.ExitCode() != 2 || !strings.Contains(msg, "recipe") {
				t.Errorf("rank %d: exit %d, stderr %q; want exit 2 naming the recipe", i, c.ProcessState.ExitCode(), msg)
			}
		}
	})
	t.Run("busy port", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		port := l.Addr().(*net.TCPAddr).Port
		_, serr, code := runCLIWith(t, cliRun{timeout: time.Minute}, append([]string{"train", "--framework", fwTorch,
			"--rank", "0", "--world-size", "2", "--master", fmt.Sprintf("127.0.0.1:%d", port)}, dpRecipe(data)...)...)
		if code == 0 || !strings.Contains(serr, fmt.Sprintf("127.0.0.1:%d", port)) || !strings.Contains(serr, "in use") {
			t.Errorf("exit %d, stderr %q; want a failure naming 127.0.0.1:%d in use", code, serr, port)
		}
	})
}

// TestDataParallelInterrupt: Ctrl-C on the launcher stops both ranks before the same step,
// and rank 0 writes the checkpoint and a partial record.
func TestDataParallelInterrupt(t *testing.T) {
	data := dpData(t)
	dir := t.TempDir()
	ckpt, rec := filepath.Join(dir, "ckpt"), filepath.Join(dir, "run.json")
	args := append([]string{"train", "--framework", fwTorch, "--nproc", "2", "--checkpoint", ckpt, "--json", rec, "--progress-json"},
		dpRecipe(data, "--epochs", "100")...)
	cmd := exec.Command(fwbench, args...)
	cmd.Env = append(os.Environ(), "FWBENCH_CACHE="+dir)
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	sc := bufio.NewScanner(stderr)
	var tail []string
	for sc.Scan() {
		tail = append(tail, sc.Text())
		if strings.Contains(sc.Text(), `"Phase":"train"`) {
			break
		}
	}
	cmd.Process.Signal(syscall.SIGINT)
	go func() {
		for sc.Scan() {
		}
	}()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err := <-exited:
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 130 {
			t.Fatalf("exit: got %v, want 130\n%s", err, strings.Join(tail, "\n"))
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("fwbench train --nproc 2 still running 2 minutes after SIGINT")
	}
	r := readRecord(t, rec)
	if !r.Partial || r.InterruptedAt == nil || r.WorldSize != 2 {
		t.Fatalf("record: partial=%v interrupted_at=%v world_size=%d, want a partial record of 2 processes with the position", r.Partial, r.InterruptedAt, r.WorldSize)
	}
	meta, err := weights.ReadCheckpointMeta(ckpt)
	if err != nil {
		t.Fatalf("checkpoint after interrupt: %v", err)
	}
	t.Logf("interrupted at %+v; checkpoint %v", *r.InterruptedAt, meta)
}

// TestCompareScaling: `compare --nproc 2` prints a scaling-efficiency row for each framework
// and writes them into report.json.
func TestCompareScaling(t *testing.T) {
	data := dpData(t)
	out := t.TempDir()
	stdout, serr, code := runCLIWith(t, cliRun{timeout: 8 * time.Minute}, append([]string{"compare", "--nproc", "2", "--repeat", "1", "--out", out},
		dpRecipe(data, "--warmup-steps", "1")...)...)
	if code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, stdout, serr)
	}
	if !strings.Contains(stdout, "scaling efficiency at 2 processes") {
		t.Errorf("no scaling row in:\n%s", stdout)
	}
	rep := readReport(t, out)
	if len(rep.Scaling) != 2 {
		t.Fatalf("report scaling: got %d rows, want one per framework", len(rep.Scaling))
	}
	for _, s := range rep.Scaling {
		if s.WorldSize != 2 || s.Pairs != 1 || !(s.Efficiency.Median > 0) {
			t.Errorf("%s: %+v, want world size 2, 1 pair, a positive efficiency", s.Framework, s)
		}
		t.Logf("%s (%s): %.1f images/s in 1 process, %.1f in 2, efficiency %.1f%%", s.Framework, s.Backend, s.ImagesPS1.Median, s.ImagesPSN.Median, 100*s.Efficiency.Median)
	}
}
