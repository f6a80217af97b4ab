package dataset

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
)

// CacheMemory is the LoaderConfig.Cache value for an in-memory cache.
const CacheMemory = "memory"

// cache holds the decoded and resized S×S packed RGB bytes of images.
// Entries are written once and never change.
type cache interface {
	get(i int) ([]byte, bool)
	// has reports whether entry i is held, more cheaply than get.
	has(i int) bool
	// put offers px as entry i and reports whether the cache holds it
	// afterwards (a full memory cache or an unwritable folder declines).
	put(i int, px []byte) bool
}

// memCache keeps entries in memory up to a budget of bytes: N*S*S*3 bytes
// once full when the budget allows it. Entries past the budget are not
// kept (the loader computes them each time, as without a cache). The
// accounting is atomic: puts race across workers, and a reservation is
// taken before an entry is stored, so the budget is never exceeded.
type memCache struct {
	slots  []atomic.Pointer[[]byte]
	size   int64 // bytes per entry, S*S*3
	budget int64 // bytes
	used   atomic.Int64
}

func newMemCache(n, size int, budget int64) *memCache {
	return &memCache{slots: make([]atomic.Pointer[[]byte], n), size: int64(size), budget: budget}
}

func (c *memCache) get(i int) ([]byte, bool) {
	p := c.slots[i].Load()
	if p == nil {
		return nil, false
	}
	return *p, true
}

func (c *memCache) has(i int) bool { return c.slots[i].Load() != nil }

func (c *memCache) put(i int, px []byte) bool {
	if c.slots[i].Load() != nil {
		return true
	}
	if !c.reserve() {
		return false
	}
	c.store(i, px)
	return true
}

// reserve takes one entry's bytes from the budget, or reports false when
// they do not fit.
func (c *memCache) reserve() bool {
	if c.used.Add(c.size) > c.budget {
		c.used.Add(-c.size)
		return false
	}
	return true
}

// release gives back a reservation that will not be stored.
func (c *memCache) release() { c.used.Add(-c.size) }

// store puts px in slot i under a reservation taken with reserve; it gives
// the reservation back when another worker stored the entry first.
func (c *memCache) store(i int, px []byte) {
	if !c.slots[i].CompareAndSwap(nil, &px) {
		c.release()
	}
}

// full reports whether no further entry fits in the budget.
func (c *memCache) full() bool { return c.used.Load()+c.size > c.budget }

// bytes returns the bytes the cache holds or has reserved.
func (c *memCache) bytes() int64 { return c.used.Load() }

// DefaultCacheBytes is the memory cache's budget when LoaderConfig.CacheBytes
// is 0: an eighth of the memory this process may use (the smaller of
// /proc/meminfo's MemTotal and the cgroup v2 limit memory.max), at most
// 2 GiB; 2 GiB where neither can be read.
func DefaultCacheBytes() int64 {
	const ceiling = 2 << 30
	total := physicalMemory()
	if total <= 0 {
		return ceiling
	}
	return min(ceiling, total/8)
}

// physicalMemory returns the memory available to this process in bytes,
// or 0 when it cannot tell.
func physicalMemory() int64 {
	var total int64
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) == 3 && f[0] == "MemTotal:" && f[2] == "kB" {
				if kb, err := strconv.ParseInt(f[1], 10, 64); err == nil && kb > 0 {
					total = kb << 10
				}
			}
		}
	}
	if b, err := os.ReadFile("/sys/fs/cgroup/memory.max"); err == nil {
		if lim, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64); err == nil && lim > 0 && (total == 0 || lim < total) {
			total = lim // "max" (no limit) does not parse
		}
	}
	return total
}

// diskCache keeps one raw file of S*S*3 bytes (packed RGB, row-major) per
// image in a folder. A file's name is the SHA-256 of the cache version, the
// source (path, size, modification time, or IDX position) and S, so a
// changed source or size never reads a stale entry. Writes are atomic
// (temporary file + rename); a short or unreadable entry is recomputed.
type diskCache struct {
	dir  string
	size int // S*S*3
	keys []string
}

func newDiskCache(dir string, s *Subset, side int) (*diskCache, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("dataset: cache: %w", err)
	}
	c := &diskCache{dir: dir, size: side * side * 3, keys: make([]string, s.Len())}
	for i, it := range s.items {
		src := it.path
		if abs, err := filepath.Abs(it.path); err == nil {
			src = abs
		}
		h := sha256.Sum256(fmt.Appendf(nil, "fwbench-dataset-cache-v1\x00%s\x00%d\x00%d\x00%d\x00%d", src, it.size, it.mtime, it.pos, side))
		c.keys[i] = hex.EncodeToString(h[:16]) + ".u8"
	}
	return c, nil
}

func (c *diskCache) get(i int) ([]byte, bool) {
	b, err := os.ReadFile(filepath.Join(c.dir, c.keys[i]))
	if err != nil || len(b) != c.size {
		return nil, false
	}
	return b, true
}

// put is best effort: a cache that cannot be written only costs speed.
func (c *diskCache) put(i int, px []byte) bool {
	f, err := os.CreateTemp(c.dir, ".tmp-*")
	if err != nil {
		return false
	}
	_, werr := f.Write(px)
	cerr := f.Close()
	if werr != nil || cerr != nil || os.Rename(f.Name(), filepath.Join(c.dir, c.keys[i])) != nil {
		os.Remove(f.Name())
		return false
	}
	return true
}

// has reports whether entry i is on disk with the right size, without
// reading it.
func (c *diskCache) has(i int) bool {
	fi, err := os.Stat(filepath.Join(c.dir, c.keys[i]))
	return err == nil && fi.Mode().IsRegular() && fi.Size() == int64(c.size)
}
