package dataset

import (
	"bytes"
	"errors"
	"image"
	"image/color"
	"image/color/palette"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/fwbench/fwbench/internal/testfixture"
)

// handMade are the corpus files built byte by byte in gen_test.go; the
// others come out of the standard library's encoders, whose exact bytes
// may change between Go releases, so only their presence is checked (their
// decoding is checked by TestBrokenCorpus).
var handMade = map[string]bool{
	"broken/zero.jpg": true, "broken/text.jpg": true, "broken/huge.png": true,
	"broken/badheader.png": true, "broken/cmyk.jpg": true, "broken/notes.txt": true,
}

// TestCorpusUpToDate checks that the committed testdata is what the
// generators in gen_test.go produce; -update rewrites it.
func TestCorpusUpToDate(t *testing.T) {
	files := corpusFiles()
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		p := filepath.Join("testdata", filepath.FromSlash(name))
		if *update {
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, files[name], 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(p)
		if err != nil {
			t.Fatalf("%s: %v (run go test -run TestCorpusUpToDate ./dataset/ -update)", name, err)
		}
		if handMade[name] && !bytes.Equal(got, files[name]) {
			t.Errorf("%s: got %d committed bytes that differ from the %d generated ones (run with -update)", name, len(got), len(files[name]))
		}
	}
}

// pixelAt decodes data and returns the RGB of displayed pixel (x, y) after
// a resize to the image's own size (an exact copy with the tent kernel).
func pixelAt(t *testing.T, data []byte, x, y int) [3]uint8 {
	t.Helper()
	d, err := decodeBytes(data, DefaultMaxPixels)
	if err != nil {
		t.Fatalf("decode: %v", err)
	}
	w, h := d.displaySize()
	if w != h {
		t.Fatalf("test images must be square, got %dx%d", w, h)
	}
	px := make([]byte, w*w*3)
	resizeRGB(d, w, px)
	o := (y*w + x) * 3
	return [3]uint8{px[o], px[o+1], px[o+2]}
}

func near(a, b [3]uint8, tol int) bool {
	for i := range a {
		d := int(a[i]) - int(b[i])
		if d < -tol || d > tol {
			return false
		}
	}
	return true
}

func TestDecodeColourModels(t *testing.T) {
	plan9 := color.NRGBAModel.Convert(palette.Plan9[200]).(color.NRGBA)
	tests := []struct {
		name   string
		data   []byte
		format string
		x, y   int
		want   [3]uint8
		tol    int // where the tolerance comes from is noted per case
	}{
		// Exact: lossless formats hold the values written.
		{"png rgb", encPNG(quadrants(16, 16)), "png", 12, 4, [3]uint8{0, 255, 0}, 0},
		{"bmp", encBMP(quadrants(16, 16)), "bmp", 4, 12, [3]uint8{0, 0, 255}, 0},
		{"webp lossless", losslessWebP(16, 16, color.NRGBA{10, 20, 30, 255}), "webp", 3, 3, [3]uint8{10, 20, 30}, 0},
		{"paletted png", palettedPNG(), "png", 0, 0, [3]uint8{plan9.R, plan9.G, plan9.B}, 0},
		// Alpha is dropped: the straight colour stays, as PIL convert("RGB").
		{"alpha png", alphaPNG(), "png", 5, 5, [3]uint8{200, 100, 50}, 0},
		// 16-bit: the high byte (0x8040 -> 0x80; 0x1234,0x5678,0x9abc -> 0x12,0x56,0x9a).
		{"gray16 png", gray16PNG(), "png", 1, 1, [3]uint8{0x80, 0x80, 0x80}, 0},
		{"rgba16 png", rgba16PNG(), "png", 1, 1, [3]uint8{0x12, 0x56, 0x9a}, 0},
		// GIF: first frame (red), not the second (blue).
		{"animated gif", animatedGIF(), "gif", 8, 8, [3]uint8{255, 0, 0}, 0},
		// JPEG: quality 100 flat areas come back within a couple of levels.
		{"gray jpeg", grayJPEG(), "jpeg", 8, 8, [3]uint8{77, 77, 77}, 1},
		{"rgb jpeg", encJPEG(quadrants(32, 32), 100), "jpeg", 8, 24, [3]uint8{0, 0, 255}, 3},
		// CMYK (Adobe, inverted) C=M=... per quadrant -> R,G,B,white; DC-only blocks decode exactly.
		{"cmyk jpeg tl", cmykJPEG([][][4]uint8{{{0, 255, 255, 0}, {255, 0, 255, 0}}, {{255, 255, 0, 0}, {0, 0, 0, 0}}}), "jpeg", 4, 4, [3]uint8{255, 0, 0}, 1},
		{"cmyk jpeg br", cmykJPEG([][][4]uint8{{{0, 255, 255, 0}, {255, 0, 255, 0}}, {{255, 255, 0, 0}, {0, 0, 0, 0}}}), "jpeg", 12, 12, [3]uint8{255, 255, 255}, 1},
		// K=128 halves every channel: 255*(1-128/255) = 127.
		{"cmyk jpeg black", cmykJPEG([][][4]uint8{{{0, 0, 0, 128}}}), "jpeg", 4, 4, [3]uint8{127, 127, 127}, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d, err := decodeBytes(tc.data, DefaultMaxPixels)
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if d.format != tc.format {
				t.Errorf("got format %q, want %q", d.format, tc.format)
			}
			if got := pixelAt(t, tc.data, tc.x, tc.y); !near(got, tc.want, tc.tol) {
				t.Errorf("pixel (%d,%d): got %v, want %v ±%d", tc.x, tc.y, got, tc.want, tc.tol)
			}
		})
	}
}

func TestEXIFOrientation(t *testing.T) {
	// A 16×16 quadrant image (TL red, TR green, BL blue, BR white) stored
	// with each orientation; the displayed top-left quadrant is the stored
	// quadrant that the EXIF 2.3 table of tag 0x0112 puts there.
	red, green, blue, white := [3]uint8{255, 0, 0}, [3]uint8{0, 255, 0}, [3]uint8{0, 0, 255}, [3]uint8{255, 255, 255}
	tests := []struct {
		orient       int
		bigEndian    bool
		tl, tr, bl   [3]uint8
		wantOrientOK int
	}{
		{1, false, red, green, blue, 1},
		{2, false, green, red, white, 2},
		{3, true, white, blue, green, 3},
		{4, false, blue, white, red, 4},
		{5, true, red, blue, green, 5},
		{6, false, blue, red, white, 6},
		{7, true, white, green, blue, 7},
		{8, false, green, white, red, 8},
		{9, false, red, green, blue, 1}, // invalid value: ignored
	}
	base := encJPEG(quadrants(16, 16), 100)
	for _, tc := range tests {
		data := withEXIF(base, tc.orient, tc.bigEndian)
		if got := jpegOrientation(data); got != tc.wantOrientOK {
			t.Errorf("orientation %d: got parsed %d, want %d", tc.orient, got, tc.wantOrientOK)
		}
		for _, c := range []struct {
			x, y int
			want [3]uint8
		}{{3, 3, tc.tl}, {12, 3, tc.tr}, {3, 12, tc.bl}} {
			// Tolerance 4: JPEG quality 100 with 4:2:0 chroma, 3 px from edges.
			if got := pixelAt(t, data, c.x, c.y); !near(got, c.want, 4) {
				t.Errorf("orientation %d pixel (%d,%d): got %v, want %v", tc.orient, c.x, c.y, got, c.want)
			}
		}
	}
	if got := jpegOrientation([]byte{0xFF, 0xD8, 0xFF, 0xE1, 0x00}); got != 1 {
		t.Errorf("truncated APP1: got %d, want 1", got)
	}
}

func TestDecodeRejects(t *testing.T) {
	tests := []struct {
		name      string
		data      []byte
		maxPixels int64
		want      error
	}{
		{"empty", nil, DefaultMaxPixels, ErrEmptyFile},
		{"text", []byte("hello"), DefaultMaxPixels, ErrNotImage},
		{"huge declared", testfixture.PNGHeader(100000, 100000, 8), DefaultMaxPixels, ErrTooLarge},
		// 64×64 = 4096 pixels is over a limit of 4095 by one.
		{"limit is inclusive", encPNG(quadrants(64, 64)), 64*64 - 1, ErrTooLarge},
		{"zero width", testfixture.PNGHeader(0, 10, 8), DefaultMaxPixels, ErrCorrupt},
	}
	for _, tc := range tests {
		_, err := decodeBytes(tc.data, tc.maxPixels)
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, err, tc.want)
		}
	}
	if _, err := decodeBytes(encPNG(quadrants(64, 64)), 64*64); err != nil {
		t.Errorf("at the limit: got %v, want nil", err)
	}
}

// TestBrokenCorpus decodes every committed file under testdata/broken.
func TestBrokenCorpus(t *testing.T) {
	tests := []struct {
		file   string
		want   error    // nil: decodes
		pixel  [3]uint8 // for decodable files: pixel (4,4)
		reason string   // start of Skipped.Reason
		size   [2]int   // displayed size of decodable files
	}{
		{file: "truncated.jpg", want: ErrCorrupt, reason: "corrupt or truncated jpeg"},
		{file: "zero.jpg", want: ErrEmptyFile, reason: "empty file"},
		{file: "text.jpg", want: ErrNotImage, reason: "not an image"},
		{file: "huge.png", want: ErrTooLarge, reason: "png declares 100000x100000 pixels"},
		{file: "badheader.png", want: ErrCorrupt, reason: "corrupt png header"},
		{file: "truncated.png", want: ErrCorrupt, reason: "corrupt or truncated png"},
		{file: "notes.txt", want: ErrNotImage, reason: "not an image"},
		{file: "cmyk.jpg", pixel: [3]uint8{255, 0, 0}, size: [2]int{16, 16}},
		{file: "gray16.png", pixel: [3]uint8{0x80, 0x80, 0x80}, size: [2]int{16, 16}},
		{file: "rgba16.png", pixel: [3]uint8{0x12, 0x56, 0x9a}, size: [2]int{16, 16}},
		{file: "animated.gif", pixel: [3]uint8{255, 0, 0}, size: [2]int{16, 16}},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			p := filepath.Join("testdata", "broken", tc.file)
			d, err := decodeFile(p, DefaultMaxPixels, DefaultMaxBytes)
			if tc.want != nil {
				if !errors.Is(err, tc.want) {
					t.Fatalf("got %v, want %v", err, tc.want)
				}
				var ie *ImageError
				if !errors.As(err, &ie) || ie.Path != p || !bytes.HasPrefix([]byte(ie.Reason), []byte(tc.reason)) {
					t.Errorf("got error %q, want path %s and reason starting %q", err, p, tc.reason)
				}
				return
			}
			if err != nil {
				t.Fatalf("got %v, want nil", err)
			}
			if w, h := d.displaySize(); w != tc.size[0] || h != tc.size[1] {
				t.Errorf("got size %dx%d, want %dx%d", w, h, tc.size[0], tc.size[1])
			}
			data, _ := os.ReadFile(p)
			if got := pixelAt(t, data, 4, 4); !near(got, tc.pixel, 1) {
				t.Errorf("pixel (4,4): got %v, want %v", got, tc.pixel)
			}
		})
	}
}

// TestUnreadableFile: a chmod 000 file cannot be read by a normal user but
// can by root (CI runs as root). The test asserts whichever applies.
func TestUnreadableFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "locked.png")
	if err := os.WriteFile(p, encPNG(quadrants(8, 8)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, 0); err != nil {
		t.Fatal(err)
	}
	f, openErr := os.Open(p)
	if openErr == nil {
		f.Close()
	}
	_, err := decodeFile(p, DefaultMaxPixels, DefaultMaxBytes)
	if openErr != nil {
		if !errors.Is(err, ErrUnreadable) {
			t.Errorf("unreadable file: got %v, want ErrUnreadable", err)
		}
	} else if err != nil {
		t.Errorf("chmod 000 file readable by this user (root): got %v, want nil", err)
	}
}

func TestOpaqueRGBGeneric(t *testing.T) {
	// A type without a fast path goes through color.NRGBA64Model.
	m := image.NewAlpha(image.Rect(0, 0, 2, 2))
	m.Pix[0] = 255
	out := opaqueRGB(m).(*image.RGBA)
	if got := out.Pix[:4]; !bytes.Equal(got, []byte{255, 255, 255, 255}) {
		t.Errorf("got %v, want [255 255 255 255]", got)
	}
}
