package dataset

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// synthSubset writes a synthetic tree and returns its training subset
// (every image: ValSplit -1).
func synthSubset(t testing.TB, classes, perClass, size int) *Subset {
	t.Helper()
	dir := t.TempDir()
	if err := Synthesize(dir, classes, perClass, size, 1, "png"); err != nil {
		t.Fatal(err)
	}
	d, err := Open(context.Background(), dir, OpenOptions{ValSplit: -1})
	if err != nil {
		t.Fatal(err)
	}
	return d.Train()
}

// epochHashes runs one epoch and returns the hash of every batch.
func epochHashes(t testing.TB, s *Subset, cfg LoaderConfig, epoch int) []string {
	t.Helper()
	return hashes(epochBatches(t, s, cfg, epoch))
}

// epochBatches runs one epoch of a new loader over s and returns its batches.
func epochBatches(t testing.TB, s *Subset, cfg LoaderConfig, epoch int) []*Batch {
	t.Helper()
	l, err := NewLoader(s, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return iterBatches(t, l, epoch)
}

// hashes returns every batch's hash.
func hashes(bs []*Batch) []string {
	var hs []string
	for _, b := range bs {
		hs = append(hs, b.Hash())
	}
	return hs
}

func iterHashes(t testing.TB, l *Loader, epoch int) []string {
	t.Helper()
	return hashes(iterBatches(t, l, epoch))
}

// iterBatches runs one epoch of l and returns its batches.
func iterBatches(t testing.TB, l *Loader, epoch int) []*Batch {
	t.Helper()
	it := l.Epoch(context.Background(), epoch)
	defer it.Close()
	var bs []*Batch
	for {
		b, err := it.Next()
		if err == io.EOF {
			return bs
		}
		if err != nil {
			t.Fatal(err)
		}
		bs = append(bs, b)
	}
}

func TestLoaderDeterminism(t *testing.T) {
	s := synthSubset(t, 3, 8, 24)
	base := LoaderConfig{ImageSize: 16, BatchSize: 5, Seed: 7, Shuffle: true, Augment: PaperAugment(), Workers: 3}
	ref := epochHashes(t, s, base, 0)
	if len(ref) != 5 { // ceil(24/5)
		t.Fatalf("got %d batches, want 5", len(ref))
	}
	vary := func(f func(*LoaderConfig)) LoaderConfig { c := base; f(&c); return c }
	cacheDir := t.TempDir()
	tests := []struct {
		name  string
		cfg   LoaderConfig
		epoch int
		same  bool
	}{
		{"same config", base, 0, true},
		{"one worker", vary(func(c *LoaderConfig) { c.Workers = 1 }), 0, true},
		{"prefetch 7", vary(func(c *LoaderConfig) { c.Prefetch = 7 }), 0, true},
		{"memory cache", vary(func(c *LoaderConfig) { c.Cache = CacheMemory }), 0, true},
		{"disk cache (cold)", vary(func(c *LoaderConfig) { c.Cache = cacheDir }), 0, true},
		{"disk cache (warm)", vary(func(c *LoaderConfig) { c.Cache = cacheDir }), 0, true},
		{"other seed", vary(func(c *LoaderConfig) { c.Seed = 8 }), 0, false},
		{"other epoch", base, 1, false},
	}
	for _, tc := range tests {
		got := epochHashes(t, s, tc.cfg, tc.epoch)
		if same := strings.Join(got, ",") == strings.Join(ref, ","); same != tc.same {
			t.Errorf("%s: got identical=%v, want %v (%v vs %v)", tc.name, same, tc.same, got, ref)
		}
	}
	if n, _ := filepath.Glob(filepath.Join(cacheDir, "*.u8")); len(n) != s.Len() {
		t.Errorf("disk cache: got %d entries, want %d", len(n), s.Len())
	}
	// A warm memory cache gives the same bytes in a later epoch too.
	l, err := NewLoader(s, vary(func(c *LoaderConfig) { c.Cache = CacheMemory }))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	iterHashes(t, l, 0)
	want1 := epochHashes(t, s, base, 1)
	if got := iterHashes(t, l, 1); strings.Join(got, ",") != strings.Join(want1, ",") {
		t.Errorf("warm memory cache epoch 1: got %v, want %v", got, want1)
	}
}

func TestLoaderBatches(t *testing.T) {
	s := synthSubset(t, 2, 11, 16) // 22 images
	tests := []struct {
		name      string
		cfg       LoaderConfig
		wantSizes []int
	}{
		{"keep last", LoaderConfig{ImageSize: 8, BatchSize: 5}, []int{5, 5, 5, 5, 2}},
		{"drop last", LoaderConfig{ImageSize: 8, BatchSize: 5, DropLast: true}, []int{5, 5, 5, 5}},
		{"exact", LoaderConfig{ImageSize: 8, BatchSize: 11, Shuffle: true, DropLast: true}, []int{11, 11}},
		{"one batch larger than the set", LoaderConfig{ImageSize: 8, BatchSize: 64}, []int{22}},
	}
	for _, tc := range tests {
		l, err := NewLoader(s, tc.cfg)
		if err != nil {
			t.Fatal(err)
		}
		if got := l.BatchesPerEpoch(); got != len(tc.wantSizes) {
			t.Errorf("%s: got %d batches per epoch, want %d", tc.name, got, len(tc.wantSizes))
		}
		order := l.Order(3)
		it := l.Epoch(context.Background(), 3)
		var sizes []int
		var total time.Duration
		for k := 0; ; k++ {
			b, err := it.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			sizes = append(sizes, b.N)
			total += b.Wait
			if b.Epoch != 3 || b.Index != k || b.H != 8 || b.W != 8 || b.C != 3 || len(b.X) != b.N*8*8*3 {
				t.Errorf("%s batch %d: got epoch %d index %d shape %dx%dx%dx%d len %d", tc.name, k, b.Epoch, b.Index, b.N, b.H, b.W, b.C, len(b.X))
			}
			for j, lab := range b.Labels {
				if want := s.Label(order[k*tc.cfg.BatchSize+j]); lab != want {
					t.Errorf("%s batch %d slot %d: got label %d, want %d", tc.name, k, j, lab, want)
				}
			}
			for _, v := range b.X {
				if v < 0 || v > 1 {
					t.Fatalf("%s: rescaled value %v outside [0, 1]", tc.name, v)
				}
			}
		}
		if !equalInts(sizes, tc.wantSizes) {
			t.Errorf("%s: got batch sizes %v, want %v", tc.name, sizes, tc.wantSizes)
		}
		if it.Wait() != total || l.Wait() != total {
			t.Errorf("%s: got iter wait %v loader wait %v, want both %v", tc.name, it.Wait(), l.Wait(), total)
		}
		if _, err := it.Next(); err != io.EOF {
			t.Errorf("%s: after the end: got %v, want io.EOF", tc.name, err)
		}
		l.Close()
	}
}

func TestLoaderOrder(t *testing.T) {
	s := synthSubset(t, 2, 5, 8)
	l, err := NewLoader(s, LoaderConfig{ImageSize: 8, BatchSize: 3})
	if err != nil {
		t.Fatal(err)
	}
	if got := l.Order(5); !equalInts(got, []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}) {
		t.Errorf("no shuffle: got %v, want identity", got)
	}
	l, err = NewLoader(s, LoaderConfig{ImageSize: 8, BatchSize: 3, Shuffle: true, DropLast: true, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	o0, o0b, o1 := l.Order(0), l.Order(0), l.Order(1)
	if len(o0) != 9 {
		t.Errorf("drop last: got %d indices, want 9", len(o0))
	}
	if !equalInts(o0, o0b) || equalInts(o0, o1) {
		t.Errorf("got epoch 0 %v, again %v, epoch 1 %v; want the same twice and another for epoch 1", o0, o0b, o1)
	}
	full := append([]int(nil), o0...)
	seen := map[int]bool{}
	for _, i := range full {
		if seen[i] || i < 0 || i >= 10 {
			t.Errorf("order %v is not part of a permutation of 0..9", full)
		}
		seen[i] = true
	}
}

func TestLoaderConfigErrors(t *testing.T) {
	s := synthSubset(t, 2, 1, 8)
	tests := []struct {
		name    string
		cfg     LoaderConfig
		wantMsg string
	}{
		{"no size", LoaderConfig{BatchSize: 1}, "image size 0"},
		{"huge size", LoaderConfig{ImageSize: 5000, BatchSize: 1}, "image size 5000"},
		{"no batch", LoaderConfig{ImageSize: 8}, "batch size 0"},
		{"normalisation", LoaderConfig{ImageSize: 8, BatchSize: 1, Normalize: "zscore"}, `unknown normalisation "zscore"`},
		{"augment", LoaderConfig{ImageSize: 8, BatchSize: 1, Augment: Augment{Zoom: 1.5}}, "zoom 1.5 is outside"},
		{"negative rotation", LoaderConfig{ImageSize: 8, BatchSize: 1, Augment: Augment{Rotation: -1}}, "rotation -1"},
	}
	for _, tc := range tests {
		_, err := NewLoader(s, tc.cfg)
		if err == nil || !strings.Contains(err.Error(), tc.wantMsg) || !strings.HasPrefix(err.Error(), "dataset: ") {
			t.Errorf("%s: got %v, want a dataset: error containing %q", tc.name, err, tc.wantMsg)
		}
	}
	if _, err := NewLoader(&Subset{}, LoaderConfig{ImageSize: 8, BatchSize: 1}); err == nil {
		t.Errorf("empty subset: got nil error, want one")
	}
}

// waitGoroutines waits until the goroutine count is at most n.
func waitGoroutines(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > n {
		if time.Now().After(deadline) {
			t.Fatalf("got %d goroutines, want at most %d (leak)", runtime.NumGoroutine(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestLoaderCloseAndCancel(t *testing.T) {
	s := synthSubset(t, 2, 10, 8)
	before := runtime.NumGoroutine()
	l, err := NewLoader(s, LoaderConfig{ImageSize: 8, BatchSize: 2, Workers: 4})
	if err != nil {
		t.Fatal(err)
	}
	// Close early, twice.
	it := l.Epoch(context.Background(), 0)
	if _, err := it.Next(); err != nil {
		t.Fatal(err)
	}
	it.Close()
	it.Close()
	if _, err := it.Next(); !errors.Is(err, ErrClosed) {
		t.Errorf("next after close: got %v, want ErrClosed", err)
	}
	// Cancel the context.
	ctx, cancel := context.WithCancel(context.Background())
	it = l.Epoch(ctx, 1)
	cancel()
	var gotErr error
	for gotErr == nil {
		_, gotErr = it.Next()
	}
	if !errors.Is(gotErr, context.Canceled) && gotErr != io.EOF {
		t.Errorf("cancelled: got %v, want context.Canceled (or EOF if it finished first)", gotErr)
	}
	// Loader.Close stops a running iterator and refuses new ones.
	it = l.Epoch(context.Background(), 2)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Errorf("second close: got %v, want nil", err)
	}
	if _, err := it.Next(); !errors.Is(err, ErrClosed) {
		t.Errorf("next after loader close: got %v, want ErrClosed", err)
	}
	if _, err := l.Epoch(context.Background(), 3).Next(); !errors.Is(err, ErrClosed) {
		t.Errorf("epoch after loader close: got %v, want ErrClosed", err)
	}
	waitGoroutines(t, before)
}

func TestLoaderFileVanishes(t *testing.T) {
	s := synthSubset(t, 2, 3, 8)
	if err := os.Remove(s.Path(4)); err != nil {
		t.Fatal(err)
	}
	l, err := NewLoader(s, LoaderConfig{ImageSize: 8, BatchSize: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	it := l.Epoch(context.Background(), 0)
	defer it.Close()
	var got error
	for k := 0; k < 4 && got == nil; k++ {
		_, got = it.Next()
	}
	if !errors.Is(got, ErrUnreadable) || !strings.HasPrefix(got.Error(), "dataset: epoch 0 batch 2: "+s.Path(4)+": cannot read") {
		t.Errorf("got %v, want ErrUnreadable in epoch 0 batch 2", got)
	}
	if _, again := it.Next(); again != got {
		t.Errorf("sticky error: got %v, want %v", again, got)
	}
}

func TestLoaderNormalisations(t *testing.T) {
	s := synthSubset(t, 2, 2, 8)
	px := make([]byte, 8*8*3)
	d, err := s.decode(0)
	if err != nil {
		t.Fatal(err)
	}
	resizeRGB(d, 8, px)
	for _, mode := range []string{NormRescale, NormImageNet, NormCaffe} {
		l, err := NewLoader(s, LoaderConfig{ImageSize: 8, BatchSize: 1, Normalize: mode})
		if err != nil {
			t.Fatal(err)
		}
		it := l.Epoch(context.Background(), 0)
		b, err := it.Next()
		if err != nil {
			t.Fatal(err)
		}
		n, _ := newNormalizer(mode)
		for i := 0; i < len(px); i += 3 {
			for c := 0; c < 3; c++ {
				if want := n.apply(c, float32(px[i+n.srcChannel(c)])); b.X[i+c] != want {
					t.Fatalf("%s value %d: got %v, want %v", mode, i+c, b.X[i+c], want)
				}
			}
		}
		it.Close()
		l.Close()
	}
}
