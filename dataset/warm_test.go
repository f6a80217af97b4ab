package dataset

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

// cachedCount returns how many images l's cache holds.
func cachedCount(l *Loader) int {
	n := 0
	for i := 0; i < l.s.Len(); i++ {
		if l.cache.has(i) {
			n++
		}
	}
	return n
}

// TestCacheBudget fills a memory cache by iterating epochs (no Warm) under
// budgets of k entries: it holds exactly min(k, N) images, never more bytes
// than the budget, and the batches of both epochs equal those of a loader
// without cache.
func TestCacheBudget(t *testing.T) {
	const S, N = 12, 18 // 3 classes × 6 images
	s := synthSubset(t, 3, 6, 20)
	entry := int64(S * S * 3) // one cached image: S·S·3 bytes
	for _, aug := range []Augment{{}, PaperAugment()} {
		base := LoaderConfig{ImageSize: S, BatchSize: 4, Seed: 3, Shuffle: true, Augment: aug, Workers: 4}
		want := append(epochHashes(t, s, base, 0), epochHashes(t, s, base, 1)...)
		for _, tc := range []struct {
			name   string
			budget int64
			cached int // floor(budget / entry), at most N
		}{
			{"1 byte", 1, 0},
			{"1 entry", entry, 1},
			{"5 entries and a part", 5*entry + entry - 1, 5},
			{"N-1 entries", (N - 1) * entry, N - 1},
			{"N entries", N * entry, N},
			{"N+3 entries", (N + 3) * entry, N},
		} {
			cfg := base
			cfg.Cache, cfg.CacheBytes = CacheMemory, tc.budget
			l, err := NewLoader(s, cfg)
			if err != nil {
				t.Fatal(err)
			}
			got := append(iterHashes(t, l, 0), iterHashes(t, l, 1)...)
			for i := range want {
				if got[i] != want[i] {
					t.Errorf("augment %v, budget %s: batch %d: got hash %.12s, want %.12s (no cache)", aug.Enabled(), tc.name, i, got[i], want[i])
				}
			}
			if n := cachedCount(l); n != tc.cached {
				t.Errorf("augment %v, budget %s: got %d images cached, want %d", aug.Enabled(), tc.name, n, tc.cached)
			}
			if used := l.cache.(*memCache).bytes(); used != int64(tc.cached)*entry || used > tc.budget {
				t.Errorf("augment %v, budget %s: got %d bytes accounted, want %d (<= %d)", aug.Enabled(), tc.name, used, int64(tc.cached)*entry, tc.budget)
			}
			l.Close()
		}
	}
}

func TestCacheBytesConfig(t *testing.T) {
	s := synthSubset(t, 2, 2, 8)
	if _, err := NewLoader(s, LoaderConfig{ImageSize: 8, BatchSize: 2, Cache: CacheMemory, CacheBytes: -1}); err == nil {
		t.Errorf("CacheBytes -1: got no error, want one")
	}
	def := DefaultCacheBytes()
	if def <= 0 || def > 2<<30 {
		t.Errorf("DefaultCacheBytes: got %d, want in (0, 2 GiB]", def)
	}
	for _, tc := range []struct {
		cache string
		bytes int64
		want  int64
	}{
		{CacheMemory, 0, def}, // 0: the default
		{CacheMemory, 1000, 1000},
		{"", 0, 0}, // no memory cache: no budget
		{t.TempDir(), 0, 0},
	} {
		l, err := NewLoader(s, LoaderConfig{ImageSize: 8, BatchSize: 2, Cache: tc.cache, CacheBytes: tc.bytes})
		if err != nil {
			t.Fatal(err)
		}
		if got := l.Config().CacheBytes; got != tc.want {
			t.Errorf("cache %q, CacheBytes %d: got Config().CacheBytes %d, want %d", tc.cache, tc.bytes, got, tc.want)
		}
		l.Close()
	}
}

// TestWarm checks Warm's stats and that the cached images are the first
// ones in index order, for memory caches under several budgets, a disk
// cache and no cache; a second Warm decodes nothing.
func TestWarm(t *testing.T) {
	const S, N = 10, 12 // 3 classes × 4 images
	s := synthSubset(t, 3, 4, 16)
	entry := int64(S * S * 3)
	for _, tc := range []struct {
		name    string
		cache   string
		budget  int64
		workers int
		images  int // images the first Warm decodes: min(budget / entry, N), N for a disk cache, 0 without cache
	}{
		{"no cache", "", 0, 2, 0},
		{"memory, room for all", CacheMemory, 0, 3, N},
		{"memory, 5 entries, 1 worker", CacheMemory, 5 * entry, 1, 5},
		{"memory, 5 entries, 4 workers", CacheMemory, 5*entry + 7, 4, 5},
		{"memory, no room", CacheMemory, entry - 1, 2, 0},
		{"disk", t.TempDir(), 0, 3, N},
	} {
		l, err := NewLoader(s, LoaderConfig{ImageSize: S, BatchSize: 3, Cache: tc.cache, CacheBytes: tc.budget, Workers: tc.workers})
		if err != nil {
			t.Fatal(err)
		}
		st, err := l.Warm(context.Background())
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if tc.cache == "" {
			if st != (WarmStats{}) {
				t.Errorf("%s: got %+v, want zero stats", tc.name, st)
			}
			l.Close()
			continue
		}
		if st.Images != tc.images || st.Cached != tc.images || st.Bytes != int64(tc.images)*entry {
			t.Errorf("%s: got %d images, %d cached, %d bytes, want %d, %d, %d", tc.name, st.Images, st.Cached, st.Bytes,
				tc.images, tc.images, int64(tc.images)*entry)
		}
		if st.WallSeconds <= 0 || st.CPUSeconds < 0 {
			t.Errorf("%s: got wall %g s, CPU %g s, want wall > 0 and CPU >= 0", tc.name, st.WallSeconds, st.CPUSeconds)
		}
		for i := 0; i < N; i++ {
			if got, want := l.cache.has(i), i < tc.images; got != want {
				t.Errorf("%s: image %d: got cached %v, want %v (the first %d in index order)", tc.name, i, got, want, tc.images)
			}
		}
		again, err := l.Warm(context.Background())
		if err != nil {
			t.Fatalf("%s: second warm: %v", tc.name, err)
		}
		if again.Images != 0 || again.Cached != tc.images {
			t.Errorf("%s: second warm: got %d images, %d cached, want 0, %d", tc.name, again.Images, again.Cached, tc.images)
		}
		l.Close()
		if _, err := l.Warm(context.Background()); !errors.Is(err, ErrClosed) {
			t.Errorf("%s: warm after close: got %v, want ErrClosed", tc.name, err)
		}
	}
}

// countdownCtx is a context whose Err turns to Canceled at its (left+1)th
// call: Warm checks it once before every image, so with one worker it
// stops after exactly left images.
type countdownCtx struct {
	context.Context
	left atomic.Int32
}

func (c *countdownCtx) Err() error {
	if c.left.Add(-1) < 0 {
		return context.Canceled
	}
	return nil
}

func TestWarmCancel(t *testing.T) {
	const S, N = 10, 12
	s := synthSubset(t, 3, 4, 16)
	for _, tc := range []struct {
		name   string
		after  int32 // images before the context ends
		images int   // = after: one worker checks once per image
	}{
		{"cancelled before", 0, 0},
		{"cancelled after 3", 3, 3},
	} {
		l, err := NewLoader(s, LoaderConfig{ImageSize: S, BatchSize: 3, Cache: CacheMemory, Workers: 1})
		if err != nil {
			t.Fatal(err)
		}
		ctx := &countdownCtx{Context: context.Background()}
		ctx.left.Store(tc.after)
		st, err := l.Warm(ctx)
		if !errors.Is(err, context.Canceled) {
			t.Errorf("%s: got error %v, want context.Canceled", tc.name, err)
		}
		if st.Images != tc.images || st.Cached != tc.images {
			t.Errorf("%s: got %d images, %d cached, want %d, %d", tc.name, st.Images, st.Cached, tc.images, tc.images)
		}
		if used := l.cache.(*memCache).bytes(); used != int64(tc.images*S*S*3) {
			t.Errorf("%s: got %d bytes accounted, want %d (no reservation left behind)", tc.name, used, tc.images*S*S*3)
		}
		rest, err := l.Warm(context.Background())
		if err != nil || rest.Images != N-tc.images || rest.Cached != N {
			t.Errorf("%s: warm again: got %d images, %d cached, error %v, want %d, %d, nil", tc.name, rest.Images, rest.Cached, err, N-tc.images, N)
		}
		l.Close()
	}

	// A real cancellation mid-way stops the workers promptly.
	big := synthSubset(t, 3, 40, 64)
	l, err := NewLoader(big, LoaderConfig{ImageSize: 64, BatchSize: 3, Cache: CacheMemory, Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(5*time.Millisecond, cancel)
	st, err := l.Warm(ctx)
	if err == nil && st.Images < big.Len() {
		t.Errorf("cancel mid-way: got no error after %d of %d images", st.Images, big.Len())
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		t.Errorf("cancel mid-way: got %v, want context.Canceled", err)
	}
}

// TestWarmSameBatches: Warm changes no byte of any batch, over two epochs,
// with and without augmentation and whatever the budget.
func TestWarmSameBatches(t *testing.T) {
	const S = 14
	s := synthSubset(t, 3, 5, 24)
	entry := int64(S * S * 3)
	for _, aug := range []Augment{{}, PaperAugment()} {
		for _, norm := range []string{NormRescale, NormImageNet, NormCaffe} {
			base := LoaderConfig{ImageSize: S, BatchSize: 4, Seed: 9, Shuffle: true, DropLast: true, Augment: aug, Normalize: norm, Workers: 3}
			want := append(epochHashes(t, s, base, 0), epochHashes(t, s, base, 1)...)
			for _, budget := range []int64{0, 1, 4 * entry, 14 * entry} {
				cfg := base
				cfg.Cache, cfg.CacheBytes = CacheMemory, budget
				l, err := NewLoader(s, cfg)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := l.Warm(context.Background()); err != nil {
					t.Fatal(err)
				}
				got := append(iterHashes(t, l, 0), iterHashes(t, l, 1)...)
				l.Close()
				if len(got) != len(want) {
					t.Fatalf("augment %v %s budget %d: got %d batches, want %d", aug.Enabled(), norm, budget, len(got), len(want))
				}
				for i := range want {
					if got[i] != want[i] {
						t.Errorf("augment %v %s budget %d: batch %d: got hash %.12s, want %.12s (no cache, no warm)", aug.Enabled(), norm, budget, i, got[i], want[i])
					}
				}
			}
		}
	}
}

// TestWarmDuringEpoch runs Warm while an epoch fills the same cache (run it
// with -race): the batches are unchanged, and the cache holds exactly the
// k = 7 entries its budget allows (7·S·S·3 bytes), however the two raced.
func TestWarmDuringEpoch(t *testing.T) {
	const S = 12
	s := synthSubset(t, 3, 6, 20)
	base := LoaderConfig{ImageSize: S, BatchSize: 3, Seed: 4, Shuffle: true, Augment: PaperAugment(), Workers: 3}
	want := epochHashes(t, s, base, 0)
	cfg := base
	cfg.Cache, cfg.CacheBytes = CacheMemory, 7*S*S*3
	l, err := NewLoader(s, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	done := make(chan error, 1)
	go func() { _, err := l.Warm(context.Background()); done <- err }()
	got := iterHashes(t, l, 0)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("batch %d: got hash %.12s, want %.12s (no cache)", i, got[i], want[i])
		}
	}
	if n := cachedCount(l); n != 7 {
		t.Errorf("got %d images cached, want 7", n)
	}
}
