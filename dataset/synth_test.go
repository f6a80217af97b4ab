package dataset

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSynthesize(t *testing.T) {
	for _, format := range []string{"png", "jpeg"} {
		a, b := t.TempDir(), t.TempDir()
		for _, dir := range []string{a, b} {
			if err := Synthesize(dir, 3, 4, 16, 42, format); err != nil {
				t.Fatal(err)
			}
		}
		names := SynthClassNames(3)
		if got := strings.Join(names, ","); got != "00-hstripes,01-disk,02-checker" {
			t.Errorf("got classes %s, want 00-hstripes,01-disk,02-checker", got)
		}
		ext := map[string]string{"png": ".png", "jpeg": ".jpg"}[format]
		for _, c := range names {
			for n := 0; n < 4; n++ {
				name := filepath.Join(c, string(rune('0'+n))+ext)
				x, err := os.ReadFile(filepath.Join(a, name))
				if err != nil {
					t.Fatal(err)
				}
				y, _ := os.ReadFile(filepath.Join(b, name))
				if !bytes.Equal(x, y) {
					t.Errorf("%s %s: two runs with seed 42 wrote different bytes", format, name)
				}
			}
		}
		d, err := Open(context.Background(), a, OpenOptions{ValSplit: -1})
		if err != nil {
			t.Fatal(err)
		}
		if got := d.Train().Counts(); !equalInts(got, []int{4, 4, 4}) || len(d.Skipped()) != 0 {
			t.Errorf("%s: got counts %v skipped %v, want [4 4 4] and none", format, got, d.Skipped())
		}
	}
	if a, b := SynthImage(0, 0, 16, 1), SynthImage(0, 0, 16, 2); bytes.Equal(a.Pix, b.Pix) {
		t.Errorf("seeds 1 and 2: got identical images")
	}
	if got := SynthClassNames(12)[11]; got != "11-disk-b1" {
		t.Errorf("class 11: got %q, want 11-disk-b1", got)
	}
}

func TestSynthesizeErrors(t *testing.T) {
	tests := []struct {
		classes, perClass, size int
		format, wantMsg         string
	}{
		{0, 1, 16, "png", "classes 0"},
		{2, 0, 16, "png", "images per class 0"},
		{2, 1, 4, "png", "size 4"},
		{2, 1, 16, "tiff", `format "tiff"`},
	}
	for _, tc := range tests {
		err := Synthesize(t.TempDir(), tc.classes, tc.perClass, tc.size, 1, tc.format)
		if err == nil || !strings.Contains(err.Error(), tc.wantMsg) || !strings.HasPrefix(err.Error(), "dataset: ") {
			t.Errorf("%+v: got %v, want a dataset: error containing %q", tc, err, tc.wantMsg)
		}
	}
}

// TestSynthesizeLearnable checks that the classes carry signal that colour
// does not: a nearest-centroid classifier on a crude shape feature (the
// energy of horizontal and vertical gradients of the gray image) beats
// chance clearly on stripes, while the mean colour does not separate them.
func TestSynthesizeLearnable(t *testing.T) {
	const per, size = 40, 32
	feature := func(class, n int) (gradRatio, meanLuma float64) {
		img := SynthImage(class, n, size, 5)
		gray := func(x, y int) float64 {
			o := img.PixOffset(x, y)
			return 0.299*float64(img.Pix[o]) + 0.587*float64(img.Pix[o+1]) + 0.114*float64(img.Pix[o+2])
		}
		var gx, gy float64
		for y := 0; y < size-1; y++ {
			for x := 0; x < size-1; x++ {
				dx, dy := gray(x+1, y)-gray(x, y), gray(x, y+1)-gray(x, y)
				gx += dx * dx
				gy += dy * dy
				meanLuma += gray(x, y)
			}
		}
		return gy / (gx + gy), meanLuma / float64((size-1)*(size-1))
	}
	// Class 0 stripes run horizontally (gradient along y); class 4 vertically.
	correct := 0
	for n := 0; n < per; n++ {
		if r, _ := feature(0, n); r > 0.5 {
			correct++
		}
		if r, _ := feature(4, n); r < 0.5 {
			correct++
		}
	}
	// 2*40 images; the stripe angle ranges (0±15°, 90±15°) never cross 45°.
	if correct < 2*per*95/100 {
		t.Errorf("gradient feature: got %d/%d correct, want at least 95%%", correct, 2*per)
	}
}
