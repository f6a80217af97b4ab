// Package dist is fwbench's framework-independent coordination of
// data-parallel training (issue #16): the rendezvous of the ranks, a
// per-step lock-step exchange, fault detection, and the launcher of local
// ranks. The gradient all-reduce is not here: each framework's own runtime
// does it (torchrun: libtorch's c10d with gloo or NCCL; tfrun: TensorFlow's
// gRPC servers and collective ops), from the recipe.Parallel that
// Group.Parallel fills.
//
// It is pure Go and needs no native library.
//
// # Configuration
//
// A rank's Config comes from the CLI's flags (--rank, --world-size,
// --master HOST:PORT, --workers) or from torchrun's variables (FromEnv:
// RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT, LOCAL_RANK), so that the same
// command works under torchrun, a batch scheduler or Launch.
//
// # Ports
//
// With master HOST:P:
//
//   - P: this package's rendezvous and control service. Rank 0 listens on
//     exactly HOST (never on every interface); every rank, rank 0 included,
//     connects to it.
//   - P+1: libtorch's c10d TCPStore, which rank 0's driver serves
//     (Parallel.Store).
//   - P+2+r: rank r's TensorFlow gRPC server, on rank r's own host: the
//     local address of its connection to the master (127.0.0.1 on one
//     machine). Config.Workers (--workers) replaces the whole list.
//
// Across machines, every rank must reach HOST:P and HOST:P+1, and every
// rank's TensorFlow server must be reachable from every other rank. gloo
// and NCCL open further connections between the ranks on ports of their
// own choosing.
//
// # Protocol
//
// Every message is one line of JSON (at most 1 MiB) with a version field
// "v" (1) and a type "t"; every read and write has a deadline. A rank
// connects, sends hello{rank, world size, recipe hash, TensorFlow address,
// the --workers list if given}; rank 0 answers "wait" with the ranks still
// missing (every Heartbeat), then "welcome" with the exchanged worker list
// once all ranks joined, or "abort" with the reason: a rank whose protocol
// version, world size, recipe hash or worker list differs from rank 0's, a
// rank that joined twice (ErrMismatch), a rank missing at the deadline
// (ErrTimeout). After a refusal rank 0 keeps answering for MismatchLinger,
// so that the ranks still connecting learn why.
//
// After the join, Step and Check are collectives numbered from 1: every
// rank sends its part, rank 0 answers every rank with the result once the
// last part came (Step: the sums in rank order and the OR of Stop; Check:
// the ranks whose value differs from rank 0's). A collective that some rank
// did not reach within Config.Timeout ends the group, naming those ranks.
// Every connection sends a heartbeat every Heartbeat (1 s); a connection
// silent for LostAfter (10 s), or closed without "bye", is a lost rank (or
// a lost master). Rank 0 then sends every survivor "lost" with the rank and
// the reason and disconnects them; a rank that calls Fail does the same
// through rank 0. "bye" leaves in order: the rank is not lost, but a rank
// that leaves while others wait in a collective, or a collective started
// after a rank left, ends the group. Rank 0's Close waits up to CloseWait
// (30 s) for the others to leave, then stops serving.
//
// So a rank that dies is seen by the others at once when its process ends
// (the kernel closes its connection), and within LostAfter when its
// machine or network goes away.
//
// # Training loop
//
// A driver's loop calls Join, Check("weights", read-back SHA-256) after
// loading the shared initial weights, then Step once per training step
// with its loss, correct and image counts. Step is also the agreement on
// when to stop: on an interrupt a rank sets Vals.Stop, every rank sees Stop
// in the same step's result and stops there, and rank 0 writes the
// checkpoint. Step's ctx is for abandoning the run (it fails the group), so
// an interrupt must not cancel it. A loop that may block in a native
// collective also watches Lost, because a framework's all-reduce waits for
// a dead peer until its own timeout.
//
// # Launcher
//
// Launch (fwbench train --nproc N) starts N ranks of one command on this
// machine with torchrun's variables, MASTER_ADDR=127.0.0.1 and a port P
// such that P..P+N+1 are free. Each rank has its own process group and
// dies with the launcher (Linux: PR_SET_PDEATHSIG). Ctrl-C reaches the
// launcher only; it sends every rank one SIGINT and SIGKILLs what is left
// after the grace. Rank 0's output passes through; the other ranks' lines
// are prefixed "rank r: ".
package dist
