package weights

import (
	"archive/zip"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestWritePthRoundTrip(t *testing.T) {
	nan := math.Float32frombits(0x7fc00001) // a NaN with a payload: bits must survive
	five := make([]float32, 2*1*3*1*2)
	for i := range five {
		five[i] = float32(i) - 5.5
	}
	ts := []*Tensor{
		{Name: "features.0.weight", Shape: []int{2, 1, 3, 1, 2}, Data: five}, // > 3 dims: MARK ... TUPLE
		{Name: "features.0.bias", Shape: []int{2}, Data: []float32{nan, float32(math.Inf(-1))}},
		{Name: "scalar", Data: []float32{0.25}},                                   // shape (): EMPTY_TUPLE
		{Name: "empty", Shape: []int{0, 3}, Data: []float32{}},                    // no elements
		{Name: "wide", Shape: []int{1, 70000}, Data: make([]float32, 70000)},      // BININT for 70000
		{Name: "classifier.é", Shape: []int{1}, Data: []float32{math.MaxFloat32}}, // UTF-8 name
	}
	path := filepath.Join(t.TempDir(), "w.pth")
	if err := WritePth(path, ts); err != nil {
		t.Fatal(err)
	}
	back, err := ReadPth(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(back) != len(ts) {
		t.Fatalf("got %d tensors, want %d", len(back), len(ts))
	}
	for i, want := range ts {
		got := back[i]
		if got.Name != want.Name || !slices.Equal(got.Shape, want.Shape) || !slices.Equal(bits(got.Data), bits(want.Data)) {
			t.Errorf("tensor %d: got %s %v, want %s %v", i, got.Name, got.Shape, want.Name, want.Shape)
		}
	}
	if got, want := CanonicalSHA256(back), CanonicalSHA256(ts); got != want {
		t.Errorf("CanonicalSHA256 after the round trip: got %s, want %s", got, want)
	}

	// The same input always gives the same bytes, and the layout is torch's:
	// archive/ entries in torch 2.11's order, stored, data 64-byte aligned.
	var a, b bytes.Buffer
	if err := EncodePth(&a, ts); err != nil {
		t.Fatal(err)
	}
	if err := EncodePth(&b, ts); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Errorf("two encodings of the same tensors differ")
	}
	zr, err := zip.NewReader(bytes.NewReader(a.Bytes()), int64(a.Len()))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range zr.File {
		names = append(names, f.Name)
		off, err := f.DataOffset()
		if err != nil {
			t.Fatal(err)
		}
		if off%64 != 0 || f.Method != zip.Store {
			t.Errorf("%s: data at offset %d, method %d; want a multiple of 64, stored (0)", f.Name, off, f.Method)
		}
	}
	want := []string{"archive/data.pkl", "archive/.format_version", "archive/.storage_alignment", "archive/byteorder",
		"archive/data/0", "archive/data/1", "archive/data/2", "archive/data/3", "archive/data/4", "archive/data/5", "archive/version"}
	if !slices.Equal(names, want) {
		t.Errorf("entries: got %v, want %v", names, want)
	}
	for name, content := range map[string]string{"archive/.format_version": "1", "archive/.storage_alignment": "64", "archive/byteorder": "little", "archive/version": "3\n"} {
		f, _ := zr.Open(name)
		got, _ := io.ReadAll(f)
		if string(got) != content {
			t.Errorf("%s: got %q, want %q (as torch 2.11 writes it)", name, got, content)
		}
	}
}

func TestEncodePthRefuses(t *testing.T) {
	tests := []struct {
		name string
		ts   []*Tensor
		want string
	}{
		{"duplicate", []*Tensor{{Name: "a", Data: []float32{1}}, {Name: "a", Data: []float32{2}}}, `duplicate tensor name "a"`},
		{"shape and data differ", []*Tensor{{Name: "a", Shape: []int{2}, Data: []float32{1}}}, "holds 2 elements but data has 1"},
		{"empty name", []*Tensor{{Data: []float32{1}}}, "empty name"},
		{"invalid UTF-8", []*Tensor{{Name: "a\xff", Data: []float32{1}}}, "not valid UTF-8"},
		{"nil", []*Tensor{nil}, "nil tensor"},
	}
	for _, tt := range tests {
		err := EncodePth(io.Discard, tt.ts)
		if err == nil || !strings.HasPrefix(err.Error(), "weights: pth: ") || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: got %v, want an error containing %q", tt.name, err, tt.want)
		}
	}
	if err := WritePth(filepath.Join(t.TempDir(), "no", "dir.pth"), nil); err == nil {
		t.Errorf("missing directory: got nil error")
	}
}

func TestPickleInt(t *testing.T) {
	// pickle.dumps(v, protocol=2)[2:-1] in CPython 3.11.
	tests := []struct {
		v    int64
		want string
	}{
		{0, "4b00"},
		{255, "4bff"},
		{256, "4d0001"},
		{65535, "4dffff"},
		{65536, "4a00000100"},
		{1<<31 - 1, "4affffff7f"},
		{1 << 31, "8a050000008000"},
		{1 << 40, "8a06000000000001"},
		{1<<63 - 1, "8a08ffffffffffffff7f"},
	}
	for _, tt := range tests {
		var p pickleWriter
		p.int(tt.v)
		if got := hex.EncodeToString(p.b); got != tt.want {
			t.Errorf("%d: got %s, want %s", tt.v, got, tt.want)
		}
	}
}

func TestCanonicalSHA256(t *testing.T) {
	// The layout of the doc comment, written out by hand for
	// b = [[1, 2]] and a = 0.5 (a scalar); "a" sorts first.
	layout := "01000000" + "61" + "00000000" + "0000003f" + // "a", 0 dims, 0.5
		"01000000" + "62" + "02000000" + "0100000000000000" + "0200000000000000" + "0000803f" + "00000040" // "b", [1 2], 1, 2
	raw, _ := hex.DecodeString(layout)
	want := sha256Hex(raw)
	b := &Tensor{Name: "b", Shape: []int{1, 2}, Data: []float32{1, 2}}
	a := &Tensor{Name: "a", Data: []float32{0.5}}
	for _, ts := range [][]*Tensor{{a, b}, {b, a}, {b, nil, a}} {
		if got := CanonicalSHA256(ts); got != want {
			t.Errorf("got %s, want %s (sha256 of the documented layout)", got, want)
		}
	}
	// Shape is hashed, not only the values: [2] and [1 2] differ.
	if CanonicalSHA256([]*Tensor{a, {Name: "b", Shape: []int{2}, Data: []float32{1, 2}}}) == want {
		t.Errorf("a reshaped tensor hashes the same")
	}
	// The empty set is the SHA-256 of nothing.
	if got, want := CanonicalSHA256(nil), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"; got != want {
		t.Errorf("no tensors: got %s, want %s", got, want)
	}
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
