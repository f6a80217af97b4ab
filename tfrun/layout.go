package tfrun

import (
	"github.com/fwbench/fwbench/vgg"
)

// TensorFlow's layouts differ from torchvision's canonical ones:
//
//	Conv2D filter   HWIO [3, 3, in, out]   (torch OIHW [out, in, 3, 3])
//	MatMul weight   [in, out]              (torch Linear [out, in])
//
// and with the flattening heads (vgg.HeadFlatten, vgg.HeadKeras) the first
// classifier layer reads an NHWC feature map flattened as H×W×C, where torch
// flattens C×H×W. Its input index j_tf = (h·s + w)·C + c corresponds to
// torch's j_t = c·s·s + h·s + w (s = S/32, C = 512), so its rows are
// permuted on load and back on save. After the adaptive pool
// (vgg.HeadTorchvision) the graph itself flattens in C×H×W order (see
// adaptivePool), so no rows are permuted. Biases are the same in both.

// tfShape returns the TensorFlow shape of a canonical parameter.
func tfShape(p vgg.Param) []int64 {
	switch p.Kind {
	case vgg.ConvWeight: // [O, I, KH, KW] -> [KH, KW, I, O]
		return []int64{int64(p.Shape[2]), int64(p.Shape[3]), int64(p.Shape[1]), int64(p.Shape[0])}
	case vgg.LinearWeight: // [out, in] -> [in, out]
		return []int64{int64(p.Shape[1]), int64(p.Shape[0])}
	}
	s := make([]int64, len(p.Shape))
	for i, d := range p.Shape {
		s[i] = int64(d)
	}
	return s
}

// flatSide returns the side s of the feature map that the first
// classifier layer reads flattened in H×W×C order: S/32 for the flattening
// heads, 0 (no permutation) after the adaptive pool.
func flatSide(imageSize int, head vgg.Head) int {
	if head.AdaptivePool() {
		return 0
	}
	return imageSize / 32
}

// flattenPerm returns, for the first classifier layer when it reads an
// s×s map flattened as H×W×C (s = flatSide), the torch input index of each
// TensorFlow input index (nil for other layers and for s = 0: the
// identity).
func flattenPerm(p vgg.Param, s int) []int {
	if s == 0 || p.Kind != vgg.LinearWeight || p.Name != "classifier.0.weight" {
		return nil
	}
	in := p.Shape[1]
	c := in / (s * s)
	perm := make([]int, in)
	for h := range s {
		for w := range s {
			for ch := range c {
				perm[(h*s+w)*c+ch] = ch*s*s + h*s + w
			}
		}
	}
	return perm
}

// toTF converts a canonical tensor's data to TensorFlow's layout for p
// (side: see flatSide).
func toTF(p vgg.Param, side int, src []float32) []float32 {
	dst := make([]float32, len(src))
	toTFInto(p, side, src, dst)
	return dst
}

// fromTF converts TensorFlow-layout data for p back to the canonical layout.
func fromTF(p vgg.Param, side int, src []float32) []float32 {
	dst := make([]float32, len(src))
	fromTFInto(p, side, src, dst)
	return dst
}

// toTFInto writes toTF(p, side, src) into dst (len(dst) = len(src)).
func toTFInto(p vgg.Param, side int, src, dst []float32) {
	switch p.Kind {
	case vgg.ConvWeight:
		o, i, kh, kw := p.Shape[0], p.Shape[1], p.Shape[2], p.Shape[3]
		for a := range o {
			for b := range i {
				for y := range kh {
					for x := range kw {
						dst[((y*kw+x)*i+b)*o+a] = src[((a*i+b)*kh+y)*kw+x]
					}
				}
			}
		}
	case vgg.LinearWeight:
		transpose(src, dst, p.Shape[0], p.Shape[1], flattenPerm(p, side), false)
	default:
		copy(dst, src)
	}
}

// fromTFInto writes fromTF(p, side, src) into dst.
func fromTFInto(p vgg.Param, side int, src, dst []float32) {
	switch p.Kind {
	case vgg.ConvWeight:
		o, i, kh, kw := p.Shape[0], p.Shape[1], p.Shape[2], p.Shape[3]
		for a := range o {
			for b := range i {
				for y := range kh {
					for x := range kw {
						dst[((a*i+b)*kh+y)*kw+x] = src[((y*kw+x)*i+b)*o+a]
					}
				}
			}
		}
	case vgg.LinearWeight:
		transpose(src, dst, p.Shape[0], p.Shape[1], flattenPerm(p, side), true)
	default:
		copy(dst, src)
	}
}

// transpose converts between a torch [out, in] matrix t and a TensorFlow
// [in, out] matrix f with f[j][o] = t[o][perm[j]] (perm nil: identity).
// back false maps t to f, true maps f to t. It works in tiles so that both
// sides are read and written mostly sequentially (the first classifier
// layer is 25088×4096 at 224 px).
func transpose(src, dst []float32, out, in int, perm []int, back bool) {
	const tile = 64
	for j0 := 0; j0 < in; j0 += tile {
		j1 := min(j0+tile, in)
		for o0 := 0; o0 < out; o0 += tile {
			o1 := min(o0+tile, out)
			for j := j0; j < j1; j++ {
				jt := j
				if perm != nil {
					jt = perm[j]
				}
				for o := o0; o < o1; o++ {
					if back {
						dst[o*in+jt] = src[j*out+o]
					} else {
						dst[j*out+o] = src[o*in+jt]
					}
				}
			}
		}
	}
}
