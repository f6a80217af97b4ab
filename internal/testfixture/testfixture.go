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
	"encoding/binary"
	"hash/crc32"
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

// PNGHeader returns a PNG whose IHDR declares w×h RGB pixels of bitDepth bits per channel (8
// or 16), with valid CRCs and an empty image body: its header passes a pixel limit above w·h,
// and decoding it fails as truncated. Tests of size limits use it.
func PNGHeader(w, h uint32, bitDepth byte) []byte {
	chunk := func(typ string, data []byte) []byte {
		out := binary.BigEndian.AppendUint32(nil, uint32(len(data)))
		out = append(out, typ...)
		out = append(out, data...)
		return binary.BigEndian.AppendUint32(out, crc32.ChecksumIEEE(append([]byte(typ), data...)))
	}
	ihdr := binary.BigEndian.AppendUint32(nil, w)
	ihdr = binary.BigEndian.AppendUint32(ihdr, h)
	ihdr = append(ihdr, bitDepth, 2, 0, 0, 0)
	out := []byte("\x89PNG\r\n\x1a\n")
	out = append(out, chunk("IHDR", ihdr)...)
	out = append(out, chunk("IDAT", nil)...)
	return append(out, chunk("IEND", nil)...)
}
