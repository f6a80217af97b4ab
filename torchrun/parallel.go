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
	"strings"
	"sync"
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
// CPU, ProcessGroupNCCL on CUDA) after building the model. init must be the
// same on every rank (the caller checks the read-back hashes). p.WorldSize 0
// means New.
//
// p is checked by p.Validate, and p.Store must be host:port with a port in
// [1, 65535]; their errors wrap recipe.ErrInvalid. On CUDA each rank must have
// a device of its own (NCCL refuses two ranks on one GPU), and the NCCL plugin
// must load (see NCCL); when it does not, the error wraps
// errors.ErrUnsupported. NCCL reads its own variables (NCCL_SOCKET_IFNAME,
// NCCL_DEBUG, ...) from the environment.
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
	dev, _ := recipe.ParseDevice(cfg.Device)
	var address, ifaces, builtFor string
	if dev.GPU {
		if builtFor, err = NCCL(); err != nil {
			return nil, fmt.Errorf("torchrun: parallel: device %s: %w: %w", dev, errors.ErrUnsupported, err)
		}
	} else if address, ifaces, err = glooDevice(host, port); err != nil {
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
		if g, err = nativeGroupNew(op, host, port, p.Rank, p.WorldSize, p.CollectiveTimeout(), dev.GPU, address, ifaces); err != nil {
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
	t.info.Settings[recipe.SettingWorldSize] = strconv.Itoa(p.WorldSize)
	t.info.Settings[recipe.SettingBackend] = recipe.BackendGloo
	switch {
	case dev.GPU:
		t.info.Settings[recipe.SettingBackend] = recipe.BackendNCCL
		t.info.Settings["nccl_plugin"] = builtFor
	case ifaces != "":
		t.info.Settings["gloo_device"] = "interfaces " + ifaces
	default:
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

// ncclProbe caches NCCL's answer: loading the plugin is a one-time, process-wide event.
var ncclProbe = sync.OnceValues(func() (string, error) {
	built, err := nativeNCCLProbe()
	if err != nil {
		return "", err
	}
	// The plugin says "torch X.Y.Z nccl A.B.C"; c10d's classes cross between it and
	// torchrun, so both must be compiled against the torch that is loaded.
	torch, _, _ := strings.Cut(strings.TrimPrefix(built, "torch "), " ")
	if loaded, _, _ := strings.Cut(Version(), "+"); torch != loaded {
		return "", fmt.Errorf("torchrun: nccl: the NCCL plugin was built for torch %s, the loaded libtorch is %s (rebuild it: FWBENCH_NCCL_SITE=<site-packages> scripts/setup.sh)", torch, Version())
	}
	return built, nil
})

// NCCL reports whether data-parallel training on CUDA can run in this process:
// it loads libtorch_cuda.so and the NCCL plugin libfwbench_nccl.so (a small
// library that constructs c10d's ProcessGroupNCCL, which needs the CUDA and
// NCCL headers torchrun is built without; scripts/setup.sh builds it next to
// gotorch's library when FWBENCH_NCCL_SITE names a CUDA torch's site-packages,
// as FWBENCH_VARIANT=cuda does). It returns what the plugin was compiled
// against ("torch 2.11.0 nccl 2.28.9"), or why NCCL cannot be used: no CUDA
// libtorch, no plugin, or a plugin built for another torch or NCCL. A GPU is
// not needed to load it.
func NCCL() (builtFor string, err error) { return ncclProbe() }

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
