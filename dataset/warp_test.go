package dataset

import (
	"math"
	"testing"
)

// warpReference is warp as it was before it was made faster (commit
// 55d3049): the plain loop whose bytes the loader has always produced.
// TestWarpMatchesReference holds the fast warp to it bit for bit.
func warpReference(src []uint8, s int, m [6]float64, dst []float32) {
	n := s * s * 3
	src, dst = src[:n], dst[:n]
	last := float64(s - 1)
	stride := s * 3
	for r := 0; r < s; r++ {
		fr := float64(r)
		baseR := float64(m[0]*fr) + m[2]
		baseC := float64(m[3]*fr) + m[5]
		o := r * stride
		for c := 0; c < s; c++ {
			fc := float64(c)
			ir := baseR + float64(m[1]*fc)
			ic := baseC + float64(m[4]*fc)
			if !(ir > 0) { // also catches NaN
				ir = 0
			} else if ir > last {
				ir = last
			}
			if !(ic > 0) {
				ic = 0
			} else if ic > last {
				ic = last
			}
			r0, c0 := int(ir), int(ic)
			wr, wc := ir-float64(r0), ic-float64(c0)
			r1, c1 := r0+1, c0+1
			if r1 > s-1 {
				r1 = s - 1
			}
			if c1 > s-1 {
				c1 = s - 1
			}
			p00, p01 := r0*stride+c0*3, r0*stride+c1*3
			p10, p11 := r1*stride+c0*3, r1*stride+c1*3
			vr, vc := 1-wr, 1-wc
			for k := 0; k < 3; k++ {
				top := float64(vc*float64(src[p00+k])) + float64(wc*float64(src[p01+k]))
				bot := float64(vc*float64(src[p10+k])) + float64(wc*float64(src[p11+k]))
				dst[o+k] = float32(float64(vr*top) + float64(wr*bot))
			}
			o += 3
		}
	}
}

// TestWarpMatchesReference: warp and its row hook produce the very bits of
// warpReference followed by normalizer.inPlace, for the paper's augmentation
// drawn for many images and sizes, and for extreme matrices (far outside the
// image, NaN, a flip of a one-pixel image).
func TestWarpMatchesReference(t *testing.T) {
	type tcase struct {
		s int
		m [6]float64
	}
	var cases []tcase
	for _, s := range []int{1, 2, 3, 7, 16, 33} {
		for i := 0; i < 40; i++ {
			cases = append(cases, tcase{s, PaperAugment().draw(11, i%3, i, s, s).matrix(s, s)})
		}
		cases = append(cases,
			tcase{s, affine{Zx: 1, Zy: 1}.matrix(s, s)},
			tcase{s, affine{Zx: 1, Zy: 1, Flip: true}.matrix(s, s)},
			tcase{s, [6]float64{0, 0, 1e9, 0, 0, -1e9}},
			tcase{s, [6]float64{3.7, -2.1, 0.3, 1e-3, 5, -7}},
			tcase{s, [6]float64{math.NaN(), 0, 0, 0, math.Inf(1), 0}},
		)
	}
	for _, mode := range []string{"", NormRescale, NormImageNet, NormCaffe} {
		var n *normalizer
		if mode != "" {
			var err error
			if n, err = newNormalizer(mode); err != nil {
				t.Fatal(err)
			}
		}
		for k, tc := range cases {
			src := make([]uint8, tc.s*tc.s*3)
			for i := range src {
				src[i] = uint8(i*37 + k*11 + i*i)
			}
			want := make([]float32, len(src))
			warpReference(src, tc.s, tc.m, want)
			got := make([]float32, len(src))
			if n == nil {
				warp(src, tc.s, tc.m, got, nil)
			} else {
				n.inPlace(want)
				warp(src, tc.s, tc.m, got, n.inPlace)
			}
			for i := range want {
				if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
					t.Errorf("norm %q size %d case %d: element %d: got %v, want %v (reference)", mode, tc.s, k, i, got[i], want[i])
					break
				}
			}
		}
	}
}
