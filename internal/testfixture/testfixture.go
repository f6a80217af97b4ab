// Package testfixture hands tests decompressed copies of the gzip-compressed
// fixtures kept in testdata folders: the large periodic weight files of
// scripts/reference/make_weights_fixtures.py (gzipped twice, NAME.gz.gz) and
// make_keras_fixtures.py (gzipped once, NAME.gz), see
// scripts/reference/README.md. It is for tests only, is pure Go and needs no
// native library.
package testfixture

import (
	"bufio"
	"compress/gzip"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Path returns the path of a decompressed copy of the fixture file in
// t.TempDir(), which the test may change or delete. file is the stored file's
// path, relative to the test's package directory as usual, e.g.
// "testdata/vgg16.pth.gz.gz" or "../../keras/testdata/x.weights.h5.gz"; each
// trailing ".gz" is one gzip layer that Path removes, and the copy is named
// after file without them ("vgg16.pth"). A file without ".gz" is copied as it
// is. A missing file or a damaged stream ends the test (t.Fatal).
func Path(t testing.TB, file string) string {
	t.Helper()
	name, layers := filepath.Base(file), 0
	for strings.HasSuffix(name, ".gz") && len(name) > len(".gz") {
		name, layers = strings.TrimSuffix(name, ".gz"), layers+1
	}
	f, err := os.Open(file)
	if err != nil {
		t.Fatalf("testfixture: %v", err)
	}
	defer f.Close()
	var r io.Reader = bufio.NewReader(f)
	for range layers {
		zr, err := gzip.NewReader(r)
		if err != nil {
			t.Fatalf("testfixture: %s: %v", file, err)
		}
		r = zr
	}
	dst := filepath.Join(t.TempDir(), name)
	out, err := os.Create(dst)
	if err != nil {
		t.Fatalf("testfixture: %v", err)
	}
	if _, err := io.Copy(out, r); err != nil {
		out.Close()
		t.Fatalf("testfixture: %s: %v", file, err)
	}
	if err := out.Close(); err != nil {
		t.Fatalf("testfixture: %v", err)
	}
	return dst
}
