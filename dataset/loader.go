package dataset

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// LoaderConfig configures a Loader. Zero values take the defaults noted.
type LoaderConfig struct {
	ImageSize int    // S: images are resized to S×S (required)
	BatchSize int    // images per batch (required)
	Seed      int64  // drives shuffling and augmentation
	Shuffle   bool   // shuffle the order every epoch
	DropLast  bool   // drop the last partial batch instead of yielding it
	Normalize string // NormRescale (default), NormImageNet or NormCaffe
	Augment   Augment
	Workers   int // decoding goroutines (default runtime.NumCPU())
	Prefetch  int // batches prepared ahead of the caller (default 2)
	// Cache keeps each image decoded and resized: "" none, CacheMemory, or
	// a folder holding one raw file per image (S*S*3 bytes of packed RGB,
	// row-major, named by a hash of the source and S; safe to share between
	// processes, stale entries are never read).
	Cache string
	// CacheBytes is the budget of the memory cache (Cache == CacheMemory):
	// images are kept until their S*S*3 bytes each would pass it, and the
	// rest are decoded and resized every time, as without a cache. 0 means
	// DefaultCacheBytes(); negative is refused. The disk cache has no
	// budget. Batches are the same bytes whatever the budget.
	CacheBytes int64
	// Shard makes every batch one rank's share of the global batch of
	// BatchSize images (data-parallel training): the same order, the same
	// augmentation, and the images [Rank·BatchSize/Count, (Rank+1)·BatchSize/Count)
	// of each global batch. BatchSize must be a multiple of Count and
	// DropLast set, so that every rank's share is equal. The zero value
	// (Count 0 or 1) is the whole batch.
	Shard Shard
}

// Shard is one rank's place among Count data-parallel ranks.
type Shard struct{ Rank, Count int }

// maxImageSize bounds S so that a typo cannot ask for a huge batch buffer.
const maxImageSize = 4096

// Loader turns a Subset into batches. Its methods are safe for concurrent
// use; one Iter must be used by one goroutine.
type Loader struct {
	s      *Subset
	cfg    LoaderConfig
	norm   *normalizer
	cache  cache
	waitNs atomic.Int64

	mu     sync.Mutex
	closed bool
	iters  map[*Iter]struct{}
}

// NewLoader checks cfg and returns a loader over s.
func NewLoader(s *Subset, cfg LoaderConfig) (*Loader, error) {
	if s.Len() == 0 {
		return nil, fmt.Errorf("dataset: new loader: empty subset")
	}
	if cfg.ImageSize <= 0 || cfg.ImageSize > maxImageSize {
		return nil, fmt.Errorf("dataset: new loader: image size %d is outside [1, %d]", cfg.ImageSize, maxImageSize)
	}
	if cfg.BatchSize <= 0 {
		return nil, fmt.Errorf("dataset: new loader: batch size %d must be positive", cfg.BatchSize)
	}
	if sh := cfg.Shard; sh.Count > 1 || sh.Rank != 0 || sh.Count < 0 {
		switch {
		case sh.Count < 1 || sh.Rank < 0 || sh.Rank >= sh.Count:
			return nil, fmt.Errorf("dataset: new loader: rank %d is outside [0, %d)", sh.Rank, max(sh.Count, 0))
		case cfg.BatchSize%sh.Count != 0:
			return nil, fmt.Errorf("dataset: new loader: batch size %d is not a multiple of the %d ranks", cfg.BatchSize, sh.Count)
		case !cfg.DropLast:
			return nil, fmt.Errorf("dataset: new loader: a sharded loader must drop the last partial batch")
		}
	}
	if cfg.CacheBytes < 0 {
		return nil, fmt.Errorf("dataset: new loader: cache budget %d bytes is negative", cfg.CacheBytes)
	}
	if cfg.Workers <= 0 {
		cfg.Workers = runtime.NumCPU()
	}
	if cfg.Prefetch <= 0 {
		cfg.Prefetch = 2
	}
	if cfg.Normalize == "" {
		cfg.Normalize = NormRescale
	}
	if err := cfg.Augment.validate(); err != nil {
		return nil, err
	}
	norm, err := newNormalizer(cfg.Normalize)
	if err != nil {
		return nil, err
	}
	l := &Loader{s: s, cfg: cfg, norm: norm, iters: map[*Iter]struct{}{}}
	switch cfg.Cache {
	case "":
	case CacheMemory:
		if l.cfg.CacheBytes == 0 {
			l.cfg.CacheBytes = DefaultCacheBytes()
		}
		l.cache = newMemCache(s.Len(), cfg.ImageSize*cfg.ImageSize*3, l.cfg.CacheBytes)
	default:
		if l.cache, err = newDiskCache(cfg.Cache, s, cfg.ImageSize); err != nil {
			return nil, err
		}
	}
	return l, nil
}

// Config returns the configuration with defaults filled in.
func (l *Loader) Config() LoaderConfig { return l.cfg }

// Subset returns the subset the loader reads.
func (l *Loader) Subset() *Subset { return l.s }

// BatchesPerEpoch returns the number of batches of every epoch.
func (l *Loader) BatchesPerEpoch() int {
	n, b := l.s.Len(), l.cfg.BatchSize
	if l.cfg.DropLast {
		return n / b
	}
	return (n + b - 1) / b
}

// Order returns the image indices of an epoch in the order they are
// batched: identity without Shuffle, else a Fisher–Yates shuffle from the
// stream (tagShuffle, Seed, epoch). With DropLast the dropped tail is left
// out. Batch k holds Order(epoch)[k*BatchSize : (k+1)*BatchSize].
func (l *Loader) Order(epoch int) []int {
	order := make([]int, l.s.Len())
	for i := range order {
		order[i] = i
	}
	if l.cfg.Shuffle {
		newRNG(tagShuffle, l.cfg.Seed, int64(epoch)).shuffle(order)
	}
	return order[:min(len(order), l.BatchesPerEpoch()*l.cfg.BatchSize)]
}

// Wait returns the total time Next calls of all iterators blocked for data.
func (l *Loader) Wait() time.Duration { return time.Duration(l.waitNs.Load()) }

// Close stops the iterators still running and drops the memory cache. It
// is safe to call twice; Epoch after Close yields iterators whose Next
// returns ErrClosed.
func (l *Loader) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	iters := make([]*Iter, 0, len(l.iters))
	for it := range l.iters {
		iters = append(iters, it)
	}
	l.mu.Unlock()
	for _, it := range iters {
		it.Close()
	}
	l.mu.Lock()
	if _, ok := l.cache.(*memCache); ok {
		l.cache = nil
	}
	l.mu.Unlock()
	return nil
}

// Iter yields the batches of one epoch. Next is not safe for concurrent use.
type Iter struct {
	l      *Loader
	epoch  int
	nb     int
	ctx    context.Context
	cancel context.CancelFunc
	queue  chan *pending
	wg     sync.WaitGroup
	next   int
	waited time.Duration
	err    error // sticky: returned by every later Next
	closed atomic.Bool
	once   sync.Once
}

// pending is a batch being filled by the workers.
type pending struct {
	b    *Batch
	left atomic.Int32
	done chan struct{}
	mu   sync.Mutex
	err  error
}

func (p *pending) fail(err error) {
	p.mu.Lock()
	if p.err == nil {
		p.err = err
	}
	p.mu.Unlock()
}

func (p *pending) finishOne() {
	if p.left.Add(-1) == 0 {
		close(p.done)
	}
}

type task struct {
	p     *pending
	slot  int // position in the batch
	index int // image index in the subset
}

// Epoch starts the workers of one epoch and returns its iterator. The
// iterator must be drained to io.EOF or closed. Cancelling ctx stops it.
func (l *Loader) Epoch(ctx context.Context, epoch int) *Iter {
	it := &Iter{l: l, epoch: epoch, nb: l.BatchesPerEpoch()}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		it.err = ErrClosed
		return it
	}
	l.iters[it] = struct{}{}
	cch := l.cache
	l.mu.Unlock()

	it.ctx, it.cancel = context.WithCancel(ctx)
	it.queue = make(chan *pending, l.cfg.Prefetch)
	tasks := make(chan task, l.cfg.BatchSize)
	order := l.Order(epoch)
	S, B := l.cfg.ImageSize, l.cfg.BatchSize

	it.wg.Add(1)
	go func() { // feeder: allocates batches in order, bounded by the queue
		defer it.wg.Done()
		defer close(tasks)
		defer close(it.queue)
		for b := 0; b < it.nb; b++ {
			idx := order[b*B : min((b+1)*B, len(order))]
			off, global := 0, 0
			if sh := l.cfg.Shard; sh.Count > 1 {
				n := len(idx) / sh.Count // len(idx) == B: DropLast
				off, global = sh.Rank*n, len(idx)
				idx = idx[off : off+n]
			}
			n := len(idx)
			p := &pending{done: make(chan struct{}), b: &Batch{
				X: make([]float32, n*S*S*3), Labels: make([]int32, n),
				N: n, H: S, W: S, C: 3, Epoch: epoch, Index: b,
				Offset: off, GlobalN: global,
			}}
			p.left.Store(int32(n))
			select {
			case it.queue <- p:
			case <-it.ctx.Done():
				return
			}
			for j, i := range idx {
				select {
				case tasks <- task{p: p, slot: j, index: i}:
				case <-it.ctx.Done():
					return
				}
			}
		}
	}()
	for w := 0; w < l.cfg.Workers; w++ {
		it.wg.Add(1)
		go func() {
			defer it.wg.Done()
			for t := range tasks {
				if err := it.ctx.Err(); err != nil {
					t.p.fail(err)
				} else if err := l.fill(cch, epoch, t); err != nil {
					t.p.fail(err)
				}
				t.p.finishOne()
			}
		}()
	}
	return it
}

// fill writes image t.index into its slot of the batch.
func (l *Loader) fill(cch cache, epoch int, t task) error {
	S := l.cfg.ImageSize
	px, err := l.pixels(cch, t.index)
	if err != nil {
		return err
	}
	dst := t.p.b.X[t.slot*S*S*3 : (t.slot+1)*S*S*3]
	if a := l.cfg.Augment; a.Enabled() {
		warp(px, S, a.draw(l.cfg.Seed, epoch, t.index, S, S).matrix(S, S), dst, l.norm.inPlace)
	} else {
		l.norm.fromUint8(px, dst)
	}
	t.p.b.Labels[t.slot] = l.s.items[t.index].label
	return nil
}

// pixels returns the S×S packed RGB bytes of image i, from the cache when
// it holds them.
func (l *Loader) pixels(cch cache, i int) ([]byte, error) {
	if cch != nil {
		if px, ok := cch.get(i); ok {
			return px, nil
		}
	}
	d, err := l.s.decode(i)
	if err != nil {
		return nil, err
	}
	S := l.cfg.ImageSize
	px := make([]byte, S*S*3)
	resizeRGB(d, S, px)
	if cch != nil {
		cch.put(i, px)
	}
	return px, nil
}

// Next returns the next batch, or io.EOF after the last one. After an
// error every later call returns the same error.
func (it *Iter) Next() (*Batch, error) {
	if it.closed.Load() {
		return nil, ErrClosed
	}
	if it.err != nil {
		return nil, it.err
	}
	if it.next >= it.nb {
		it.stop()
		return nil, io.EOF
	}
	start := time.Now()
	var p *pending
	var ok bool
	select {
	case p, ok = <-it.queue:
	case <-it.ctx.Done():
	}
	if p != nil {
		select {
		case <-p.done:
		case <-it.ctx.Done():
			p = nil
		}
	}
	if !ok || p == nil {
		return nil, it.fail(it.ctxErr())
	}
	if p.err != nil {
		if it.closed.Load() {
			return nil, ErrClosed
		}
		return nil, it.fail(&batchError{epoch: it.epoch, index: it.next, err: p.err})
	}
	w := time.Since(start)
	p.b.Wait = w
	it.waited += w
	it.l.waitNs.Add(int64(w))
	it.next++
	if it.next == it.nb {
		it.stop()
	}
	return p.b, nil
}

// batchError places an image error in its epoch and batch without
// repeating the package prefix.
type batchError struct {
	epoch, index int
	err          error
}

func (e *batchError) Error() string {
	return fmt.Sprintf("dataset: epoch %d batch %d: %s", e.epoch, e.index, strings.TrimPrefix(e.err.Error(), "dataset: "))
}

func (e *batchError) Unwrap() error { return e.err }

func (it *Iter) ctxErr() error {
	if it.closed.Load() {
		return ErrClosed
	}
	if err := it.ctx.Err(); err != nil {
		return fmt.Errorf("dataset: epoch %d: %w", it.epoch, err)
	}
	return fmt.Errorf("dataset: epoch %d: iterator stopped", it.epoch)
}

func (it *Iter) fail(err error) error {
	if !errors.Is(err, ErrClosed) {
		it.err = err
	}
	it.stop()
	return err
}

// Wait returns the total time this iterator's Next calls blocked for data.
func (it *Iter) Wait() time.Duration { return it.waited }

// Epoch returns the epoch number.
func (it *Iter) Epoch() int { return it.epoch }

// Len returns the number of batches of the epoch.
func (it *Iter) Len() int { return it.nb }

// Close stops the workers and waits for them. It is safe to call twice;
// Next after Close returns ErrClosed.
func (it *Iter) Close() {
	it.closed.Store(true)
	it.stop()
}

// stop cancels and joins the goroutines once and deregisters the iterator.
func (it *Iter) stop() {
	it.once.Do(func() {
		if it.cancel != nil {
			it.cancel()
			it.wg.Wait()
		}
		it.l.mu.Lock()
		delete(it.l.iters, it)
		it.l.mu.Unlock()
	})
}
