package weights

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
)

// WriteFileAtomic writes path so that readers see either the old file or the
// complete new one, never a part: write receives a buffered writer on a
// temporary file in the same directory; when it returns nil the file is
// flushed, fsynced, renamed over path, and the directory is fsynced so that
// the rename itself survives a crash. When write (or any step) fails, the
// temporary file is removed and path is left as it was. The new file has
// mode 0644.
func WriteFileAtomic(path string, write func(w io.Writer) error) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return fmt.Errorf("weights: write %s: %w", path, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
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
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("weights: write %s: %w", path, err)
	}
	if err := syncDir(dir); err != nil {
		// The file is complete and in place; only its durability across a
		// power cut is in doubt. Report it: the caller asked for that too.
		return fmt.Errorf("weights: write %s: sync directory: %w", path, err)
	}
	return nil
}

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
