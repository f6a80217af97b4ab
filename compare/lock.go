package compare

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
)

// LockFile is the name of the lock file that Run keeps in its output folder while it runs.
const LockFile = ".fwbench.lock"

// ErrLocked marks an output folder held by another running comparison. It is returned
// together with ErrInvalid (the CLI exits 2: the command was refused before any work began).
var ErrLocked = errors.New("output folder is in use")

// Lock is an exclusive hold on an output folder: flock(2) on dir/.fwbench.lock, which holds
// the holder's PID. The kernel releases the lock when its process ends, however it ends
// (kill -9 included), so a lock left behind by a dead process is taken over by the next
// LockDir. The lock file stays in the folder; Close empties it.
type Lock struct {
	f *os.File
	// Stale is the PID that a previous holder left in the lock file when it ended without
	// Close (a crash or kill -9); 0 when the lock was released cleanly or never taken.
	Stale int
}

// LockDir takes the lock on dir, which must exist, without waiting. When another process
// (or another Lock in this process) holds it, the error wraps ErrInvalid and ErrLocked and
// names the folder and the holder's PID.
func LockDir(dir string) (*Lock, error) {
	path := filepath.Join(dir, LockFile)
	// No O_TRUNC: the file holds the current holder's PID until we own the lock.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("compare: %w: output folder %q: lock: %v", ErrInvalid, dir, err)
	}
	if err := flock(f); err != nil {
		pid := readPID(f)
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			holder := "another process"
			if pid > 0 {
				holder = fmt.Sprintf("process %d", pid)
			}
			return nil, fmt.Errorf("compare: %w: %w: %q is used by %s (fwbench compare); wait for it to finish or choose another --out",
				ErrInvalid, ErrLocked, dir, holder)
		}
		return nil, fmt.Errorf("compare: %w: output folder %q: lock: %v", ErrInvalid, dir, err)
	}
	l := &Lock{f: f, Stale: readPID(f)}
	if err := l.writePID(os.Getpid()); err != nil {
		l.Close()
		return nil, fmt.Errorf("compare: output folder %q: lock: %w", dir, err)
	}
	return l, nil
}

// flock takes an exclusive lock on f without blocking; interrupted calls are retried.
func flock(f *os.File) error {
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err != syscall.EINTR {
			return err
		}
	}
}

// readPID reads the PID in the lock file; 0 when it is empty or unreadable.
func readPID(f *os.File) int {
	b := make([]byte, 32)
	n, _ := f.ReadAt(b, 0)
	pid, err := strconv.Atoi(string(bytes.TrimSpace(b[:n])))
	if err != nil || pid <= 0 {
		return 0
	}
	return pid
}

func (l *Lock) writePID(pid int) error {
	if err := l.f.Truncate(0); err != nil {
		return err
	}
	if pid == 0 {
		return nil
	}
	_, err := l.f.WriteAt([]byte(strconv.Itoa(pid)+"\n"), 0)
	return err
}

// Close empties the lock file and releases the lock. It is safe to call twice.
func (l *Lock) Close() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.writePID(0) // a clean release leaves no PID behind
	if cerr := l.f.Close(); err == nil {
		err = cerr
	}
	l.f = nil
	if err != nil {
		return fmt.Errorf("compare: unlock: %w", err)
	}
	return nil
}
