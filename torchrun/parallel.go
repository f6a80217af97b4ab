package torchrun

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"runtime"
	"strconv"
	"time"

	"github.com/fwbench/fwbench/recipe"
	"github.com/fwbench/fwbench/weights"
)

// glooIfnameEnv is torch's variable naming the network interfaces Gloo binds
// (comma-separated), which NewParallel honours as torch.distributed does.
const glooIfnameEnv = "GLOO_SOCKET_IFNAME"

// closeWaitCap bounds how long rank 0's Close waits for the other ranks to
// close: ranks in lock-step close within moments of each other.
const closeWaitCap = 30 * time.Second

// NewParallel is New for one rank of a data-parallel run: it joins p's process
// group (c10d TCPStore at p.Store, rank 0 serving it; ProcessGroupGloo on the
// CPU) after building the model. init must be the same on every rank (the
// caller checks the read-back hashes). p.WorldSize 0 means New.
//
// p is checked by p.Validate, and p.Store must be host:port with a port in
// [1, 65535]; their errors wrap recipe.ErrInvalid. A CUDA device is refused
// with an error wrapping errors.ErrUnsupported: ProcessGroupNCCL lives in
// libtorch_cuda.so, which torchrun loads at run time and never links, and c10d
// offers no way to construct it from libtorch_cpu.
//
// Joining blocks (ctx is checked before, not during) until all p.WorldSize
// ranks have connected to the store and to each other, or fails after
// p.CollectiveTimeout(). Gloo's device binds the interfaces in
// $GLOO_SOCKET_IFNAME when it is set, as torch does; otherwise the loopback
// address 127.0.0.1 when the store's host is a loopback address or
// "localhost", else this machine's address on the route to the store's host
// (the local address of a UDP socket connected to it; no packet is sent).
func NewParallel(ctx context.Context, cfg recipe.Config, init []*weights.Tensor, p recipe.Parallel) (*Trainer, error) {
	if !p.Enabled() {
		if err := p.Validate(); err != nil {
			return nil, err
		}
		return New(ctx, cfg, init)
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	host, port, err := storeAddress(p.Store)
	if err != nil {
		return nil, err
	}
	if dev, _ := recipe.ParseDevice(cfg.Device); dev.GPU {
		return nil, fmt.Errorf("torchrun: parallel: device %s: %w: data-parallel training on CUDA needs c10d's ProcessGroupNCCL, "+
			"which is in libtorch_cuda.so; torchrun loads that library at run time without linking it and cannot construct "+
			"the NCCL process group from libtorch_cpu (run data-parallel on the cpu, with gloo)", dev, errors.ErrUnsupported)
	}
	address, ifaces, err := glooDevice(host, port)
	if err != nil {
		return nil, err
	}
	t, err := New(ctx, cfg, init)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		t.Close()
		return nil, fmt.Errorf("torchrun: parallel: %w", err)
	}
	var g *group
	op := fmt.Sprintf("parallel: rank %d of %d, store %s", p.Rank, p.WorldSize, p.Store)
	t.w.do(func() {
		if g, err = nativeGroupNew(op, host, port, p.Rank, p.WorldSize, p.CollectiveTimeout(), address, ifaces); err != nil {
			return
		}
		if err = nativeAttachGroup(t.m, op, g); err != nil {
			nativeGroupFree(g, false, 0)
		}
	})
	if err != nil {
		t.Close() // frees the model
		return nil, err
	}
	t.par, t.group = p, g
	t.info.Settings[recipe.SettingBackend] = recipe.BackendGloo
	t.info.Settings[recipe.SettingWorldSize] = strconv.Itoa(p.WorldSize)
	if ifaces != "" {
		t.info.Settings["gloo_device"] = "interfaces " + ifaces
	} else {
		t.info.Settings["gloo_device"] = address
	}
	// The cleanup that New registered frees the model only; this one also leaves the group.
	t.cleanup.Stop()
	t.cleanup = runtime.AddCleanup(t, func(r native) {
		r.w.do(func() {
			nativeFree(r.m)
			nativeGroupFree(r.g, false, 0)
		})
		r.w.stop()
	}, native{t.m, t.w, g})
	return t, nil
}

// CommSeconds returns the total time training steps spent blocked on gradient
// all-reduces (the part not overlapped with the backward pass); 0 for a
// single-process Trainer. It may be called at any time, during a step too.
func (t *Trainer) CommSeconds() float64 { return math.Float64frombits(t.comm.Load()) }

// storeAddress splits p.Store into a host and a port, or returns an error
// wrapping recipe.ErrInvalid.
func storeAddress(store string) (host string, port int, err error) {
	h, ps, err := net.SplitHostPort(store)
	if err != nil {
		return "", 0, fmt.Errorf("torchrun: parallel: %w: store address %q: want host:port (%v)", recipe.ErrInvalid, store, err)
	}
	if h == "" {
		return "", 0, fmt.Errorf("torchrun: parallel: %w: store address %q has no host", recipe.ErrInvalid, store)
	}
	port, err = strconv.Atoi(ps)
	if err != nil || port < 1 || port > math.MaxUint16 {
		return "", 0, fmt.Errorf("torchrun: parallel: %w: store address %q: port %q is not in [1, 65535]", recipe.ErrInvalid, store, ps)
	}
	return h, port, nil
}

// glooDevice chooses what Gloo's device binds (see NewParallel): the
// interfaces named by $GLOO_SOCKET_IFNAME, or an address.
func glooDevice(host string, port int) (address, ifaces string, err error) {
	if v := os.Getenv(glooIfnameEnv); v != "" {
		return "", v, nil
	}
	if ip := net.ParseIP(host); host == "localhost" || (ip != nil && ip.IsLoopback()) {
		if ip != nil && ip.To4() == nil {
			return "::1", "", nil
		}
		return "127.0.0.1", "", nil
	}
	c, err := net.Dial("udp", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		return "", "", fmt.Errorf("torchrun: parallel: no local address routes to the store's host %s: %w", host, err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).IP.String(), "", nil
}

// ErrAbandoned is the reason Abandon records: the caller saw the group break.
var ErrAbandoned = errors.New("torchrun: the data-parallel group was abandoned")

// Abandon tells a parallel Trainer that its group broke outside libtorch (a rank was lost,
// the run failed elsewhere): later steps are refused and Close does not wait for the other
// ranks to close. A no-op for a single-process Trainer.
func (t *Trainer) Abandon() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.group != nil && t.groupErr == nil {
		t.groupErr = ErrAbandoned
	}
}

// closeWait is how long rank 0's Close waits for the other ranks to close.
func closeWait(p recipe.Parallel) time.Duration { return min(p.CollectiveTimeout(), closeWaitCap) }
