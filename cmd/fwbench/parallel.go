package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/fwbench/fwbench/compare"
	"github.com/fwbench/fwbench/dist"
)

// parallelFlags are train's data-parallel flags. The same flags work for every framework.
func parallelFlags() []cli.Flag {
	return []cli.Flag{
		&cli.IntFlag{Name: "nproc", Value: 1, Usage: "data-parallel training in this many local processes: --batch-size is the global batch, each process trains on its share and the framework averages the gradients every step (rank, world size and free ports are chosen)"},
		&cli.IntFlag{Name: "rank", Usage: "data-parallel across machines: this process's rank (default: $RANK)"},
		&cli.IntFlag{Name: "world-size", Usage: "data-parallel across machines: the number of processes (default: $WORLD_SIZE)"},
		&cli.StringFlag{Name: "master", Usage: "data-parallel across machines: HOST:PORT of rank 0 (default: $MASTER_ADDR:$MASTER_PORT); rank 0 listens on PORT (fwbench's rendezvous) and PORT+1 (libtorch's store), each rank on PORT+2+rank (TensorFlow's server)"},
		&cli.StringFlag{Name: "workers", Usage: "TensorFlow across machines: every rank's server HOST:PORT, comma-separated in rank order (default: the address each rank reaches the master from, port PORT+2+rank)"},
		&cli.DurationFlag{Name: "dist-timeout", Usage: "how long the rendezvous, one step's exchange and one all-reduce (TensorFlow: one step, beyond its longest so far) wait for the other processes (0: 30m; a process that dies is noticed within seconds regardless)"},
	}
}

// parallelSet reports whether any flag or variable asks this process to be one rank of a
// group started elsewhere (--world-size, --rank, --master, or torchrun's WORLD_SIZE).
func parallelSet(c *cli.Context) bool {
	if _, ok := os.LookupEnv("WORLD_SIZE"); ok {
		return true
	}
	for _, name := range []string{"rank", "world-size", "master", "workers"} {
		if c.IsSet(name) {
			return true
		}
	}
	return false
}

// parallelConfig reads this rank's place from torchrun's variables, with the flags winning.
func parallelConfig(c *cli.Context) (dist.Config, error) {
	cfg, _, err := dist.FromEnv(os.Getenv)
	if err != nil {
		return cfg, fmt.Errorf("fwbench: %w", err)
	}
	if c.IsSet("rank") {
		cfg.Rank = c.Int("rank")
	}
	if c.IsSet("world-size") {
		cfg.WorldSize = c.Int("world-size")
	}
	if c.IsSet("master") {
		cfg.Master = c.String("master")
	}
	if c.IsSet("workers") {
		cfg.Workers = nil
		for _, w := range strings.Split(c.String("workers"), ",") {
			cfg.Workers = append(cfg.Workers, strings.TrimSpace(w))
		}
	}
	cfg.Timeout = c.Duration("dist-timeout")
	if cfg.Timeout < 0 {
		return cfg, fmt.Errorf("fwbench: %w: --dist-timeout %v is negative", compare.ErrInvalid, cfg.Timeout)
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = defaultDistTimeout
	}
	if err := cfg.Validate(); err != nil {
		return cfg, fmt.Errorf("fwbench: %w", err)
	}
	return cfg, nil
}

// defaultDistTimeout bounds the rendezvous, each step's exchange and each all-reduce. The
// other ranks wait at the next step's exchange while rank 0 validates and writes its
// checkpoint, which can take minutes on a large validation set; a rank that dies is noticed
// within seconds anyway (dist's heartbeats), so this only bounds a rank that lives but hangs.
const defaultDistTimeout = 30 * time.Minute

// parallelRefusals holds, per framework, what its driver's data-parallel mode cannot do,
// checked before any rank starts (driver files fill it).
var parallelRefusals = map[string]func(compare.Spec) error{}

// checkParallel refuses, before any process starts, a run that cannot be data-parallel on n
// ranks, local of them on this machine.
func checkParallel(s compare.Spec, n, local int) error {
	if err := compare.CheckParallel(s, n); err != nil {
		return err
	}
	f, ok := compare.LookupFramework(s.Framework)
	if ok && f.NewParallel == nil {
		return fmt.Errorf("fwbench: %w: %s has no data-parallel mode in this build", compare.ErrInvalid, f.Name)
	} else if ok && parallelRefusals[f.Name] != nil {
		if err := parallelRefusals[f.Name](s); err != nil {
			return fmt.Errorf("fwbench: %w: %v", compare.ErrInvalid, err)
		}
	}
	if n > dist.MaxWorldSize {
		return fmt.Errorf("fwbench: %w: --nproc %d is above %d", compare.ErrInvalid, n, dist.MaxWorldSize)
	}
	if ok && local > 1 && s.GPU() {
		return checkRankGPUs(f, s, local)
	}
	return nil
}

// checkRankGPUs refuses local data-parallel ranks on CUDA without a GPU each: NCCL does not
// run two ranks on one GPU. Each rank trains on cuda:LOCAL_RANK (rankDevice).
func checkRankGPUs(f compare.Framework, s compare.Spec, local int) error {
	if strings.Contains(s.Device, ":") {
		return fmt.Errorf("fwbench: %w: --device %s would put all %d local processes on one GPU; data-parallel on CUDA needs a GPU per process: use --gpu (process r trains on cuda:r)",
			compare.ErrInvalid, s.Device, local)
	}
	if f.CUDADevices == nil {
		return nil // CheckGPU refuses the device
	}
	devs, err := f.CUDADevices()
	if err == nil && len(devs) < local {
		err = fmt.Errorf("%d found", len(devs))
	}
	if err != nil {
		return fmt.Errorf("fwbench: %w: %d data-parallel processes on CUDA need %d GPUs, one each: %v", compare.ErrInvalid, local, local, err)
	}
	return nil
}

// rankDevice is the device of the rank with local rank lr: cuda:lr where the recipe asks for
// "cuda" (--gpu), so that a machine's ranks take a GPU each; the recipe's device otherwise.
func rankDevice(device string, lr int) string {
	if strings.EqualFold(strings.TrimSpace(device), "cuda") {
		return "cuda:" + strconv.Itoa(lr)
	}
	return device
}

// launchGrace is how long the other ranks get to stop on their own after one failed or
// after Ctrl-C, before the launcher kills them: rank 0 may be writing its checkpoint.
const launchGrace = 60 * time.Second

// launch runs `fwbench train --nproc n`: n local ranks of the same command line. Each rank
// gets torchrun's variables and --nproc=1; unless --threads was given, the machine's cores
// are shared out (each rank gets NumCPU/n intra- and inter-op threads, at least 1), so that
// n processes do not oversubscribe the cores one process would use.
func launch(c *cli.Context, s compare.Spec, n int) error {
	if err := checkParallel(s, n, n); err != nil {
		return err
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("fwbench: %w", err)
	}
	args := append([]string{exe}, os.Args[1:]...)
	args = append(args, "--nproc=1")
	if !c.IsSet("threads") {
		t := strconv.Itoa(max(1, runtime.NumCPU()/n))
		args = append(args, "--threads="+t)
		if !c.IsSet("inter-op-threads") {
			args = append(args, "--inter-op-threads="+t)
		}
	}
	err = dist.Launch(c.Context, dist.LaunchOptions{N: n, Args: args, Env: os.Environ(), Stdout: os.Stdout, Stderr: os.Stderr, Grace: launchGrace})
	var re *dist.RankError
	if errors.As(err, &re) {
		// The rank printed its own reason; pass its status on (2: the input was refused).
		return cli.Exit(fmt.Sprintf("fwbench: %v", err), re.Code)
	}
	return err
}

// lostExit bounds how long a rank lives after its group broke: the training loop stops at
// its next exchange, but a native all-reduce waiting for a dead peer may not return.
const lostExit = 15 * time.Second

// joinGroup joins this rank's group, and watches it: when the group breaks (a rank died, the
// master vanished), cancel stops the run and the process exits within lostExit even if a
// native call does not return. stop ends the watch.
func joinGroup(ctx context.Context, cfg dist.Config, s compare.Spec, cancel context.CancelFunc) (g *dist.Group, stop func(), err error) {
	g, err = dist.Join(ctx, cfg, compare.RecipeHash(s))
	if errors.Is(err, dist.ErrMismatch) { // ranks started with different recipes: the user's to fix
		return nil, nil, fmt.Errorf("fwbench: rank %d: %w: %w", cfg.Rank, compare.ErrInvalid, err)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("fwbench: rank %d: %w", cfg.Rank, err)
	}
	done := make(chan struct{})
	go func() {
		select {
		case <-g.Lost():
			if !g.FailedHere() { // this rank's own failure is printed once, by main
				fmt.Fprintf(os.Stderr, "fwbench: rank %d: %v; stopping\n", cfg.Rank, g.Err())
			}
			cancel()
			time.Sleep(lostExit)
			fmt.Fprintf(os.Stderr, "fwbench: rank %d: still blocked %v after the group broke; exiting\n", cfg.Rank, lostExit)
			os.Exit(1)
		case <-done:
		}
	}()
	return g, func() { close(done) }, nil
}

// distGroup adapts dist.Group to compare.Group.
type distGroup struct{ *dist.Group }

func (g distGroup) Step(ctx context.Context, v compare.StepValues) (compare.StepValues, error) {
	r, err := g.Group.Step(ctx, dist.Vals{Loss: v.LossSum, Correct: v.Correct, Images: v.Images, Stop: v.Stop})
	return compare.StepValues{LossSum: r.Loss, Correct: r.Correct, Images: r.Images, Stop: r.Stop}, err
}
