package dataset

import (
	"bytes"
	"fmt"
	"image"
	"image/jpeg"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"strconv"
)

// synthFamilies are the procedural classes of Synthesize, in class order.
// Class k draws family k mod 10; classes 10 and above repeat the families
// at another scale band ("-b1", "-b2"...), so they differ from their twins
// by size or frequency only and are harder to tell apart.
var synthFamilies = []string{
	"hstripes", // stripes at 0° ± 15°
	"disk",     // filled disc
	"checker",  // checkerboard, rotated ± 15°
	"triangle", // filled triangle, any rotation
	"vstripes", // stripes at 90° ± 15°
	"ring",     // annulus
	"square",   // filled square, any rotation
	"cross",    // plus sign, rotated ± 20°
	"dots",     // grid of dots
	"dstripes", // stripes at 45° ± 10°
}

// SynthClassNames returns the class folder names Synthesize writes for n
// classes: "<k>-<family>", k zero-padded so that byte order is class order.
func SynthClassNames(n int) []string {
	width := max(2, len(strconv.Itoa(n-1)))
	names := make([]string, n)
	for k := range names {
		name := synthFamilies[k%len(synthFamilies)]
		if band := k / len(synthFamilies); band > 0 {
			name += fmt.Sprintf("-b%d", band)
		}
		names[k] = fmt.Sprintf("%0*d-%s", width, k, name)
	}
	return names
}

// Synthesize writes a seeded synthetic class-folder tree:
// dir/<class>/<n>.<png|jpg>, perClass images of size×size for each of
// classes classes. Every class is a shape or texture family (see
// SynthClassNames) drawn with random colours, position, scale, rotation,
// phase, a brightness gradient and per-pixel noise, so that colour alone
// says nothing about the class and a model has to learn shapes. Image n of
// class k depends only on (seed, k, n): the same call writes the same
// bytes. format is "png" or "jpeg" (quality 90).
func Synthesize(dir string, classes, perClass, size int, seed int64, format string) error {
	switch {
	case classes < 1:
		return fmt.Errorf("dataset: synthesize: classes %d must be positive", classes)
	case perClass < 1:
		return fmt.Errorf("dataset: synthesize: images per class %d must be positive", perClass)
	case size < 8 || size > maxImageSize:
		return fmt.Errorf("dataset: synthesize: size %d is outside [8, %d]", size, maxImageSize)
	}
	ext := ""
	switch format {
	case "png":
		ext = ".png"
	case "jpeg", "jpg":
		ext = ".jpg"
	default:
		return fmt.Errorf("dataset: synthesize: format %q, want png or jpeg", format)
	}
	width := len(strconv.Itoa(perClass - 1))
	for k, name := range SynthClassNames(classes) {
		cdir := filepath.Join(dir, name)
		if err := os.MkdirAll(cdir, 0o755); err != nil {
			return fmt.Errorf("dataset: synthesize: %w", err)
		}
		for n := 0; n < perClass; n++ {
			img := SynthImage(k, n, size, seed)
			var buf bytes.Buffer
			var err error
			if ext == ".png" {
				err = png.Encode(&buf, img)
			} else {
				err = jpeg.Encode(&buf, img, &jpeg.Options{Quality: 90})
			}
			if err != nil {
				return fmt.Errorf("dataset: synthesize: %w", err)
			}
			p := filepath.Join(cdir, fmt.Sprintf("%0*d%s", width, n, ext))
			if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
				return fmt.Errorf("dataset: synthesize: %w", err)
			}
		}
	}
	return nil
}

// SynthImage renders image n of class k; it is what Synthesize encodes.
func SynthImage(class, n, size int, seed int64) *image.RGBA {
	r := newRNG(tagSynth, seed, int64(class), int64(n))
	family := class % len(synthFamilies)
	band := float64(class / len(synthFamilies))
	S := float64(size)

	// Colours: background and foreground at least 90 apart in luma, so the
	// shape is visible; their hues are free.
	var bg, fg [3]float64
	for {
		for c := 0; c < 3; c++ {
			bg[c], fg[c] = r.uniform(0, 255), r.uniform(0, 255)
		}
		if math.Abs(luma(bg)-luma(fg)) >= 90 {
			break
		}
	}
	cx := S * r.uniform(0.35, 0.65)
	cy := S * r.uniform(0.35, 0.65)
	scale := S * r.uniform(0.22, 0.36) / (1 + 0.35*band) // shape radius
	period := S * r.uniform(0.12, 0.22) / (1 + 0.5*band) // texture period
	phase := r.uniform(0, 2*math.Pi)
	angle := 0.0
	switch family {
	case 0, 2:
		angle = r.uniform(-15, 15)
	case 4:
		angle = 90 + r.uniform(-15, 15)
	case 9:
		angle = 45 + r.uniform(-10, 10)
	case 7:
		angle = r.uniform(-20, 20)
	case 3, 6:
		angle = r.uniform(0, 360)
	default:
		angle = r.uniform(-10, 10)
	}
	th := angle * math.Pi / 180
	cosT, sinT := math.Cos(th), math.Sin(th)
	gx, gy := r.uniform(-40, 40)/S, r.uniform(-40, 40)/S // brightness gradient per pixel
	noise := r.uniform(6, 22)

	img := image.NewRGBA(image.Rect(0, 0, size, size))
	for y := 0; y < size; y++ {
		for x := 0; x < size; x++ {
			// Coordinates relative to the centre, rotated into the pattern frame.
			dx, dy := float64(x)+0.5-cx, float64(y)+0.5-cy
			u := float64(dx*cosT) + float64(dy*sinT)
			v := float64(-dx*sinT) + float64(dy*cosT)
			on := synthCoverage(family, u, v, scale, period, phase)
			shade := float64(gx*dx) + float64(gy*dy)
			o := img.PixOffset(x, y)
			for c := 0; c < 3; c++ {
				val := bg[c] + float64(on*(fg[c]-bg[c])) + shade + float64(noise*(r.float64()+r.float64()-1))
				img.Pix[o+c] = uint8(math.Round(math.Min(255, math.Max(0, val))))
			}
			img.Pix[o+3] = 255
		}
	}
	return img
}

func luma(c [3]float64) float64 { return 0.299*c[0] + 0.587*c[1] + 0.114*c[2] }

// synthCoverage is 1 where the pattern of family is drawn at (u, v), the
// offset from the pattern centre in its rotated frame, else 0.
func synthCoverage(family int, u, v, scale, period, phase float64) float64 {
	b := func(ok bool) float64 {
		if ok {
			return 1
		}
		return 0
	}
	rad := math.Hypot(u, v)
	switch family {
	case 0, 4, 9: // stripes across v
		return b(math.Sin(2*math.Pi*v/period+phase) > 0)
	case 1: // disk
		return b(rad <= scale)
	case 2: // checkerboard
		i := math.Floor(u/period + phase)
		j := math.Floor(v / period)
		return b(int(i+j)%2 == 0)
	case 3: // equilateral triangle with circumradius scale
		in := true
		for k := 0; k < 3; k++ {
			a := float64(k)*2*math.Pi/3 + math.Pi/2
			if float64(u*math.Cos(a))+float64(v*math.Sin(a)) > scale/2 {
				in = false
			}
		}
		return b(in)
	case 5: // ring
		return b(rad <= scale && rad >= 0.6*scale)
	case 6: // square of half-side 0.8*scale
		h := 0.8 * scale
		return b(math.Abs(u) <= h && math.Abs(v) <= h)
	case 7: // plus sign: two bars of half-width scale/4
		w := scale / 4
		return b(math.Abs(u) <= w && math.Abs(v) <= 1.2*scale || math.Abs(v) <= w && math.Abs(u) <= 1.2*scale)
	case 8: // grid of dots with spacing period
		fu := u/period + phase/(2*math.Pi) - math.Floor(u/period+phase/(2*math.Pi)) - 0.5
		fv := v/period - math.Floor(v/period) - 0.5
		return b(math.Hypot(fu, fv) <= 0.28)
	}
	return 0
}
