package dataset

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// idxBytes builds an idx3 images file of n rows×cols images (image i has
// every pixel = i*10+1) or an idx1 labels file.
func idxImagesBytes(n, rows, cols int) []byte {
	b := binary.BigEndian.AppendUint32(nil, idxMagicImages)
	for _, v := range []int{n, rows, cols} {
		b = binary.BigEndian.AppendUint32(b, uint32(v))
	}
	for i := 0; i < n; i++ {
		b = append(b, bytes.Repeat([]byte{byte(i*10 + 1)}, rows*cols)...)
	}
	return b
}

func idxLabelsBytes(labels []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, idxMagicLabels)
	b = binary.BigEndian.AppendUint32(b, uint32(len(labels)))
	return append(b, labels...)
}

func gz(b []byte) []byte {
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

func TestOpenIDX(t *testing.T) {
	trainLabels := []byte{0, 1, 2, 1, 0, 2}
	for _, compress := range []bool{false, true} {
		enc := func(b []byte) []byte {
			if compress {
				return gz(b)
			}
			return b
		}
		suffix := map[bool]string{false: "", true: ".gz"}[compress]
		dir := writeTree(t, map[string][]byte{
			"train-images-idx3-ubyte" + suffix: enc(idxImagesBytes(6, 4, 3)),
			"train-labels-idx1-ubyte" + suffix: enc(idxLabelsBytes(trainLabels)),
			"t10k-images-idx3-ubyte" + suffix:  enc(idxImagesBytes(2, 4, 3)),
			"t10k-labels-idx1-ubyte" + suffix:  enc(idxLabelsBytes([]byte{2, 0})),
		})
		d, err := Open(context.Background(), dir, OpenOptions{})
		if err != nil {
			t.Fatalf("gz=%v: %v", compress, err)
		}
		if d.Layout() != LayoutIDX || strings.Join(d.Classes(), ",") != "0,1,2" {
			t.Errorf("gz=%v: got layout %s classes %v, want idx [0 1 2]", compress, d.Layout(), d.Classes())
		}
		if d.Train().Len() != 6 || d.Test().Len() != 2 || d.Val().Len() != 2 {
			t.Errorf("gz=%v: got train/val/test %d/%d/%d, want 6/2/2", compress, d.Train().Len(), d.Val().Len(), d.Test().Len())
		}
		for i, want := range trainLabels {
			if got := d.Train().Label(i); got != int32(want) {
				t.Errorf("gz=%v: label %d: got %d, want %d", compress, i, got, want)
			}
		}
		// Image 4 is gray 41 everywhere: three equal channels after the resize.
		di, err := d.Train().decode(4)
		if err != nil {
			t.Fatal(err)
		}
		px := make([]byte, 5*5*3)
		resizeRGB(di, 5, px)
		for i, v := range px {
			if v != 41 {
				t.Fatalf("gz=%v: byte %d: got %d, want 41", compress, i, v)
			}
		}
	}
}

func TestOpenIDXErrors(t *testing.T) {
	good := idxImagesBytes(3, 2, 2)
	tests := []struct {
		name    string
		files   map[string][]byte
		wantMsg string
	}{
		{"bad magic", map[string][]byte{"train-images-idx3-ubyte": idxLabelsBytes(make([]byte, 16)), "train-labels-idx1-ubyte": idxLabelsBytes([]byte{1})}, "magic 0x00000801, want 0x00000803"},
		{"truncated pixels", map[string][]byte{"train-images-idx3-ubyte": good[:len(good)-1], "train-labels-idx1-ubyte": idxLabelsBytes([]byte{0, 1, 1})}, "truncated pixel data"},
		{"count mismatch", map[string][]byte{"train-images-idx3-ubyte": good, "train-labels-idx1-ubyte": idxLabelsBytes([]byte{0, 1})}, "holds 3 images but"},
		{"no labels", map[string][]byte{"train-images-idx3-ubyte": good}, "has no matching labels file"},
		{"huge header", map[string][]byte{"train-images-idx3-ubyte": idxImagesBytes(0, 0, 0)[:4], "train-labels-idx1-ubyte": idxLabelsBytes([]byte{0})}, "header"},
		{"one class", map[string][]byte{"train-images-idx3-ubyte": good, "train-labels-idx1-ubyte": idxLabelsBytes([]byte{0, 0, 0})}, "found 1 class(es), need at least 2"},
	}
	for _, tc := range tests {
		_, err := Open(context.Background(), writeTree(t, tc.files), OpenOptions{})
		if err == nil || !strings.Contains(err.Error(), tc.wantMsg) || !strings.HasPrefix(err.Error(), "dataset: ") {
			t.Errorf("%s: got %v, want a dataset: error containing %q", tc.name, err, tc.wantMsg)
		}
	}
	// A header that declares 10M images of 4096×4096 is refused before allocating.
	b := binary.BigEndian.AppendUint32(nil, idxMagicImages)
	for _, v := range []uint32{10_000_000, 4096, 4096} {
		b = binary.BigEndian.AppendUint32(b, v)
	}
	dir := writeTree(t, map[string][]byte{"train-images-idx3-ubyte": b, "train-labels-idx1-ubyte": idxLabelsBytes([]byte{0})})
	if _, err := Open(context.Background(), dir, OpenOptions{}); err == nil || !strings.Contains(err.Error(), "implausible size") {
		t.Errorf("huge declared IDX: got %v, want implausible size", err)
	}
}

// fashionMNISTDir is where Debian's dataset-fashion-mnist package installs
// the Fashion-MNIST files (dpkg -L dataset-fashion-mnist).
const fashionMNISTDir = "/usr/share/datasets/fashion-mnist"

func TestFashionMNISTDebian(t *testing.T) {
	if _, err := os.Stat(filepath.Join(fashionMNISTDir, "train-images-idx3-ubyte.gz")); err != nil {
		t.Fatalf("Fashion-MNIST not found in %s (%v): run apt-get install dataset-fashion-mnist", fashionMNISTDir, err)
	}
	d, err := Open(context.Background(), fashionMNISTDir, OpenOptions{})
	if err != nil {
		t.Fatalf("%v (is dataset-fashion-mnist installed? apt-get install dataset-fashion-mnist)", err)
	}
	// 60000 train / 10000 test, 6000 / 1000 per class: Xiao et al. 2017, Table 1.
	if d.Train().Len() != 60000 || d.Test().Len() != 10000 {
		t.Errorf("got train %d test %d, want 60000 / 10000", d.Train().Len(), d.Test().Len())
	}
	for ci, n := range d.Train().Counts() {
		if n != 6000 {
			t.Errorf("class %d train: got %d, want 6000", ci, n)
		}
	}
	for ci, n := range d.Test().Counts() {
		if n != 1000 {
			t.Errorf("class %d test: got %d, want 1000", ci, n)
		}
	}
	if got := d.Classes()[9]; got != "Ankle boot" {
		t.Errorf("class 9: got %q, want %q", got, "Ankle boot")
	}
	// A batch of the real data goes through the loader: 28×28 gray -> 32×32 RGB.
	l, err := NewLoader(d.Test(), LoaderConfig{ImageSize: 32, BatchSize: 16})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	it := l.Epoch(context.Background(), 0)
	defer it.Close()
	b, err := it.Next()
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < len(b.X); i += 3 {
		if b.X[i] != b.X[i+1] || b.X[i] != b.X[i+2] {
			t.Fatalf("pixel %d: got channels %v, want equal (gray replicated)", i/3, b.X[i:i+3])
		}
	}
}
