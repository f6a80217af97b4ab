package weights

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// ErrDestination marks an output path that fwbench refuses to write: one that exists and is
// not a regular file (a symbolic link, a directory, a FIFO, a device node, a socket), or whose
// folder is missing or not a folder.
var ErrDestination = errors.New("refused output path")

// WriteFileAtomic writes path so that readers see either the old file or the
// complete new one, never a part: write receives a buffered writer on a
// temporary file in the same directory; when it returns nil the file is
// flushed, fsynced, renamed over path, and the directory is fsynced so that
// the rename itself survives a crash. When write (or any step) fails, the
// temporary file is removed and path is left as it was. The new file has
// mode 0644.
//
// Every output file of fwbench goes through here, so the destination rules are
// stated once (CheckOutputFile): path may be missing or a regular file, which
// is replaced; anything else at path (a symbolic link, a directory, a FIFO, a
// device node) is refused with ErrDestination before anything is written. A
// symbolic link is refused rather than followed: renaming over it would
// replace the link itself, and following it would write somewhere the user did
// not name; give the link's target instead. The folder must exist: it is never
// created here.
func WriteFileAtomic(path string, write func(w io.Writer) error) error {
	if err := CheckOutputFile(path); err != nil {
		return err
	}
	return writeAtomic(osFS{}, path, write)
}

// CheckOutputFile reports whether WriteFileAtomic may write path: path is
// missing or a regular file, and its folder exists and accepts a new file.
// The CLI calls it for every output before any training starts. Errors wrap
// ErrDestination (a refused path) or the file system's error.
func CheckOutputFile(path string) error {
	if path == "" {
		return fmt.Errorf("weights: %w: empty output path", ErrDestination)
	}
	if st, err := os.Lstat(path); err == nil {
		if !st.Mode().IsRegular() {
			return fmt.Errorf("weights: %w: %s is %s, not a regular file (give a file path; a symbolic link is not followed)", ErrDestination, path, kind(st.Mode()))
		}
	} else if !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ENOTDIR) {
		return fmt.Errorf("weights: output %s: %w", path, err)
	}
	dir := filepath.Dir(path)
	st, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("weights: %w: %s: output folder %s does not exist (it is not created)", ErrDestination, path, dir)
	}
	if err != nil {
		return fmt.Errorf("weights: output %s: %w", path, err)
	}
	if !st.IsDir() {
		return fmt.Errorf("weights: %w: %s: output folder %s is not a folder", ErrDestination, path, dir)
	}
	f, err := os.CreateTemp(dir, ".write-test-*")
	if err != nil {
		return fmt.Errorf("weights: output %s: output folder is not writable: %w", path, err)
	}
	f.Close()
	os.Remove(f.Name())
	return nil
}

// kind names a non-regular file mode for error messages.
func kind(m fs.FileMode) string {
	switch {
	case m&fs.ModeSymlink != 0:
		return "a symbolic link"
	case m.IsDir():
		return "a directory"
	case m&fs.ModeNamedPipe != 0:
		return "a FIFO"
	case m&fs.ModeDevice != 0:
		return "a device node"
	case m&fs.ModeSocket != 0:
		return "a socket"
	}
	return "not a regular file (" + m.Type().String() + ")"
}

// writeAtomic is WriteFileAtomic's body on a file system (the real one, or a
// failing one in tests); it does not look at the destination.
func writeAtomic(fsys fileSystem, path string, write func(w io.Writer) error) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := fsys.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return fmt.Errorf("weights: write %s: %w", path, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			fsys.Remove(tmp)
		}
	}()
	bw := bufio.NewWriterSize(f, 1<<20)
	if err := write(bw); err != nil {
		return fmt.Errorf("weights: write %s: %w", path, err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("weights: write %s: %w", path, err)
	}
	if err := f.Chmod(0o644); err != nil {
		return fmt.Errorf("weights: write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("weights: write %s: sync: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("weights: write %s: %w", path, err)
	}
	if err := fsys.Rename(tmp, path); err != nil {
		return fmt.Errorf("weights: write %s: %w", path, err)
	}
	if err := fsys.SyncDir(dir); err != nil {
		// The file is complete and in place; only its durability across a
		// power cut is in doubt. Report it: the caller asked for that too.
		return fmt.Errorf("weights: write %s: sync directory: %w", path, err)
	}
	return nil
}

// fileSystem is every file-system call that writes a file or a checkpoint.
// osFS is the real one; tests substitute one that fails the k-th call.
type fileSystem interface {
	CreateTemp(dir, pattern string) (file, error)
	Create(path string) (file, error)
	MkdirTemp(dir, pattern string) (string, error)
	Rename(from, to string) error
	SyncDir(dir string) error
	Remove(path string) error
	RemoveAll(path string) error
}

// file is the part of *os.File the writers use.
type file interface {
	io.Writer
	Chmod(mode fs.FileMode) error
	Sync() error
	Close() error
	Name() string
}

type osFS struct{}

func (osFS) CreateTemp(dir, pattern string) (file, error) { return os.CreateTemp(dir, pattern) }
func (osFS) Create(path string) (file, error) {
	return os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
}
func (osFS) MkdirTemp(dir, pattern string) (string, error) { return os.MkdirTemp(dir, pattern) }
func (osFS) Rename(from, to string) error                  { return os.Rename(from, to) }
func (osFS) SyncDir(dir string) error                      { return syncDir(dir) }
func (osFS) Remove(path string) error                      { return os.Remove(path) }
func (osFS) RemoveAll(path string) error                   { return os.RemoveAll(path) }

// syncDir fsyncs a directory, ignoring file systems that cannot (EINVAL).
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) {
		return err
	}
	return nil
}
