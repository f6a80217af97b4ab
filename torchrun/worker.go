package torchrun

import "runtime"

// worker runs functions on one locked OS thread.
//
// Every native call of a Trainer goes through its worker. libtorch keeps
// per-thread state: OpenMP (libgomp) gives each thread that opens a parallel
// region its own team of worker threads, glibc malloc binds each thread to an
// arena, and the intra-op thread count is a per-thread OpenMP setting. A plain
// cgo call runs on whichever OS thread the goroutine happens to be on, and Go
// moves goroutines between threads, so every new thread would bring a new
// OpenMP team and arena: resident memory creeps up by tens of MiB each time
// (measured: +21 MiB at a thread switch after 360 steps of a 32-px vgg11;
// flat with the worker). One locked thread per Trainer keeps that state
// warm and bounded. The hand-off costs two channel operations per call.
type worker struct {
	calls chan func()
}

func newWorker() *worker {
	w := &worker{calls: make(chan func())}
	go func(calls chan func()) {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		for f := range calls {
			f()
		}
	}(w.calls)
	return w
}

// do runs f on the worker's thread and returns when it has finished.
func (w *worker) do(f func()) {
	done := make(chan struct{})
	w.calls <- func() {
		defer close(done)
		f()
	}
	<-done
}

// stop ends the worker goroutine and its thread. No call may follow.
func (w *worker) stop() { close(w.calls) }
