package weights

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestWriteFileAtomicDestinations: a missing path or a regular file is written; a symbolic
// link, a directory, a FIFO or a device node at the path, or a missing folder, is refused
// before anything is written, and what is at the path is left as it was.
func TestWriteFileAtomicDestinations(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "target.json")
	if err := os.WriteFile(target, []byte("target"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		path    string                  // "" means a fresh path in dir
		make    func(path string) error // what is at the path before the write; nil: nothing
		refused string                  // "" means written; else part of the error
	}{
		{"missing", "", nil, ""},
		{"regular file", "", func(p string) error { return os.WriteFile(p, []byte("old"), 0o600) }, ""},
		{"symlink to a file", "", func(p string) error { return os.Symlink(target, p) }, "a symbolic link"},
		{"dangling symlink", "", func(p string) error { return os.Symlink(filepath.Join(dir, "nowhere"), p) }, "a symbolic link"},
		{"symlink to a device", "", func(p string) error { return os.Symlink("/dev/null", p) }, "a symbolic link"},
		{"directory", "", func(p string) error { return os.Mkdir(p, 0o755) }, "a directory"},
		{"FIFO", "", func(p string) error { return syscall.Mkfifo(p, 0o644) }, "a FIFO"},
		// Making a device node needs root; /dev/null is one (the case was /dev/full).
		{"device node", "/dev/null", nil, "a device node"},
	}
	for i, tt := range tests {
		path := tt.path
		if path == "" {
			path = filepath.Join(dir, fmt.Sprintf("out%d.json", i))
		}
		if tt.make != nil {
			if err := tt.make(path); err != nil {
				t.Fatalf("%s: %v", tt.name, err)
			}
		}
		before, _ := os.Lstat(path)
		err := WriteFileAtomic(path, func(w io.Writer) error { _, err := io.WriteString(w, "new"); return err })
		if tt.refused == "" {
			b, _ := os.ReadFile(path)
			if err != nil || string(b) != "new" {
				t.Errorf("%s: got %q, %v; want %q written", tt.name, b, err, "new")
			}
			continue
		}
		if !errors.Is(err, ErrDestination) || !strings.Contains(err.Error(), tt.refused) {
			t.Errorf("%s: got %v, want ErrDestination saying %q", tt.name, err, tt.refused)
		}
		after, lerr := os.Lstat(path)
		if lerr != nil || after.Mode() != before.Mode() || (after.Mode().IsRegular() != before.Mode().IsRegular()) {
			t.Errorf("%s: the path changed: got %v (%v), want mode %v", tt.name, after, lerr, before.Mode())
		}
	}
	if b, _ := os.ReadFile(target); string(b) != "target" {
		t.Errorf("symlink target: got %q, want %q untouched", b, "target")
	}
}

// TestCheckOutputFile: the check the CLI makes before training.
func TestCheckOutputFile(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "f")
	os.WriteFile(file, nil, 0o644)
	tests := []struct {
		path, want string // want "" means accepted
	}{
		{filepath.Join(dir, "new.json"), ""},
		{file, ""},
		{dir, "a directory"},
		{filepath.Join(dir, "missing", "x.json"), "does not exist (it is not created)"},
		{filepath.Join(file, "x.json"), "is not a folder"},
		{"", "empty output path"},
	}
	for _, tt := range tests {
		err := CheckOutputFile(tt.path)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%q: got %v, want nil", tt.path, err)
		case tt.want != "" && (!errors.Is(err, ErrDestination) || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("%q: got %v, want ErrDestination saying %q", tt.path, err, tt.want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "missing")); err == nil {
		t.Errorf("missing folder: got it created, want it left missing")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("folder: got %d entries, want only f (no test file left)", len(entries))
	}
}
