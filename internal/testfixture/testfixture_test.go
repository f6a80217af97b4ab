package testfixture

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// gz returns b gzip-compressed.
func gz(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestPath(t *testing.T) {
	content := bytes.Repeat([]byte("fwbench fixture "), 1000)
	tests := []struct {
		stored string // the stored file's name
		layers int    // gzip layers around content
		want   string // the copy's name
	}{
		{"w.pth", 0, "w.pth"},
		{"w.weights.h5.gz", 1, "w.weights.h5"},
		{"w.pth.gz.gz", 2, "w.pth"},
	}
	for _, tt := range tests {
		t.Run(tt.stored, func(t *testing.T) {
			b := content
			for range tt.layers {
				b = gz(t, b)
			}
			src := filepath.Join(t.TempDir(), tt.stored)
			if err := os.WriteFile(src, b, 0o644); err != nil {
				t.Fatal(err)
			}
			got := Path(t, src)
			if filepath.Base(got) != tt.want {
				t.Errorf("name: got %s, want %s", filepath.Base(got), tt.want)
			}
			if got == src {
				t.Errorf("got the stored file %s, want a copy", src)
			}
			data, err := os.ReadFile(got)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(data, content) {
				t.Errorf("content: got %d bytes, want the %d stored before %d gzip layer(s)", len(data), len(content), tt.layers)
			}
		})
	}
}

// fatalRecorder is a testing.TB whose Fatalf records the message and stops
// the calling goroutine, as testing.T's does.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (f *fatalRecorder) Helper() {}

func (f *fatalRecorder) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func TestPathFails(t *testing.T) {
	dir := t.TempDir()
	// One gzip layer where the name promises two: the inner "stream" is not gzip.
	if err := os.WriteFile(filepath.Join(dir, "once.pth.gz.gz"), gz(t, []byte("plain bytes")), 0o644); err != nil {
		t.Fatal(err)
	}
	// A gzip stream cut short: its checksum and the end are missing.
	whole := gz(t, bytes.Repeat([]byte("x"), 4096))
	if err := os.WriteFile(filepath.Join(dir, "cut.pth.gz"), whole[:len(whole)-6], 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		file string
		want string // in the message
	}{
		{"missing.pth.gz", "no such file"},
		{"once.pth.gz.gz", "invalid header"},
		{"cut.pth.gz", "unexpected EOF"},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			rec := &fatalRecorder{TB: t}
			done := make(chan string, 1)
			go func() {
				defer func() { done <- rec.msg }()
				p := Path(rec, filepath.Join(dir, tt.file))
				rec.msg = "returned " + p
			}()
			if msg := <-done; !strings.Contains(msg, tt.want) || !strings.HasPrefix(msg, "testfixture: ") {
				t.Errorf("got %q, want a t.Fatal message with %q", msg, tt.want)
			}
		})
	}
}
