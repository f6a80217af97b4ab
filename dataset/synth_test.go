package dataset

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
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
	const per, size = 400, 32
	// features of image n of class k: the gradient ratio, then the mean luma and the mean
	// R, G and B of the image.
	features := func(class, n int) [5]float64 {
		img := SynthImage(class, n, size, 5)
		px := func(x, y, c int) float64 { return float64(img.Pix[img.PixOffset(x, y)+c]) }
		gray := func(x, y int) float64 { return 0.299*px(x, y, 0) + 0.587*px(x, y, 1) + 0.114*px(x, y, 2) }
		var gx, gy float64
		var f [5]float64
		for y := 0; y < size-1; y++ {
			for x := 0; x < size-1; x++ {
				dx, dy := gray(x+1, y)-gray(x, y), gray(x, y+1)-gray(x, y)
				gx += dx * dx
				gy += dy * dy
				f[1] += gray(x, y)
				for c := range 3 {
					f[2+c] += px(x, y, c)
				}
			}
		}
		f[0] = gy / (gx + gy)
		for i := 1; i < 5; i++ {
			f[i] /= float64((size - 1) * (size - 1))
		}
		return f
	}
	// Class 0 stripes run horizontally (gradient along y); class 4 vertically.
	var a, b [5][]float64
	for n := range per {
		fa, fb := features(0, n), features(4, n)
		for i := range 5 {
			a[i], b[i] = append(a[i], fa[i]), append(b[i], fb[i])
		}
	}
	correct := 0
	for n := range per {
		if a[0][n] > 0.5 {
			correct++
		}
		if b[0][n] < 0.5 {
			correct++
		}
	}
	// 2*400 images; the stripe angle ranges (0±15°, 90±15°) never cross 45°.
	if correct < 2*per*95/100 {
		t.Errorf("gradient feature: got %d/%d correct, want at least 95%%", correct, 2*per)
	}
	// SynthImage draws the colours, the brightness gradient and the noise the same way for
	// every class (only the pattern's family, angle and scale depend on the class), and both
	// classes here are stripes covering half the image, so the mean colour has one
	// distribution for both. The best threshold on a feature classifies 1/2 + D/2 of the
	// images right, where D is the two-sample Kolmogorov-Smirnov statistic; with one
	// distribution, D exceeds c(α)·√(2/per) = 1.95·√(2/400) = 0.138 with probability α = 0.001
	// (the asymptotic critical value, c(0.001) = √(−ln(0.001/2)/2) = 1.95). The gradient
	// feature, which does separate the classes, must exceed the same bound. Seed 5 makes the
	// test deterministic.
	bound := math.Sqrt(-math.Log(0.001/2)/2) * math.Sqrt(2.0/per)
	for i, name := range []string{"gradient ratio", "mean luma", "mean red", "mean green", "mean blue"} {
		d := ksStatistic(a[i], b[i])
		t.Logf("%s: KS D = %.3f (bound %.3f), best threshold accuracy %.1f%%", name, d, bound, 100*(0.5+d/2))
		if separates := i == 0; (d > bound) != separates {
			want := fmt.Sprintf("<= %.3f (colour must not tell the classes apart)", bound)
			if separates {
				want = fmt.Sprintf("> %.3f", bound)
			}
			t.Errorf("%s: got KS D = %.3f between classes 0 and 4, want %s", name, d, want)
		}
	}
}

// ksStatistic is the two-sample Kolmogorov-Smirnov statistic: the largest
// difference between the empirical distribution functions of a and b.
func ksStatistic(a, b []float64) float64 {
	a, b = slices.Sorted(slices.Values(a)), slices.Sorted(slices.Values(b))
	var d float64
	i, j := 0, 0
	for i < len(a) && j < len(b) {
		x := min(a[i], b[j])
		for i < len(a) && a[i] <= x {
			i++
		}
		for j < len(b) && b[j] <= x {
			j++
		}
		d = max(d, math.Abs(float64(i)/float64(len(a))-float64(j)/float64(len(b))))
	}
	return d
}
