package dataset

import (
	"math"
	"testing"
)

// ramp returns an s×s packed RGB image with R = row*10, G = col*10, B = 7.
func ramp(s int) []uint8 {
	px := make([]uint8, s*s*3)
	for r := 0; r < s; r++ {
		for c := 0; c < s; c++ {
			o := (r*s + c) * 3
			px[o], px[o+1], px[o+2] = uint8(r*10), uint8(c*10), 7
		}
	}
	return px
}

func TestWarp(t *testing.T) {
	const s = 5
	src := ramp(s)
	at := func(x []float32, r, c int) [3]float32 { o := (r*s + c) * 3; return [3]float32{x[o], x[o+1], x[o+2]} }
	// Each case gives the source (row, col) that output (r, c) must show,
	// with rows/cols clamped to the edge ("nearest" fill).
	clamp := func(v int) int { return min(max(v, 0), s-1) }
	tests := []struct {
		name string
		p    affine
		src  func(r, c int) (int, int)
	}{
		{"identity", affine{Zx: 1, Zy: 1}, func(r, c int) (int, int) { return r, c }},
		{"flip", affine{Zx: 1, Zy: 1, Flip: true}, func(r, c int) (int, int) { return r, s - 1 - c }},
		// Keras: input = output + (tx, ty), so content moves up/left.
		{"shift rows +1", affine{Zx: 1, Zy: 1, Tx: 1}, func(r, c int) (int, int) { return clamp(r + 1), c }},
		{"shift cols -2", affine{Zx: 1, Zy: 1, Ty: -2}, func(r, c int) (int, int) { return r, clamp(c - 2) }},
		// theta=90°: [[cos,-sin],[sin,cos]] about the centre (2,2): in = (4-c, r).
		{"rotate 90", affine{Zx: 1, Zy: 1, Theta: 90}, func(r, c int) (int, int) { return s - 1 - c, r }},
		// Zoom 2 about the centre samples (2r-2, 2c-2), clamped.
		{"zoom 2", affine{Zx: 2, Zy: 2}, func(r, c int) (int, int) { return clamp(2*r - 2), clamp(2*c - 2) }},
	}
	for _, tc := range tests {
		dst := make([]float32, s*s*3)
		warp(src, s, tc.p.matrix(s, s), dst, nil)
		for r := 0; r < s; r++ {
			for c := 0; c < s; c++ {
				sr, sc := tc.src(r, c)
				want := [3]float32{float32(sr * 10), float32(sc * 10), 7}
				got := at(dst, r, c)
				for k := range got {
					if math.Abs(float64(got[k]-want[k])) > 1e-4 {
						t.Errorf("%s (%d,%d): got %v, want %v", tc.name, r, c, got, want)
						break
					}
				}
			}
		}
	}
	// Half-pixel shift: bilinear average of neighbours, (r*10 + (r+1)*10)/2.
	dst := make([]float32, s*s*3)
	warp(src, s, affine{Zx: 1, Zy: 1, Tx: 0.5}.matrix(s, s), dst, nil)
	if got := at(dst, 1, 0)[0]; got != 15 {
		t.Errorf("half shift: got %v, want 15", got)
	}
}

func TestAugmentDraw(t *testing.T) {
	a := PaperAugment()
	if a.Shear < 11.45 || a.Shear > 11.47 {
		t.Errorf("paper shear: got %v°, want 0.2 rad = 11.459°", a.Shear)
	}
	if !a.Enabled() || (Augment{}).Enabled() {
		t.Errorf("Enabled: got %v for paper and %v for zero, want true and false", a.Enabled(), (Augment{}).Enabled())
	}
	if p, q := a.draw(1, 2, 3, 64, 64), a.draw(1, 2, 3, 64, 64); p != q {
		t.Errorf("same key: got %+v and %+v", p, q)
	}
	if p, q := a.draw(1, 2, 3, 64, 64), a.draw(1, 2, 4, 64, 64); p == q {
		t.Errorf("other index: got the same draw %+v", p)
	}
	// Ranges hold, and flips happen about half the time: 2000 fair coin
	// flips fall in [900, 1100] with probability 1 - 8e-6 (4.5 sigma).
	flips := 0
	for i := 0; i < 2000; i++ {
		p := a.draw(9, 0, i, 64, 32)
		if math.Abs(p.Theta) > 20 || math.Abs(p.Tx) > 0.2*64 || math.Abs(p.Ty) > 0.2*32 ||
			math.Abs(p.Shear) > a.Shear || p.Zx < 0.8 || p.Zx > 1.2 || p.Zy < 0.8 || p.Zy > 1.2 {
			t.Fatalf("draw %d out of range: %+v", i, p)
		}
		if p.Flip {
			flips++
		}
	}
	if flips < 900 || flips > 1100 {
		t.Errorf("got %d flips in 2000, want 900..1100", flips)
	}
	// Turning an option off leaves the others' values unchanged.
	b := a
	b.Rotation = 0
	p, q := a.draw(5, 1, 1, 64, 64), b.draw(5, 1, 1, 64, 64)
	if q.Theta != 0 || p.Tx != q.Tx || p.Zy != q.Zy || p.Flip != q.Flip {
		t.Errorf("rotation off: got %+v, want %+v without rotation", q, p)
	}
}

func TestNormalize(t *testing.T) {
	// Expected values from the formulas in normalize.go for RGB (255, 0, 128):
	// rescale x/255; imagenet (x/255-mean)/std; caffe BGR minus the BGR means.
	tests := []struct {
		mode string
		want [3]float64
	}{
		{NormRescale, [3]float64{1, 0, 128.0 / 255}},
		{NormImageNet, [3]float64{(1 - 0.485) / 0.229, (0 - 0.456) / 0.224, (128.0/255 - 0.406) / 0.225}},
		{NormCaffe, [3]float64{128 - 103.939, 0 - 116.779, 255 - 123.68}},
	}
	for _, tc := range tests {
		n, err := newNormalizer(tc.mode)
		if err != nil {
			t.Fatal(err)
		}
		src := []uint8{255, 0, 128}
		got := make([]float32, 3)
		n.fromUint8(src, got)
		alt := []float32{255, 0, 128}
		n.inPlace(alt)
		for c := range got {
			if math.Abs(float64(got[c])-tc.want[c]) > 1e-4 || got[c] != alt[c] {
				t.Errorf("%s channel %d: got %v (float path %v), want %v", tc.mode, c, got[c], alt[c], tc.want[c])
			}
		}
	}
}

func TestRNG(t *testing.T) {
	// splitmix64 from state 0: first output 0xe220a8397b1dcdaf (Vigna's
	// reference splitmix64.c).
	r := &rng{}
	if got := r.next(); got != 0xe220a8397b1dcdaf {
		t.Errorf("got %#x, want 0xe220a8397b1dcdaf", got)
	}
	r = newRNG(tagShuffle, 1, 2)
	for i := 0; i < 1000; i++ {
		if f := r.float64(); f < 0 || f >= 1 {
			t.Fatalf("float64: got %v, want [0, 1)", f)
		}
		if n := r.intn(7); n < 0 || n >= 7 {
			t.Fatalf("intn(7): got %d", n)
		}
	}
}
