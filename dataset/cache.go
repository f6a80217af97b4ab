package dataset

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
)

// CacheMemory is the LoaderConfig.Cache value for an in-memory cache.
const CacheMemory = "memory"

// cache holds the decoded and resized S×S packed RGB bytes of images.
// Entries are written once and never change.
type cache interface {
	get(i int) ([]byte, bool)
	put(i int, px []byte)
}

// memCache keeps every entry in memory: N*S*S*3 bytes once full.
type memCache struct{ slots []atomic.Pointer[[]byte] }

func newMemCache(n int) *memCache { return &memCache{slots: make([]atomic.Pointer[[]byte], n)} }

func (c *memCache) get(i int) ([]byte, bool) {
	p := c.slots[i].Load()
	if p == nil {
		return nil, false
	}
	return *p, true
}

func (c *memCache) put(i int, px []byte) { c.slots[i].Store(&px) }

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
func (c *diskCache) put(i int, px []byte) {
	f, err := os.CreateTemp(c.dir, ".tmp-*")
	if err != nil {
		return
	}
	_, werr := f.Write(px)
	cerr := f.Close()
	if werr != nil || cerr != nil || os.Rename(f.Name(), filepath.Join(c.dir, c.keys[i])) != nil {
		os.Remove(f.Name())
	}
}
