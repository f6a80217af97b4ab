package main

// Keras weight files are read in a child process. The HDF5 C library that package keras
// links (Debian 12's libhdf5 1.10.8) can crash on a damaged file, SIGSEGV inside H5Aread (see
// the keras package comment), and a crash in fwbench's own process would end it without a
// message. So fwbench re-registers the Keras format with a reader that runs this binary again
// with FWBENCH_INTERNAL_READ_WEIGHTS naming the file; that child reads it with keras.Read and
// writes the tensors to stdout as safetensors. A child that crashes is reported as a damaged
// file, which `train` and `compare` turn into invalid input (exit 2).

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/fwbench/fwbench/keras"
	"github.com/fwbench/fwbench/weights"
)

// readWeightsEnv, set to a file's path, makes fwbench read that Keras file, write its tensors
// to stdout as safetensors and exit, before anything else happens. It is fwbench's own
// protocol with itself, not a user setting.
const readWeightsEnv = "FWBENCH_INTERNAL_READ_WEIGHTS"

// childReadTimeout bounds a child's read; a 550 MB VGG19 file takes seconds.
const childReadTimeout = 5 * time.Minute

// childExitError is the child's exit status when keras.Read returns an error; the error's
// message is on its stderr.
const childExitError = 3

// orderKey is the safetensors metadata entry in which the child lists the tensors' names in
// keras.Read's order (the plain VGG's model.Net.Params order); the format itself stores them sorted.
const orderKey = "fwbench.order"

// childStderrMax is how much of a child's stderr is kept: the message of exit 3, or the start
// of the Go runtime's report of a fatal signal (its first line names the signal).
const childStderrMax = 64 << 10

// This init serves the child's side. By then the dynamic linker has loaded libtorch and
// libtensorflow (about a second of the child's start), and package initialisation has run every
// imported package's init and this package's driver registrations, none of which calls into
// either library; nothing of main has run.
func init() {
	if path := os.Getenv(readWeightsEnv); path != "" {
		os.Exit(serveKerasRead(path, os.Stdout, os.Stderr))
	}
}

// This init wraps the Keras format that package keras registered from its own init, which ran
// before this package's (an imported package is initialised first). Built with the nohdf5 tag,
// keras registers nothing and neither does this.
func init() {
	f, ok := weights.LookupFormat(keras.FormatName)
	if !ok {
		return
	}
	f.Read = func(path string) ([]*weights.Tensor, error) {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("keras: reading %s in a child process: %w", path, err)
		}
		return readKerasInChild(exe, path, childReadTimeout)
	}
	weights.RegisterFormat(f)
}

// serveKerasRead reads path with keras.Read and writes the tensors to stdout as safetensors,
// their order in the orderKey metadata. It returns the process's exit status: 0, or
// childExitError after writing the error to stderr.
func serveKerasRead(path string, stdout, stderr io.Writer) int {
	// A crash inside libhdf5 must not leave a core file in the user's folder (the Go runtime
	// dumps core on a fatal signal when GOTRACEBACK=crash).
	syscall.Setrlimit(syscall.RLIMIT_CORE, &syscall.Rlimit{})
	ts, err := keras.Read(path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return childExitError
	}
	names := make([]string, len(ts))
	for i, t := range ts {
		names[i] = t.Name
	}
	order, err := json.Marshal(names)
	if err != nil {
		fmt.Fprintf(stderr, "keras: %s: %v\n", path, err)
		return childExitError
	}
	w := bufio.NewWriterSize(stdout, 1<<20)
	err = weights.EncodeSafetensors(w, ts, map[string]string{orderKey: string(order)})
	if err == nil {
		err = w.Flush()
	}
	if err != nil {
		fmt.Fprintf(stderr, "keras: %s: %v\n", path, err)
		return childExitError
	}
	return 0
}

// readKerasInChild runs exe (fwbench) with readWeightsEnv naming path and decodes the tensors
// it writes. The child gets timeout to finish and may write at most 4 bytes per byte of the
// file plus 1 MiB: float32 data is at most twice a float16 file's, and an uncompressed Keras
// file holds little besides its data. A child killed by a signal, or one whose Go runtime
// reports a fatal signal (exit 2, "SIGSEGV: ..." on stderr, as a segmentation fault inside
// libhdf5 ends), crashed the HDF5 library; exit status 3 carries keras.Read's error on stderr.
func readKerasInChild(exe, path string, timeout time.Duration) ([]*weights.Tensor, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("keras: %w", err)
	}
	limit := 4*st.Size() + 1<<20
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe)
	cmd.Env = append(slices.DeleteFunc(os.Environ(), func(kv string) bool {
		return strings.HasPrefix(kv, readWeightsEnv+"=")
	}), readWeightsEnv+"="+path)
	stderr := &headBuffer{max: childStderrMax}
	cmd.Stderr = stderr
	out := &limitBuffer{max: limit, full: cancel}
	out.buf.Grow(int(min(limit, st.Size()+1<<20)))
	cmd.Stdout = out
	// The Go runtime of a crashed child exits at once; should anything else hold its pipes, Wait
	// gives up on them after WaitDelay.
	cmd.WaitDelay = 10 * time.Second
	err = cmd.Run()
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return nil, fmt.Errorf("keras: reading %s took longer than %v: the file is damaged or not a Keras weight file", path, timeout)
	case out.overflow:
		return nil, fmt.Errorf("keras: reading %s gave more than %d bytes of tensors (4 per byte of the file, and 1 MiB): the file is damaged or not a Keras weight file", path, limit)
	case err != nil:
		return nil, childError(path, err, stderr.String())
	}
	b := out.buf.Bytes()
	ts, meta, err := weights.DecodeSafetensors(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		return nil, fmt.Errorf("keras: reading %s in a child process: %w", path, err)
	}
	if ts, err = inOrder(ts, meta[orderKey]); err != nil {
		return nil, fmt.Errorf("keras: reading %s in a child process: %w", path, err)
	}
	return ts, nil
}

// fatalSignal matches the Go runtime's report of a fatal signal: "SIGSEGV: segmentation
// violation" for one that arrived during a cgo call, "[signal SIGSEGV: segmentation violation
// code=... addr=... pc=...]" after "fatal error: unexpected signal" for one in Go code.
var fatalSignal = regexp.MustCompile(`(?m)^(?:\[signal )?(SIG[A-Z0-9]+: [^\n\]]*?)(?: code=|\]|$)`)

// childError turns a failed child's exit into Read's error.
func childError(path string, err error, stderr string) error {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return fmt.Errorf("keras: reading %s in a child process: %w", path, err)
	}
	ws, _ := ee.Sys().(syscall.WaitStatus)
	switch {
	case ws.Signaled() && (ws.Signal() == syscall.SIGINT || ws.Signal() == syscall.SIGTERM):
		return fmt.Errorf("keras: reading %s: interrupted (%v)", path, ee)
	case ws.Signaled():
		return crashed(path, ee.String())
	case ee.ExitCode() == childExitError && strings.TrimSpace(stderr) != "":
		return errors.New(strings.TrimSpace(stderr))
	}
	if m := fatalSignal.FindStringSubmatch(stderr); ee.ExitCode() == 2 && m != nil {
		return crashed(path, m[1])
	}
	first, _, _ := strings.Cut(strings.TrimSpace(stderr), "\n")
	return fmt.Errorf("keras: reading %s in a child process: %v: %s", path, ee, first)
}

func crashed(path, signal string) error {
	return fmt.Errorf("keras: reading %s crashed the HDF5 library (%s): the file is damaged or not a Keras weight file", path, signal)
}

// inOrder returns ts in the order that order (a JSON list of names) gives.
func inOrder(ts []*weights.Tensor, order string) ([]*weights.Tensor, error) {
	var names []string
	if err := json.Unmarshal([]byte(order), &names); err != nil {
		return nil, fmt.Errorf("metadata %s: %w", orderKey, err)
	}
	if len(names) != len(ts) {
		return nil, fmt.Errorf("metadata %s lists %d names for %d tensors", orderKey, len(names), len(ts))
	}
	byName := make(map[string]*weights.Tensor, len(ts))
	for _, t := range ts {
		byName[t.Name] = t
	}
	out := make([]*weights.Tensor, len(names))
	for i, name := range names {
		if out[i] = byName[name]; out[i] == nil {
			return nil, fmt.Errorf("metadata %s names %q, which is not a tensor (or twice)", orderKey, name)
		}
		delete(byName, name)
	}
	return out, nil
}

// errTooMuch is limitBuffer's write error once the child wrote more than its bound.
var errTooMuch = errors.New("more output than expected")

// limitBuffer keeps what is written to it, up to max bytes; a write past max calls full (which
// stops the child) and fails.
type limitBuffer struct {
	buf      bytes.Buffer
	max      int64
	full     func()
	overflow bool
}

func (l *limitBuffer) Write(p []byte) (int, error) {
	if l.overflow || int64(l.buf.Len())+int64(len(p)) > l.max {
		l.overflow = true
		l.full()
		return 0, errTooMuch
	}
	return l.buf.Write(p)
}

// headBuffer keeps the first max bytes written to it and drops the rest.
type headBuffer struct {
	buf bytes.Buffer
	max int
}

func (h *headBuffer) Write(p []byte) (int, error) {
	if room := h.max - h.buf.Len(); room > 0 {
		h.buf.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func (h *headBuffer) String() string { return h.buf.String() }
