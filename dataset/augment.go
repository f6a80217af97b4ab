package dataset

import (
	"fmt"
	"math"
)

// Augment is the random augmentation of Keras ImageDataGenerator, applied to
// the S×S image. The zero value means no augmentation.
//
// Every image gets one affine warp that combines, like Keras
// apply_affine_transform, rotation, shift, shear and zoom about the image
// centre, sampled bilinearly with the "nearest" fill mode (edge pixels are
// repeated); a horizontal flip follows with probability 1/2. Values are
// drawn from the stream newRNG(tagAugment, seed, epoch, index), always seven
// of them in this order whatever is enabled: rotation, height shift, width
// shift, shear, row zoom, column zoom, flip. So turning one option on or off
// never changes the values of the others.
type Augment struct {
	HorizontalFlip bool    // flip left-right with probability 1/2
	Rotation       float64 // degrees, uniform in [-Rotation, Rotation]
	WidthShift     float64 // fraction of the width, uniform in [-WidthShift, WidthShift]
	HeightShift    float64 // fraction of the height
	Zoom           float64 // row and column scale factors each uniform in [1-Zoom, 1+Zoom]
	Shear          float64 // degrees, uniform in [-Shear, Shear]
}

// PaperAugment returns the study's ImageDataGenerator settings:
// horizontal_flip=True, rotation_range=20, width_shift_range=0.2,
// height_shift_range=0.2, zoom_range=0.2 and shear_range=0.2, the shear read
// in radians as Keras 1.x did (0.2 rad = 11.46°).
func PaperAugment() Augment {
	return Augment{
		HorizontalFlip: true,
		Rotation:       20,
		WidthShift:     0.2,
		HeightShift:    0.2,
		Zoom:           0.2,
		Shear:          0.2 * 180 / math.Pi,
	}
}

// Enabled reports whether a has any effect.
func (a Augment) Enabled() bool {
	return a.HorizontalFlip || a.Rotation != 0 || a.WidthShift != 0 || a.HeightShift != 0 || a.Zoom != 0 || a.Shear != 0
}

func (a Augment) validate() error {
	bad := func(name string, v, lo, hi float64) error {
		if math.IsNaN(v) || v < lo || v >= hi {
			return fmt.Errorf("dataset: augment: %s %v is outside [%v, %v)", name, v, lo, hi)
		}
		return nil
	}
	for _, c := range []struct {
		name      string
		v, lo, hi float64
	}{
		{"rotation", a.Rotation, 0, 180.0000001},
		{"width shift", a.WidthShift, 0, 1},
		{"height shift", a.HeightShift, 0, 1},
		{"zoom", a.Zoom, 0, 1},
		{"shear", a.Shear, 0, 90},
	} {
		if err := bad(c.name, c.v, c.lo, c.hi); err != nil {
			return err
		}
	}
	return nil
}

// affine is the drawn transform of one image. Angles are in degrees,
// shifts in pixels; Tx moves rows and Ty columns, as in Keras.
type affine struct {
	Theta, Tx, Ty, Shear, Zx, Zy float64
	Flip                         bool
}

// draw returns the transform of image index in epoch for an h×w image.
func (a Augment) draw(seed int64, epoch, index, h, w int) affine {
	r := newRNG(tagAugment, seed, int64(epoch), int64(index))
	var u [7]float64
	for i := range u {
		u[i] = 2*r.float64() - 1 // [-1, 1)
	}
	return affine{
		Theta: a.Rotation * u[0],
		Tx:    a.HeightShift * u[1] * float64(h),
		Ty:    a.WidthShift * u[2] * float64(w),
		Shear: a.Shear * u[3],
		Zx:    1 + a.Zoom*u[4],
		Zy:    1 + a.Zoom*u[5],
		Flip:  a.HorizontalFlip && u[6] < 0,
	}
}

// matrix returns the 2×3 map from an output pixel (row, col) to the input
// position it samples: Keras' rotation·shift·shear·zoom about the centre
// ((h-1)/2, (w-1)/2), then the flip of the output columns.
func (p affine) matrix(h, w int) [6]float64 {
	th := p.Theta * math.Pi / 180
	sh := p.Shear * math.Pi / 180
	m := mat3{1, 0, 0, 0, 1, 0, 0, 0, 1}
	m = m.mul(mat3{math.Cos(th), -math.Sin(th), 0, math.Sin(th), math.Cos(th), 0, 0, 0, 1})
	m = m.mul(mat3{1, 0, p.Tx, 0, 1, p.Ty, 0, 0, 1})
	m = m.mul(mat3{1, -math.Sin(sh), 0, 0, math.Cos(sh), 0, 0, 0, 1})
	m = m.mul(mat3{p.Zx, 0, 0, 0, p.Zy, 0, 0, 0, 1})
	or, oc := float64(h-1)/2, float64(w-1)/2
	m = mat3{1, 0, or, 0, 1, oc, 0, 0, 1}.mul(m).mul(mat3{1, 0, -or, 0, 1, -oc, 0, 0, 1})
	if p.Flip { // output column c shows warped column w-1-c
		m = m.mul(mat3{1, 0, 0, 0, -1, float64(w - 1), 0, 0, 1})
	}
	return [6]float64{m[0], m[1], m[2], m[3], m[4], m[5]}
}

type mat3 [9]float64

func (a mat3) mul(b mat3) mat3 {
	var c mat3
	for i := 0; i < 3; i++ {
		for j := 0; j < 3; j++ {
			var s float64
			for k := 0; k < 3; k++ {
				s += float64(a[3*i+k] * b[3*k+j])
			}
			c[3*i+j] = s
		}
	}
	return c
}

// warp samples src (s×s packed RGB) through m into dst (s*s*3 float32,
// values in [0, 255]) with bilinear interpolation and the "nearest" fill
// mode: positions outside the image are clamped to its edge. The explicit
// float64 conversions forbid fused multiply-adds so results are the same
// on every architecture. rowDone, when not nil, is called on every output
// row (s*3 values) as soon as it is written, while it is still in the CPU's
// cache: the loader normalises there instead of in a second pass over dst.
func warp(src []uint8, s int, m [6]float64, dst []float32, rowDone func([]float32)) {
	n := s * s * 3
	src, dst = src[:n], dst[:n]
	last := float64(s - 1)
	stride := s * 3
	for r := 0; r < s; r++ {
		fr := float64(r)
		baseR := float64(m[0]*fr) + m[2]
		baseC := float64(m[3]*fr) + m[5]
		row := dst[r*stride : (r+1)*stride]
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
			r1, c1 := min(r0+1, s-1), min(c0+1, s-1)
			p00, p01 := r0*stride+c0*3, r0*stride+c1*3
			p10, p11 := r1*stride+c0*3, r1*stride+c1*3
			// Three-byte views: one bounds check each instead of one per channel.
			s00, s01 := src[p00:p00+3:p00+3], src[p01:p01+3:p01+3]
			s10, s11 := src[p10:p10+3:p10+3], src[p11:p11+3:p11+3]
			out := row[c*3 : c*3+3 : c*3+3]
			vr, vc := 1-wr, 1-wc
			for k := range 3 {
				top := float64(vc*float64(s00[k])) + float64(wc*float64(s01[k]))
				bot := float64(vc*float64(s10[k])) + float64(wc*float64(s11[k]))
				out[k] = float32(float64(vr*top) + float64(wr*bot))
			}
		}
		if rowDone != nil {
			rowDone(row)
		}
	}
}
