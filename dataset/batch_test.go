package dataset

import (
	"archive/zip"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestBatchHash(t *testing.T) {
	b := &Batch{X: []float32{1, -0.5, 0}, Labels: []int32{2}, N: 1, H: 1, W: 1, C: 3}
	// The documented encoding, written out by hand.
	var raw []byte
	for _, v := range b.X {
		raw = binary.LittleEndian.AppendUint32(raw, math.Float32bits(v))
	}
	raw = binary.LittleEndian.AppendUint32(raw, 2)
	sum := sha256.Sum256(raw)
	if got, want := b.Hash(), hex.EncodeToString(sum[:]); got != want {
		t.Errorf("got %s, want %s", got, want)
	}
	c := *b
	c.Labels = []int32{1}
	if b.Hash() == c.Hash() {
		t.Errorf("labels 2 and 1: got the same hash")
	}
	// A batch longer than the hash buffer.
	big := &Batch{X: make([]float32, 70000), Labels: []int32{0}}
	if len(big.Hash()) != 64 {
		t.Errorf("got hash length %d, want 64", len(big.Hash()))
	}
}

func TestExportReadBatch(t *testing.T) {
	b := &Batch{X: make([]float32, 2*3*4*3), Labels: []int32{4, 1}, N: 2, H: 3, W: 4, C: 3, Epoch: 5, Index: 9}
	for i := range b.X {
		b.X[i] = float32(i)/7 - 1
	}
	p := filepath.Join(t.TempDir(), "batch.npz")
	if err := ExportBatch(p, b); err != nil {
		t.Fatal(err)
	}
	got, err := ReadBatch(p)
	if err != nil {
		t.Fatal(err)
	}
	if got.Hash() != b.Hash() || got.N != 2 || got.H != 3 || got.W != 4 || got.C != 3 || got.Epoch != 5 || got.Index != 9 {
		t.Errorf("got %+v, want %+v", got, b)
	}
	// The archive is what numpy.load expects: .npy members, 64-byte aligned data.
	zr, err := zip.OpenReader(p)
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	var names []string
	for _, f := range zr.File {
		names = append(names, f.Name)
		rc, _ := f.Open()
		head := make([]byte, 10)
		rc.Read(head)
		rc.Close()
		hl := int(binary.LittleEndian.Uint16(head[8:]))
		if string(head[:8]) != "\x93NUMPY\x01\x00" || (10+hl)%64 != 0 {
			t.Errorf("%s: got header %q with length %d, want \\x93NUMPY v1.0 aligned to 64", f.Name, head[:8], hl)
		}
	}
	if got := strings.Join(names, ","); got != "x.npy,labels.npy,epoch.npy,index.npy" {
		t.Errorf("got members %s, want x.npy,labels.npy,epoch.npy,index.npy", got)
	}
	if h := string(npyHeader("<f4", []int{2, 3, 4, 3})[10:]); !strings.HasPrefix(h, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3, 4, 3), }") {
		t.Errorf("got npy dict %q", h)
	}
	if h := string(npyHeader("<i4", []int{2})[10:]); !strings.Contains(h, "'shape': (2,)") {
		t.Errorf("1-d shape: got %q, want (2,)", h)
	}

	if err := ExportBatch(p, &Batch{X: make([]float32, 5), N: 1, H: 1, W: 1, C: 3}); err == nil {
		t.Errorf("inconsistent batch: got nil error")
	}
	bad := filepath.Join(t.TempDir(), "bad.npz")
	os.WriteFile(bad, []byte("not a zip"), 0o644)
	if _, err := ReadBatch(bad); err == nil || !strings.HasPrefix(err.Error(), "dataset: read batch") {
		t.Errorf("not a zip: got %v, want a dataset: read batch error", err)
	}
}

func TestExportOrder(t *testing.T) {
	s := synthSubset(t, 2, 2, 8)
	l, err := NewLoader(s, LoaderConfig{ImageSize: 8, BatchSize: 3, Shuffle: true, Seed: 4})
	if err != nil {
		t.Fatal(err)
	}
	order := l.Order(0)
	p := filepath.Join(t.TempDir(), "order.csv")
	if err := ExportOrder(p, s, order, 3); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) != 5 || lines[0] != "batch,position,index,label,path" {
		t.Fatalf("got %q, want a header and 4 rows", lines)
	}
	if !strings.HasPrefix(lines[4], "1,3,") {
		t.Errorf("row 4: got %q, want batch 1 position 3", lines[4])
	}
	if err := ExportOrder(p, s, []int{9}, 3); err == nil {
		t.Errorf("bad index: got nil error")
	}
}
