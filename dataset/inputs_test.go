//go:build unix

package dataset

import (
	"context"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"image"
	"image/color"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/fwbench/fwbench/internal/testfixture"
)

// inspectWithin runs Inspect and fails the test instead of hanging when it does not return
// within 20 s (a FIFO opened for reading blocks until a writer comes).
func inspectWithin(t *testing.T, ctx context.Context, dir string, opt OpenOptions) (*Report, error) {
	t.Helper()
	type res struct {
		r   *Report
		err error
	}
	ch := make(chan res, 1)
	go func() { r, err := Inspect(ctx, dir, opt); ch <- res{r, err} }()
	select {
	case r := <-ch:
		return r.r, r.err
	case <-time.After(20 * time.Second):
		t.Fatalf("Inspect(%s) did not return within 20 s", dir)
		return nil, nil
	}
}

func skipReason(r *Report, name string) string {
	for _, s := range r.Skipped {
		if filepath.Base(s.Path) == name {
			return s.Reason
		}
	}
	return ""
}

// TestNonRegularFilesAreSkipped: only regular files are opened from a data folder; the rest
// is listed in Skipped with a reason, and the data set stays usable.
func TestNonRegularFilesAreSkipped(t *testing.T) {
	files := smallPNGs("a", 0, 3, nil)
	smallPNGs("b", 1, 3, files)
	dir := writeTree(t, files)
	a := filepath.Join(dir, "a")
	if err := syscall.Mkfifo(filepath.Join(a, "x.png"), 0o644); err != nil {
		t.Fatal(err)
	}
	mustLink := func(target, name string) {
		if err := os.Symlink(target, filepath.Join(a, name)); err != nil {
			t.Fatal(err)
		}
	}
	mustLink("loop2.png", "loop1.png")          // a cycle of links
	mustLink("loop1.png", "loop2.png")          //
	mustLink(dir, "root.png")                   // a link to the data root: not followed
	mustLink("missing.png", "dangling.png")     // points nowhere
	mustLink(filepath.Join("aa.png"), "ok.png") // a link to a regular image is used
	r, err := inspectWithin(t, context.Background(), dir, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, reason string }{
		{"x.png", "not a regular file (a named pipe), not opened"},
		{"loop1.png", "too many levels of symbolic links"},
		{"loop2.png", "too many levels of symbolic links"},
		{"root.png", "not a regular file (a folder), not opened"},
		{"dangling.png", "no such file or directory"},
	} {
		if got := skipReason(r, tc.name); !strings.Contains(got, tc.reason) {
			t.Errorf("%s: got reason %q, want it to contain %q", tc.name, got, tc.reason)
		}
	}
	// 3 PNGs + ok.png in a, 3 in b: 7 images; the 5 others are skipped.
	if r.Images != 7 || len(r.Skipped) != 5 || len(r.Problems) != 0 {
		t.Errorf("got %d images, %d skipped, problems %v; want 7, 5, none", r.Images, len(r.Skipped), r.Problems)
	}
	// Strict: the first non-regular file (in path order) is an error, still without blocking.
	if _, err := inspectWithin(t, context.Background(), dir, OpenOptions{Strict: true}); !errors.Is(err, ErrUnreadable) {
		t.Errorf("strict: got %v, want ErrUnreadable", err)
	}
}

// TestFIFOIDXIsNotOpened: an IDX file that is a named pipe is refused, not opened.
func TestFIFOIDXIsNotOpened(t *testing.T) {
	dir := writeTree(t, map[string][]byte{"train-labels-idx1-ubyte": idxLabelsBytes([]byte{0, 1})})
	if err := syscall.Mkfifo(filepath.Join(dir, "train-images-idx3-ubyte"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := inspectWithin(t, context.Background(), dir, OpenOptions{})
	if err == nil || !strings.Contains(err.Error(), "named pipe") {
		t.Errorf("got %v, want an error naming the named pipe", err)
	}
}

// TestClassFolderLinks: a class folder that links to the data root, to a folder above it,
// or to another class is refused (Open fails with ErrLayout, Inspect lists the problem)
// instead of becoming a class holding every other class's images.
func TestClassFolderLinks(t *testing.T) {
	for _, tc := range []struct {
		name   string
		target func(root string) string
		layout string // "" or "train" for a pre-split tree
		want   string
	}{
		{"link to the root", func(root string) string { return root }, "", "holds the data set itself"},
		{"relative link to the root", func(string) string { return "." }, "", "holds the data set itself"},
		{"link above the root", func(root string) string { return filepath.Dir(root) }, "", "holds the data set itself"},
		{"link to another class", func(root string) string { return filepath.Join(root, "a") }, "", "are the same folder"},
		{"pre-split: link to the split", func(split string) string { return split }, "train", "holds the data set itself"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			prefix := ""
			if tc.layout != "" {
				prefix = tc.layout + "/"
			}
			files := smallPNGs(prefix+"a", 0, 3, nil)
			smallPNGs(prefix+"b", 1, 3, files)
			root := filepath.Join(writeTree(t, files), "data")
			os.MkdirAll(root, 0o755)
			for n, b := range files {
				p := filepath.Join(root, filepath.FromSlash(n))
				os.MkdirAll(filepath.Dir(p), 0o755)
				os.WriteFile(p, b, 0o644)
			}
			classRoot := filepath.Join(root, tc.layout)
			if err := os.Symlink(tc.target(classRoot), filepath.Join(classRoot, "z")); err != nil {
				t.Fatal(err)
			}
			r, err := inspectWithin(t, context.Background(), root, OpenOptions{})
			if err != nil {
				t.Fatal(err)
			}
			// The refused class also has no image, which is a second problem.
			if len(r.Problems) == 0 || !strings.Contains(r.Problems[0], tc.want) {
				t.Errorf("got problems %q, want the first containing %q", r.Problems, tc.want)
			}
			// The linked class got no image: 3 + 3 images, not 3 + 3 + 6.
			if r.Images != 6 {
				t.Errorf("got %d images, want 6", r.Images)
			}
			if _, err := Open(context.Background(), root, OpenOptions{}); !errors.Is(err, ErrLayout) {
				t.Errorf("Open: got %v, want ErrLayout", err)
			}
		})
	}
}

// TestInspectHonoursContext: a cancelled context stops Inspect and Open with its error.
func TestInspectHonoursContext(t *testing.T) {
	files := smallPNGs("a", 0, 20, nil)
	smallPNGs("b", 1, 20, files)
	dir := writeTree(t, files)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := inspectWithin(t, ctx, dir, OpenOptions{}); !errors.Is(err, context.Canceled) {
		t.Errorf("Inspect: got %v, want context.Canceled", err)
	}
	if _, err := Open(ctx, dir, OpenOptions{}); !errors.Is(err, context.Canceled) {
		t.Errorf("Open: got %v, want context.Canceled", err)
	}
}

// TestIDXDeclaredSizeOverFile: an IDX header that declares far more data than the file
// holds is refused as truncated without allocating what it declares.
func TestIDXDeclaredSizeOverFile(t *testing.T) {
	// 5,000,000 images of 28×28 is 3.92e9 bytes, under the 1<<32 plausibility bound, so
	// only the file size can refuse it; the file holds 16 header bytes and 10 pixels.
	hdr := binary.BigEndian.AppendUint32(nil, idxMagicImages)
	for _, v := range []uint32{5_000_000, 28, 28} {
		hdr = binary.BigEndian.AppendUint32(hdr, v)
	}
	hdr = append(hdr, make([]byte, 10)...)
	labels := binary.BigEndian.AppendUint32(nil, idxMagicLabels)
	labels = binary.BigEndian.AppendUint32(labels, 9_000_000) // 9e6 labels declared, 2 present
	labels = append(labels, 0, 1)
	good := idxImagesBytes(2, 28, 28)
	for _, tc := range []struct {
		name           string
		images, labels []byte
		want           string
	}{
		{"raw images", hdr, idxLabelsBytes([]byte{0, 1}), "truncated pixel data: the header declares 3920000000 bytes, the file holds 10"},
		{"gzipped images", gz(hdr), idxLabelsBytes([]byte{0, 1}), "truncated pixel data: the header declares 3920000000 bytes, the file holds 10"},
		{"raw labels", good, labels, "truncated labels: the header declares 9000000 bytes, the file holds 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := writeTree(t, map[string][]byte{"train-images-idx3-ubyte": tc.images, "train-labels-idx1-ubyte": tc.labels})
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			_, err := Open(context.Background(), dir, OpenOptions{})
			runtime.ReadMemStats(&after)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error containing %q", err, tc.want)
			}
			// Reading 10 bytes needs a few KB of buffers (bufio 64 KiB, gzip's window);
			// 16 MiB is far below the 3.9 GB declared.
			if got := after.TotalAlloc - before.TotalAlloc; got > 16<<20 {
				t.Errorf("allocated %d bytes, want at most %d", got, 16<<20)
			}
		})
	}
}

// TestDecodeCost: the memory charged to DecodeBudget per header, bytes per pixel from the
// decoder's buffer plus opaqueRGB's copy.
func TestDecodeCost(t *testing.T) {
	for _, tc := range []struct {
		name  string
		model color.Model
		want  int64
	}{
		// 7000×7000 16-bit RGB PNG (the case): 8 bytes decoded + 4 converted.
		{"16-bit RGB", color.RGBA64Model, 7000 * 7000 * 12},
		{"16-bit gray", color.Gray16Model, 7000 * 7000 * 3},
		{"8-bit gray", color.GrayModel, 7000 * 7000 * 1},
		{"JPEG YCbCr", color.YCbCrModel, 7000 * 7000 * 3},
		{"8-bit RGBA", color.NRGBAModel, 7000 * 7000 * 8},
		{"paletted", color.Palette{color.Black}, 7000 * 7000 * 12},
	} {
		if got := decodeCost(image.Config{ColorModel: tc.model, Width: 7000, Height: 7000}); got != tc.want {
			t.Errorf("%s: got %d, want %d", tc.name, got, tc.want)
		}
	}
	// The images fit DefaultMaxPixels (49e6 < 50e6) and one alone fits the budget,
	// two do not: they decode one at a time.
	if c := decodeCost(image.Config{ColorModel: color.RGBA64Model, Width: 7000, Height: 7000}); c > DecodeBudget || 2*c <= DecodeBudget {
		t.Errorf("cost %d: want one within DecodeBudget %d and two over it", c, DecodeBudget)
	}
}

// TestBudgetBoundsConcurrency: holders of a budget never hold more than it at once, and a
// request above the whole budget runs alone instead of waiting forever.
func TestBudgetBoundsConcurrency(t *testing.T) {
	b := newBudget(100)
	var held, peak atomic.Int64
	var wg sync.WaitGroup
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func(n int64) {
			defer wg.Done()
			got := b.acquire(n)
			now := held.Add(got)
			for p := peak.Load(); now > p && !peak.CompareAndSwap(p, now); p = peak.Load() {
			}
			time.Sleep(2 * time.Millisecond)
			held.Add(-got)
			b.release(got)
		}([]int64{60, 30, 500}[i%3])
	}
	wg.Wait()
	if p := peak.Load(); p > 100 {
		t.Errorf("peak held %d, want at most the budget 100", p)
	}
	if b.free != 100 {
		t.Errorf("free after all released: got %d, want 100", b.free)
	}
}

// TestMaxPixelsFromHeader: a 7000×7000 16-bit PNG header is refused from its header under
// a lower MaxPixels, before any pixel buffer exists.
func TestMaxPixelsFromHeader(t *testing.T) {
	png := testfixture.PNGHeader(7000, 7000, 8)
	// IHDR bit depth (file byte 24) 16 instead of 8, and the chunk's CRC again.
	png[24] = 16
	binary.BigEndian.PutUint32(png[29:], crc32.ChecksumIEEE(png[12:29]))
	dir := writeTree(t, map[string][]byte{"a/big.png": png})
	r, err := Inspect(context.Background(), dir, OpenOptions{MaxPixels: 40_000_000})
	if err != nil {
		t.Fatal(err)
	}
	want := "declares 7000x7000 pixels, over the limit of 40000000"
	if got := skipReason(r, "big.png"); !strings.Contains(got, want) {
		t.Errorf("got reason %q, want it to contain %q", got, want)
	}
}
