package tfrun

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"sort"
	"strconv"
	"sync/atomic"
	"time"

	tf "github.com/galeone/tensorflow/tensorflow/go"
	config "github.com/galeone/tensorflow/tensorflow/go/core/protobuf/for_core_protos_go_proto"
	"github.com/galeone/tensorflow/tensorflow/go/op"
	"google.golang.org/protobuf/proto"

	"github.com/fwbench/fwbench/dataset"
	"github.com/fwbench/fwbench/recipe"
	"github.com/fwbench/fwbench/weights"
)

// The data-parallel cluster: one job, one task per rank; rank 0 leads the
// collective groups.
const (
	parallelJob = "worker"
	groupLeader = "/job:" + parallelJob + "/replica:0/task:0"
	// groupKey is the collective group of the gradient all-reduces; every
	// rank's server has its own collective executor, so one key serves.
	groupKey = 1
	// collectiveGraphKey is fed as RunOptions.experimental.collective_graph_key
	// with every training step, so that the ranks' masters derive the
	// same step ids for the step's collectives from the group leader's
	// sequence (a graph of CollectiveReduceV2 ops, whose instance keys are
	// inputs, gets no key of its own).
	collectiveGraphKey = 1
)

// parallel is a Trainer's place in a data-parallel run.
type parallel struct {
	p      recipe.Parallel
	srv    *server
	device string // this rank's TensorFlow device, "/job:worker/replica:0/task:R/device:CPU:0"
	// stepOpts are the RunOptions of a training step.
	stepOpts *config.RunOptions
	// weight is the reused gradient weight input; global is the reused
	// buffer of a global batch's dropout mask.
	weight feedTensor
	global []float32
	commNs atomic.Int64 // time in the collectives, summed over steps
	// longest is the longest training step this rank has completed.
	longest time.Duration
	// stuck is set when a step was abandoned (see runParallelStep); it is
	// closed when that step's Session.Run returns, which may be never.
	stuck chan struct{}
}

// ErrStalled is returned by every call on a data-parallel Trainer after a
// training step was abandoned because the other ranks did not answer
// within the collective timeout (see runParallelStep): the step may still
// be running in TensorFlow, and the Trainer can only be closed.
var ErrStalled = errors.New("tfrun: a training step was abandoned waiting for the other ranks; the trainer can only be closed")

// allReduce builds the gradient average of a data-parallel graph.
type allReduce struct {
	worldSize int
	hint      string // communication_hint
}

// build returns the average over the ranks of grads, each rank's gradient
// multiplied first by the fed gradWeight N·W/G (N: the rank's shard, W: the
// world size, G: the global batch), so that the average, Σ_r (N_r/G)·g_r,
// is the gradient of the global batch's mean loss also when the shards
// differ in size (with equal shards the weight is exactly 1). Each gradient
// is one CollectiveReduceV2 (merge Add, final Div) with its own instance key
// (its index + 1) in group groupKey of WorldSize ranks, and no timeout of
// its own: runParallelStep bounds the step (see there why).
func (a *allReduce) build(s *op.Scope, m *netGraph, grads []tf.Output) []tf.Output {
	m.gradWeight = op.Placeholder(s.SubScope("weight"), tf.Float, op.PlaceholderShape(tf.ScalarShape()))
	size := op.Const(s.SubScope("group_size"), int32(a.worldSize))
	key := op.Const(s.SubScope("group_key"), int32(groupKey))
	out := make([]tf.Output, len(grads))
	for i, g := range grads {
		gs := s.SubScope("grad")
		w := op.Mul(gs, g, castTo(gs, m.gradWeight, g.DataType()))
		inst := op.Const(gs.SubScope("instance_key"), int32(i+1))
		out[i] = op.CollectiveReduceV2(gs, w, size, key, inst, nil, "Add", "Div",
			op.CollectiveReduceV2CommunicationHint(a.hint))
		if out[i].Op != nil {
			m.collectives = append(m.collectives, out[i].Op.Name())
		}
	}
	return out
}

// NewParallel is New for one rank of a data-parallel run: it starts this
// rank's TF gRPC server at p.Workers[p.Rank] (cluster: job "worker", one
// task per entry of p.Workers), runs the session against it and averages
// the gradients with collective all-reduces in the graph. p.WorldSize 0
// means New.
//
// Every rank must be given the same cfg and init, and must run the same
// number of training steps; TrainStep then takes this rank's shard of each
// global batch (dataset.Batch.Offset, GlobalN). Evaluate, Logits, Weights
// and checkpoints are local to the rank. See the package doc ("Data
// parallel") for the server's lifetime, timeouts and process-wide limits.
func NewParallel(ctx context.Context, cfg recipe.Config, init []*weights.Tensor, p recipe.Parallel) (*Trainer, error) {
	if !p.Enabled() {
		if err := p.Validate(); err != nil {
			return nil, err
		}
		return New(ctx, cfg, init)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if err := checkWorkers(p); err != nil {
		return nil, fmt.Errorf("tfrun: new: %w: %w", recipe.ErrInvalid, err)
	}
	return newTrainer(ctx, cfg, init, &p)
}

// checkWorkers checks that p names one host:port per rank, each once.
func checkWorkers(p recipe.Parallel) error {
	if len(p.Workers) != p.WorldSize {
		return fmt.Errorf("%d worker addresses for world size %d", len(p.Workers), p.WorldSize)
	}
	seen := map[string]int{}
	for i, w := range p.Workers {
		host, port, err := net.SplitHostPort(w)
		if err != nil {
			return fmt.Errorf("worker %d address %q: %w", i, w, err)
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 || host == "" {
			return fmt.Errorf("worker %d address %q: want host:port with a port in [1, 65535]", i, w)
		}
		if j, ok := seen[w]; ok {
			return fmt.Errorf("workers %d and %d have the same address %q", j, i, w)
		}
		seen[w] = i
	}
	return nil
}

// startParallel starts this rank's server and returns the session options
// of a session against it. sc is the session's ConfigProto, which becomes
// the server's default session config too (its devices are made with it).
func (t *Trainer) startParallel(sc *config.ConfigProto) (*tf.SessionOptions, error) {
	par := t.par
	p := par.p
	tasks := map[int32]string{}
	for i, w := range p.Workers {
		tasks[int32(i)] = w
	}
	task := "/job:" + parallelJob + "/task:" + strconv.Itoa(p.Rank)
	// A distributed session has no pools of its own: the server's devices
	// are made with sc's intra-op threads (in a pool of their own, see
	// envOwnPool) and its inter-op threads size the worker's pool.
	sc.UsePerSessionThreads = false
	sc.DeviceFilters = []string{task}
	if sc.Experimental == nil {
		sc.Experimental = &config.ConfigProto_Experimental{}
	}
	sc.Experimental.CollectiveGroupLeader = groupLeader
	def, err := proto.Marshal(&config.ServerDef{
		Cluster:              &config.ClusterDef{Job: []*config.JobDef{{Name: parallelJob, Tasks: tasks}}},
		JobName:              parallelJob,
		TaskIndex:            int32(p.Rank),
		Protocol:             "grpc",
		DefaultSessionConfig: sc,
	})
	if err != nil {
		return nil, fmt.Errorf("server def: %w", err)
	}
	cfg, err := proto.Marshal(sc)
	if err != nil {
		return nil, fmt.Errorf("session config: %w", err)
	}
	if par.srv, err = newServer(def); err != nil {
		return nil, fmt.Errorf("rank %d at %s: %w", p.Rank, p.Workers[p.Rank], err)
	}
	par.stepOpts = &config.RunOptions{
		TraceLevel:   config.RunOptions_FULL_TRACE,
		Experimental: &config.RunOptions_Experimental{CollectiveGraphKey: collectiveGraphKey},
	}
	return &tf.SessionOptions{Target: par.srv.target, Config: cfg}, nil
}

// runParallelStep runs a training step of a data-parallel Trainer and adds
// the time its collectives took (from the step's trace) to CommSeconds.
//
// The step's bound is kept here, not by CollectiveReduceV2's
// timeout_seconds: in TensorFlow 2.21 that timer completes the op as soon
// as it aborts, while the ring still has sends and RecvBuf calls to the
// silent peer in flight, and the step's end then frees what they call back
// into (SIGSEGV in RingAlg::StartAbort, SIGABRT on a freed
// CancellationManager's mutex: once in CI, and here under load after 36
// stalls, and after 2 with all gradients in one collective). So the
// collectives wait without a timeout, and a step that has run for the
// collective timeout plus the longest step this rank has completed (twice
// the timeout for the first, which also waits for the peers to start) is
// abandoned: Session.Run stays blocked in a goroutine until a peer's
// failure ends it or the process exits, the step returns an error, and
// every later call returns ErrStalled. A peer that dies still fails the
// step through TensorFlow (its connections reset), which aborts safely:
// the ring finishes its calls before the op completes.
func (t *Trainer) runParallelStep(feeds map[tf.Output]*tf.Tensor, fetches []tf.Output) ([]float64, error) {
	type result struct {
		out []float64
		md  *config.RunMetadata
		err error
	}
	done := make(chan result, 1)
	returned := make(chan struct{})
	go func() {
		defer close(returned)
		out, md, err := runWithOptions(t.sess, t.par.stepOpts, feeds, fetches, t.m.train)
		done <- result{out, md, err}
	}()
	timeout := t.par.p.CollectiveTimeout()
	extra := t.par.longest
	if extra == 0 {
		extra = timeout
	}
	limit := timeout + extra
	if limit < timeout { // beyond time.Duration's range
		limit = math.MaxInt64
	}
	start := time.Now()
	timer := time.NewTimer(limit)
	defer timer.Stop()
	select {
	case r := <-done:
		if r.err != nil {
			return nil, r.err
		}
		t.par.longest = max(t.par.longest, time.Since(start))
		t.par.commNs.Add(collectiveNanos(r.md, t.m.collectives))
		return r.out, nil
	case <-timer.C:
		t.par.stuck = returned
		return nil, fmt.Errorf("rank %d: no answer from the other ranks after %v (collective timeout %v); the step is abandoned",
			t.par.p.Rank, limit.Round(time.Millisecond), timeout)
	}
}

// abandoned reports whether a step was abandoned and still runs in
// TensorFlow; Close then must not free what it uses.
func (p *parallel) abandoned() bool {
	if p == nil || p.stuck == nil {
		return false
	}
	select {
	case <-p.stuck:
		return false
	default:
		return true
	}
}

// span is a node's run, [start, end) in nanoseconds.
type span struct{ start, end int64 }

// collectiveNanos returns the time during which at least one of the named
// nodes (the collectives) ran and no other node of the step did, from the
// step stats of md: the union of the collectives' runs minus the union of
// every other node's, so that collectives that overlap count once and the
// part of an all-reduce hidden behind the backward pass not at all.
func collectiveNanos(md *config.RunMetadata, names []string) int64 {
	if md == nil || md.StepStats == nil {
		return 0
	}
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	var comm, compute []span
	for _, d := range md.StepStats.DevStats {
		for _, n := range d.NodeStats {
			start, end := n.AllStartNanos, n.AllStartNanos+n.AllEndRelNanos
			if start == 0 {
				start, end = n.AllStartMicros*1000, (n.AllStartMicros+n.AllEndRelMicros)*1000
			}
			if end <= start {
				continue
			}
			if want[n.NodeName] {
				comm = append(comm, span{start, end})
			} else {
				compute = append(compute, span{start, end})
			}
		}
	}
	comm, compute = union(comm), union(compute)
	var total int64
	j := 0
	for _, c := range comm {
		total += c.end - c.start
		for j < len(compute) && compute[j].end <= c.start {
			j++
		}
		for k := j; k < len(compute) && compute[k].start < c.end; k++ {
			total -= min(c.end, compute[k].end) - max(c.start, compute[k].start)
		}
	}
	return total
}

// union returns the disjoint spans, in order, that cover spans.
func union(spans []span) []span {
	sort.Slice(spans, func(i, j int) bool { return spans[i].start < spans[j].start })
	var out []span
	for _, s := range spans {
		if n := len(out); n > 0 && s.start <= out[n-1].end {
			out[n-1].end = max(out[n-1].end, s.end)
			continue
		}
		out = append(out, s)
	}
	return out
}

// CommSeconds returns the time this rank's training steps spent in the
// gradient all-reduces and nothing else, summed over steps: per step, the
// time during which at least one CollectiveReduceV2 node ran and no other
// node of the step did, read from the step's trace (RunMetadata step
// stats; a distributed session returns them only under FULL_TRACE, which
// every parallel step asks for). All-reduces that overlap the backward
// pass count only where nothing else runs; the wait for a slower rank to
// reach the collective counts. 0 for a Trainer made by New.
func (t *Trainer) CommSeconds() float64 {
	if t.par == nil {
		return 0
	}
	return float64(t.par.commNs.Load()) / 1e9
}

// shardFeeds checks b's place in its global batch and returns the feeds of
// a data-parallel step: the gradient weight N·W/G.
func (t *Trainer) shardFeeds(b *dataset.Batch, feeds map[tf.Output]*tf.Tensor) error {
	if b.GlobalN == 0 && t.par.p.WorldSize > 1 {
		return errors.New("batch: a data-parallel rank needs its shard of a global batch (GlobalN 0)")
	}
	w := float32(float64(b.N) * float64(t.par.p.WorldSize) / float64(b.Global()))
	x, err := t.par.weight.set(nil, asBytes([]float32{w}))
	if err != nil {
		return err
	}
	feeds[t.m.gradWeight] = x
	return nil
}
