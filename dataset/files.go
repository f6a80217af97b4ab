package dataset

import (
	"fmt"
	"io/fs"
	"os"
	"sync"
	"syscall"
)

// openRegular opens path for reading only if it is a regular file. It opens with
// O_NONBLOCK, so that a named pipe (or a device) named like an image cannot block the
// open, and checks the type of what it opened (no window between a check and the open).
// O_NONBLOCK has no effect on reads from a regular file.
func openRegular(path string) (*os.File, fs.FileInfo, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, nil, unreadable(path, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, unreadable(path, err)
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, nil, notRegular(path, st.Mode())
	}
	return f, st, nil
}

// notRegular is the error for a path that is not a regular file.
func notRegular(path string, m fs.FileMode) error {
	return &ImageError{Path: path, Kind: ErrUnreadable, Reason: "not a regular file (" + kindOf(m) + "), not opened"}
}

// kindOf names a file type for a Skipped reason.
func kindOf(m fs.FileMode) string {
	switch t := m.Type(); {
	case t&fs.ModeDir != 0:
		return "a folder"
	case t&fs.ModeNamedPipe != 0:
		return "a named pipe"
	case t&fs.ModeSocket != 0:
		return "a socket"
	case t&fs.ModeDevice != 0, t&fs.ModeCharDevice != 0:
		return "a device"
	case t&fs.ModeSymlink != 0:
		return "a symbolic link"
	default:
		return fmt.Sprintf("type %v", t)
	}
}

// DecodeBudget bounds the memory that decodes in flight may hold at once, in bytes of
// decoded pixels (see decodeCost). A 50-megapixel 16-bit RGB PNG costs 600 MB (8 bytes a
// pixel decoded, 4 converted), so one such image decodes at a time and twenty of them
// cannot take gigabytes however many workers there are. An image whose cost is above the
// budget decodes alone.
const DecodeBudget = 1 << 30

// decodeMem is the package-wide DecodeBudget, shared by every Open, Loader and Crawl.
var decodeMem = newBudget(DecodeBudget)

// budget is a weighted semaphore. Waits are bounded: every holder is a decode of a file
// already in memory.
type budget struct {
	mu   sync.Mutex
	cond *sync.Cond
	free int64
	max  int64
}

func newBudget(n int64) *budget {
	b := &budget{free: n, max: n}
	b.cond = sync.NewCond(&b.mu)
	return b
}

// acquire takes n bytes (at most the whole budget) and returns what to release.
func (b *budget) acquire(n int64) int64 {
	n = max(0, min(n, b.max))
	b.mu.Lock()
	for b.free < n {
		b.cond.Wait()
	}
	b.free -= n
	b.mu.Unlock()
	return n
}

func (b *budget) release(n int64) {
	b.mu.Lock()
	b.free += n
	b.mu.Unlock()
	b.cond.Broadcast()
}
