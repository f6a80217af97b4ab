package dataset

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// WarmStats is what Loader.Warm did.
type WarmStats struct {
	Images int   // images Warm decoded and resized
	Cached int   // images the cache holds when Warm returns (also those cached before)
	Bytes  int64 // bytes those entries take: Cached·S·S·3
	// CPUSeconds is the user+system CPU time of the whole process while
	// Warm ran (getrusage RUSAGE_SELF): Warm's workers, but also the
	// garbage collector and any other thread of the process meanwhile.
	// 0 where the system does not report it.
	CPUSeconds  float64
	WallSeconds float64
}

// Warm fills the loader's cache before training, so that the batches of
// every epoch, the first included, cost only augmentation (when on) and
// normalisation: it decodes and resizes the images of the subset in index
// order with Workers goroutines and stores them, skipping those already
// cached. A memory cache is filled up to its budget (CacheBytes) and Warm
// stops there: images past it are computed every time they are batched. A
// disk cache takes every image. A loader without a cache returns a zero
// WarmStats and nil.
//
// Batches are the same bytes with and without Warm. Warm may run while
// epochs are iterated. Cancelling ctx stops it with an error wrapping
// ctx's error and the stats of what was done; a decode error stops it with
// that error. After Close it returns ErrClosed.
func (l *Loader) Warm(ctx context.Context) (WarmStats, error) {
	l.mu.Lock()
	closed, cch := l.closed, l.cache
	l.mu.Unlock()
	if closed {
		return WarmStats{}, ErrClosed
	}
	if cch == nil {
		return WarmStats{}, nil
	}
	cpu0, wall0 := processCPU(), time.Now()
	mem, _ := cch.(*memCache)
	n, S := l.s.Len(), l.cfg.ImageSize

	// claim hands out the images in index order; for a memory cache it
	// reserves the entry's bytes in the same order, so that the cached
	// images are the first ones that fit whatever the number of workers.
	var (
		mu     sync.Mutex
		next   int
		stop   bool
		failed error
		images atomic.Int64
	)
	claim := func() int {
		mu.Lock()
		defer mu.Unlock()
		for !stop && next < n {
			i := next
			next++
			if cch.has(i) {
				continue
			}
			if mem != nil && !mem.reserve() {
				stop = true
				break
			}
			return i
		}
		return -1
	}
	fail := func(err error) {
		mu.Lock()
		if failed == nil {
			failed = err
		}
		stop = true
		mu.Unlock()
	}

	var wg sync.WaitGroup
	for w := 0; w < min(l.cfg.Workers, n); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				if err := ctx.Err(); err != nil {
					fail(fmt.Errorf("dataset: warm: %w", err))
					return
				}
				i := claim()
				if i < 0 {
					return
				}
				d, err := l.s.decode(i)
				if err != nil {
					if mem != nil {
						mem.release()
					}
					fail(err) // an *ImageError naming the file
					return
				}
				px := make([]byte, S*S*3)
				resizeRGB(d, S, px)
				if mem != nil {
					mem.store(i, px)
				} else {
					cch.put(i, px)
				}
				images.Add(1)
			}
		}()
	}
	wg.Wait()

	st := WarmStats{Images: int(images.Load())}
	for i := 0; i < n; i++ {
		if cch.has(i) {
			st.Cached++
		}
	}
	st.Bytes = int64(st.Cached) * int64(S*S*3)
	st.CPUSeconds = (processCPU() - cpu0).Seconds()
	st.WallSeconds = time.Since(wall0).Seconds()
	return st, failed
}
