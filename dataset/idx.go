package dataset

import (
	"bufio"
	"bytes"
	"cmp"
	"compress/gzip"
	"context"
	"encoding/binary"
	"fmt"
	"image"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// The IDX format (LeCun et al., MNIST): a big-endian header of magic
// 0x0000 0x08 (unsigned byte) ndims, then ndims uint32 sizes, then the
// data. Images are idx3 (count, rows, cols), labels idx1 (count).
const (
	idxMagicImages = 0x00000803
	idxMagicLabels = 0x00000801
	// idxMaxSide bounds rows and cols so that a hostile header cannot ask
	// for a huge allocation.
	idxMaxSide = 4096
	// idxMaxCount bounds the number of images in one file.
	idxMaxCount = 10_000_000
)

// fashionClasses are the Fashion-MNIST label names (Xiao, Rasul, Vollgraf
// 2017, README of zalandoresearch/fashion-mnist).
var fashionClasses = []string{"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"}

// idxFiles are the four files of an IDX data set ("" when absent).
type idxFiles struct {
	trainImages, trainLabels, testImages, testLabels string
}

// findIDX looks for train-images* (and the other three) in dir.
func findIDX(dir string) (idxFiles, bool, error) {
	es, err := os.ReadDir(dir)
	if err != nil {
		return idxFiles{}, false, fmt.Errorf("dataset: open: %w", err)
	}
	var f idxFiles
	for _, e := range es {
		if e.IsDir() {
			continue
		}
		n := strings.ToLower(e.Name())
		p := filepath.Join(dir, e.Name())
		switch {
		case strings.HasPrefix(n, "train-images"):
			f.trainImages = p
		case strings.HasPrefix(n, "train-labels"):
			f.trainLabels = p
		case strings.HasPrefix(n, "t10k-images"), strings.HasPrefix(n, "test-images"):
			f.testImages = p
		case strings.HasPrefix(n, "t10k-labels"), strings.HasPrefix(n, "test-labels"):
			f.testLabels = p
		}
	}
	return f, f.trainImages != "", nil
}

// idxImages holds the pixels of one idx3 file in memory.
type idxImages struct {
	path       string
	n, rows, w int
	pix        []byte
}

// image returns image i as a gray image (replicated to RGB by the resize).
func (m *idxImages) image(i int) decoded {
	sz := m.rows * m.w
	g := &image.Gray{Pix: m.pix[i*sz : (i+1)*sz], Stride: m.w, Rect: image.Rect(0, 0, m.w, m.rows)}
	return decoded{img: g, orient: 1, format: "idx"}
}

// openIDXReader opens a file, gunzipping it when it starts with the gzip
// magic.
func openIDXReader(path string) (io.Reader, func() error, error) {
	f, _, err := openRegular(path)
	if err != nil {
		return nil, nil, fmt.Errorf("dataset: idx: %w", err)
	}
	br := bufio.NewReaderSize(f, 1<<16)
	head, _ := br.Peek(2)
	if bytes.Equal(head, []byte{0x1f, 0x8b}) {
		zr, err := gzip.NewReader(br)
		if err != nil {
			f.Close()
			return nil, nil, fmt.Errorf("dataset: idx %s: %w", path, err)
		}
		return zr, f.Close, nil
	}
	return br, f.Close, nil
}

func readIDXHeader(r io.Reader, path string, magic uint32, dims int) ([]int, error) {
	hdr := make([]byte, 4+4*dims)
	if _, err := io.ReadFull(r, hdr); err != nil {
		return nil, fmt.Errorf("dataset: idx %s: header: %w", path, err)
	}
	if got := binary.BigEndian.Uint32(hdr); got != magic {
		return nil, fmt.Errorf("dataset: idx %s: magic %#08x, want %#08x", path, got, magic)
	}
	out := make([]int, dims)
	for i := range out {
		out[i] = int(binary.BigEndian.Uint32(hdr[4+4*i:]))
	}
	return out, nil
}

// readIDXImages reads an idx3 unsigned-byte file.
func readIDXImages(path string, maxPixels int64) (*idxImages, error) {
	r, closeFn, err := openIDXReader(path)
	if err != nil {
		return nil, err
	}
	defer closeFn()
	d, err := readIDXHeader(r, path, idxMagicImages, 3)
	if err != nil {
		return nil, err
	}
	n, rows, cols := d[0], d[1], d[2]
	if n <= 0 || n > idxMaxCount || rows <= 0 || cols <= 0 || rows > idxMaxSide || cols > idxMaxSide ||
		int64(rows)*int64(cols) > maxPixels || int64(n)*int64(rows)*int64(cols) > 1<<32 {
		return nil, fmt.Errorf("dataset: idx %s: implausible size %d images of %dx%d", path, n, rows, cols)
	}
	pix, err := readDeclared(r, path, "pixel data", n*rows*cols)
	if err != nil {
		return nil, err
	}
	return &idxImages{path: path, n: n, rows: rows, w: cols, pix: pix}, nil
}

// readIDXLabels reads an idx1 unsigned-byte file.
func readIDXLabels(path string) ([]byte, error) {
	r, closeFn, err := openIDXReader(path)
	if err != nil {
		return nil, err
	}
	defer closeFn()
	d, err := readIDXHeader(r, path, idxMagicLabels, 1)
	if err != nil {
		return nil, err
	}
	if d[0] <= 0 || d[0] > idxMaxCount {
		return nil, fmt.Errorf("dataset: idx %s: implausible label count %d", path, d[0])
	}
	return readDeclared(r, path, "labels", d[0])
}

// readDeclared reads the n bytes a header declares. The buffer grows with the bytes that
// really arrive (io.ReadAll), so a header that declares gigabytes in a small file (raw or
// gzipped) allocates no more than the file holds before it is found truncated.
func readDeclared(r io.Reader, path, what string, n int) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, int64(n)))
	if err != nil {
		return nil, fmt.Errorf("dataset: idx %s: %w", path, err)
	}
	if len(b) < n {
		return nil, fmt.Errorf("dataset: idx %s: truncated %s: the header declares %d bytes, the file holds %d", path, what, n, len(b))
	}
	return b, nil
}

func readIDXPair(imagesPath, labelsPath string, maxPixels int64) (*idxImages, []byte, error) {
	if labelsPath == "" {
		return nil, nil, fmt.Errorf("dataset: idx: %s has no matching labels file", imagesPath)
	}
	m, err := readIDXImages(imagesPath, maxPixels)
	if err != nil {
		return nil, nil, err
	}
	l, err := readIDXLabels(labelsPath)
	if err != nil {
		return nil, nil, err
	}
	if len(l) != m.n {
		return nil, nil, fmt.Errorf("dataset: idx: %s holds %d images but %s holds %d labels", imagesPath, m.n, labelsPath, len(l))
	}
	return m, l, nil
}

// openIDX reads an MNIST-style folder. Train is the train-* pair; the
// t10k-* pair is both Val and Test. Without a t10k pair, Val is split from
// Train by ValSplit.
func openIDX(ctx context.Context, dir string, f idxFiles, opt OpenOptions) (*Dataset, []error, error) {
	trainImg, trainLab, err := readIDXPair(f.trainImages, f.trainLabels, opt.MaxPixels)
	if err != nil {
		return nil, nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, fmt.Errorf("dataset: open: %w", err)
	}
	var testImg *idxImages
	var testLab []byte
	if f.testImages != "" {
		if testImg, testLab, err = readIDXPair(f.testImages, f.testLabels, opt.MaxPixels); err != nil {
			return nil, nil, err
		}
	}
	nc := 0
	for _, l := range [][]byte{trainLab, testLab} {
		for _, v := range l {
			nc = max(nc, int(v)+1)
		}
	}
	classes := make([]string, nc)
	for i := range classes {
		classes[i] = fmt.Sprint(i)
	}
	if nc == len(fashionClasses) && strings.Contains(strings.ToLower(dir), "fashion") {
		classes = append([]string(nil), fashionClasses...)
	}
	d := &Dataset{path: dir, layout: LayoutIDX, classes: classes}
	items := func(m *idxImages, labels []byte) [][]item {
		per := make([][]item, nc)
		if m == nil {
			return per
		}
		for i, l := range labels {
			per[l] = append(per[l], item{path: m.path, label: int32(l), w: m.w, h: m.rows, format: "idx", idx: m, pos: i})
		}
		return per
	}
	train, test := items(trainImg, trainLab), items(testImg, testLab)
	var val [][]item
	if testImg != nil {
		val = test
		d.valIsTest = true
	} else {
		val = make([][]item, nc)
		for ci := range train {
			train[ci], val[ci] = stratify(train[ci], opt.ValSplit, opt.Seed, ci)
		}
	}
	var problems []error
	if nc < 2 {
		problems = append(problems, layoutErrorf("%s: found %d class(es), need at least 2", dir, nc))
	}
	for ci, name := range classes {
		if len(train[ci]) == 0 {
			problems = append(problems, layoutErrorf("%s: class %q has no training image", dir, name))
		}
	}
	// IDX subsets keep the file order (not grouped by class), as Keras'
	// mnist.load_data returns them.
	flat := func(name string, per [][]item) *Subset {
		s := &Subset{name: name, classes: classes, maxPixels: opt.MaxPixels, maxBytes: opt.MaxBytes}
		for _, c := range per {
			s.items = append(s.items, c...)
		}
		slices.SortFunc(s.items, func(a, b item) int { return cmp.Compare(a.pos, b.pos) })
		return s
	}
	d.train, d.val, d.test = flat("train", train), flat("val", val), flat("test", test)
	return d, problems, nil
}
