package recipe

import (
	"fmt"
	"time"
)

// The data-parallel backends a driver reports (Info.Settings["backend"] and
// the run record's "backend").
const (
	BackendGloo      = "gloo"            // libtorch's c10d ProcessGroupGloo (CPU)
	BackendNCCL      = "nccl"            // libtorch's c10d ProcessGroupNCCL (CUDA)
	BackendGRPC      = "grpc+collective" // TensorFlow's distributed runtime with collective ops
	SettingBackend   = "backend"
	SettingWorldSize = "world_size"
)

// DefaultCollectiveTimeout bounds how long one collective waits for the other
// ranks when Parallel.Timeout is zero.
const DefaultCollectiveTimeout = 5 * time.Minute

// Parallel places one process in a data-parallel run of WorldSize processes,
// which a driver joins through its framework's own distributed runtime
// (torchrun: c10d; tfrun: TensorFlow's gRPC server and collective ops). The
// zero value (WorldSize 0) is a single-process run with no process group.
//
// Semantics are those of single-process training on the global batch: every
// rank starts from the same weights, trains on its share of each global batch
// (dataset.LoaderConfig.Shard) and averages the gradients over all ranks
// every step before the optimizer's update, so that every rank holds the
// same parameters after it. BatchNorm uses each rank's own batch statistics
// (torch DDP's default); only rank 0's running statistics are saved.
type Parallel struct {
	Rank, WorldSize int
	// Store is host:port of the rendezvous store libtorch's c10d uses
	// (a TCPStore that rank 0 serves).
	Store string
	// Workers is every rank's TensorFlow server address (host:port), indexed
	// by rank; rank Rank's server listens on Workers[Rank].
	Workers []string
	// Timeout bounds one collective's wait for the other ranks
	// (DefaultCollectiveTimeout when zero).
	Timeout time.Duration
}

// Enabled reports whether p asks for a process group.
func (p Parallel) Enabled() bool { return p.WorldSize > 0 }

// CollectiveTimeout returns p.Timeout, or DefaultCollectiveTimeout when unset.
func (p Parallel) CollectiveTimeout() time.Duration {
	if p.Timeout > 0 {
		return p.Timeout
	}
	return DefaultCollectiveTimeout
}

// Validate checks p's rank and world size; the addresses are the
// framework's to check.
func (p Parallel) Validate() error {
	if !p.Enabled() {
		if p.Rank != 0 || p.WorldSize < 0 {
			return fmt.Errorf("recipe: %w: rank %d with world size %d", ErrInvalid, p.Rank, p.WorldSize)
		}
		return nil
	}
	if p.Rank < 0 || p.Rank >= p.WorldSize {
		return fmt.Errorf("recipe: %w: rank %d is outside [0, %d) (world size %d)", ErrInvalid, p.Rank, p.WorldSize, p.WorldSize)
	}
	if p.Timeout < 0 {
		return fmt.Errorf("recipe: %w: collective timeout %v is negative", ErrInvalid, p.Timeout)
	}
	return nil
}
