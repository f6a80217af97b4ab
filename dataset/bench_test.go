package dataset

import (
	"context"
	"io"
	"testing"
)

// BenchmarkLoader224 measures the loader at the study's 224 px: 256×256
// synthetic JPEGs (quality 90) decoded, resized to 224×224, augmented with
// PaperAugment and normalised, with the default worker pool (one per core).
// It reports images/s (wall clock, all cores), the time Next waited per
// image, and the CPU time per image (all goroutines, robust to other load
// on the machine). The cached cases are measured after one warm-up epoch,
// so they skip decode and resize.
func BenchmarkLoader224(b *testing.B) {
	dir := b.TempDir()
	const images = 48
	if err := Synthesize(dir, 3, images/3, 256, 1, "jpeg"); err != nil {
		b.Fatal(err)
	}
	d, err := Open(context.Background(), dir, OpenOptions{ValSplit: -1})
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name, cache string
		augment     Augment
	}{
		{"no-cache", "", PaperAugment()},
		{"memory-cache", CacheMemory, PaperAugment()},
		{"disk-cache", b.TempDir(), PaperAugment()},
		{"no-cache-no-augment", "", Augment{}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			l, err := NewLoader(d.Train(), LoaderConfig{ImageSize: 224, BatchSize: 16, Shuffle: true, Seed: 1,
				Normalize: NormImageNet, Augment: bc.augment, Cache: bc.cache})
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			run := func(epoch int) int {
				it := l.Epoch(context.Background(), epoch)
				defer it.Close()
				n := 0
				for {
					batch, err := it.Next()
					if err == io.EOF {
						return n
					}
					if err != nil {
						b.Fatal(err)
					}
					n += batch.N
				}
			}
			if bc.cache != "" {
				run(-1) // fill the cache
			}
			w0, cpu0 := l.Wait(), processCPU()
			b.ResetTimer()
			total := 0
			for i := 0; i < b.N; i++ {
				total += run(i)
			}
			b.ReportMetric(float64(total)/b.Elapsed().Seconds(), "images/s")
			b.ReportMetric(float64((l.Wait()-w0).Microseconds())/float64(total), "wait-µs/image")
			b.ReportMetric(float64((processCPU()-cpu0).Microseconds())/float64(total), "cpu-µs/image")
		})
	}
}

// BenchmarkWarp is the augmentation alone: one 224×224 affine warp plus
// ImageNet normalisation, fused row by row ("fast") and as the loader did
// it before (warpReference, then a second pass to normalise).
func BenchmarkWarp(b *testing.B) {
	const s = 224
	src, dst := benchImage(s)
	n, _ := newNormalizer(NormImageNet)
	m := PaperAugment().draw(1, 0, 0, s, s).matrix(s, s)
	for _, bc := range []struct {
		name string
		f    func()
	}{
		{"fast", func() { warp(src, s, m, dst, n.inPlace) }},
		{"reference", func() { warpReference(src, s, m, dst); n.inPlace(dst) }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				bc.f()
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "images/s")
		})
	}
}

// BenchmarkWarmedBatch is one step's loader work after Loader.Warm: 224 px
// batches of 32 from a full memory cache, ImageNet normalisation, with and
// without PaperAugment. It reports the process CPU time per batch.
func BenchmarkWarmedBatch(b *testing.B) {
	dir := b.TempDir()
	if err := Synthesize(dir, 2, 16, 64, 1, "png"); err != nil {
		b.Fatal(err)
	}
	d, err := Open(context.Background(), dir, OpenOptions{ValSplit: -1})
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name    string
		augment Augment
	}{{"no-augment", Augment{}}, {"augment", PaperAugment()}} {
		b.Run(bc.name, func(b *testing.B) {
			l, err := NewLoader(d.Train(), LoaderConfig{ImageSize: 224, BatchSize: 32, Shuffle: true, Seed: 1,
				DropLast: true, Normalize: NormImageNet, Augment: bc.augment, Cache: CacheMemory})
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			if _, err := l.Warm(context.Background()); err != nil {
				b.Fatal(err)
			}
			cpu0 := processCPU()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				it := l.Epoch(context.Background(), i)
				if _, err := it.Next(); err != nil {
					b.Fatal(err)
				}
				it.Close()
			}
			b.ReportMetric(float64((processCPU()-cpu0).Microseconds())/1e3/float64(b.N), "cpu-ms/batch")
		})
	}
}

// BenchmarkFromUint8 is the normalisation of one cached 224×224 image
// without augmentation, into a buffer already in memory.
func BenchmarkFromUint8(b *testing.B) {
	const s = 224
	src, dst := benchImage(s)
	for _, mode := range []string{NormRescale, NormCaffe} {
		n, _ := newNormalizer(mode)
		b.Run(mode, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				n.fromUint8(src, dst)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(src)), "ns/value")
		})
	}
}

// benchImage is an s×s RGB test pattern and a float32 buffer of its size.
func benchImage(s int) ([]uint8, []float32) {
	src := make([]uint8, s*s*3)
	for i := range src {
		src[i] = uint8(i * 7)
	}
	return src, make([]float32, s*s*3)
}
