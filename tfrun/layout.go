package tfrun

import (
	"github.com/fwbench/fwbench/model"
)

// TensorFlow's layouts differ from torchvision's canonical ones:
//
//	Conv2D filter                HWIO [k, k, in, out]  (torch OIHW [out, in, k, k])
//	DepthwiseConv2dNative filter HWOI [k, k, C, 1]     (torch OIHW [C, 1, k, k])
//	MatMul weight                [in, out]             (torch Linear [out, in])
//
// Everything else (biases, BatchNorm tensors) is the same in both. The graph
// flattens feature maps in torch's C×H×W order itself (see toFlat in
// graph.go), so no Linear weight needs its rows permuted.

// tfShape returns the TensorFlow shape of a canonical parameter; depthwise
// says whether a convolution weight belongs to a depthwise convolution.
func tfShape(p model.Param, depthwise bool) []int64 {
	s := p.Shape
	switch {
	case p.Kind == model.ConvWeight && depthwise: // [C, 1, k, k] -> [k, k, C, 1]
		return []int64{int64(s[2]), int64(s[3]), int64(s[0]), int64(s[1])}
	case p.Kind == model.ConvWeight: // [O, I, k, k] -> [k, k, I, O]
		return []int64{int64(s[2]), int64(s[3]), int64(s[1]), int64(s[0])}
	case p.Kind == model.LinearWeight: // [out, in] -> [in, out]
		return []int64{int64(s[1]), int64(s[0])}
	}
	out := make([]int64, len(s))
	for i, d := range s {
		out[i] = int64(d)
	}
	return out
}

// toTF converts a canonical tensor's data to TensorFlow's layout for p.
func toTF(p model.Param, depthwise bool, src []float32) []float32 {
	dst := make([]float32, len(src))
	toTFInto(p, depthwise, src, dst)
	return dst
}

// fromTF converts TensorFlow-layout data for p back to the canonical layout.
func fromTF(p model.Param, depthwise bool, src []float32) []float32 {
	dst := make([]float32, len(src))
	fromTFInto(p, depthwise, src, dst)
	return dst
}

// convIndex returns, for canonical OIHW element (a, b, y, x) of a filter
// [o, i, kh, kw], its flat index in the canonical layout and in TF's (HWIO,
// or HWOI for a depthwise filter).
func convIndex(a, b, y, x, o, i, kh, kw int, depthwise bool) (canonical, tf int) {
	canonical = ((a*i+b)*kh+y)*kw + x
	if depthwise {
		return canonical, ((y*kw+x)*o+a)*i + b
	}
	return canonical, ((y*kw+x)*i+b)*o + a
}

// toTFInto writes toTF(p, depthwise, src) into dst (len(dst) = len(src)).
func toTFInto(p model.Param, depthwise bool, src, dst []float32) {
	switch p.Kind {
	case model.ConvWeight:
		o, i, kh, kw := p.Shape[0], p.Shape[1], p.Shape[2], p.Shape[3]
		for a := range o {
			for b := range i {
				for y := range kh {
					for x := range kw {
						c, t := convIndex(a, b, y, x, o, i, kh, kw, depthwise)
						dst[t] = src[c]
					}
				}
			}
		}
	case model.LinearWeight:
		transpose(src, dst, p.Shape[0], p.Shape[1], false)
	default:
		copy(dst, src)
	}
}

// fromTFInto writes fromTF(p, depthwise, src) into dst.
func fromTFInto(p model.Param, depthwise bool, src, dst []float32) {
	switch p.Kind {
	case model.ConvWeight:
		o, i, kh, kw := p.Shape[0], p.Shape[1], p.Shape[2], p.Shape[3]
		for a := range o {
			for b := range i {
				for y := range kh {
					for x := range kw {
						c, t := convIndex(a, b, y, x, o, i, kh, kw, depthwise)
						dst[c] = src[t]
					}
				}
			}
		}
	case model.LinearWeight:
		transpose(src, dst, p.Shape[0], p.Shape[1], true)
	default:
		copy(dst, src)
	}
}

// transpose converts between a torch [out, in] matrix t and a TensorFlow
// [in, out] matrix f with f[j][o] = t[o][j]. back false maps t to f, true
// maps f to t. It works in tiles so that both sides are read and written
// mostly sequentially (VGG16's first classifier layer is 25088×4096 at
// 224 px).
func transpose(src, dst []float32, out, in int, back bool) {
	const tile = 64
	for j0 := 0; j0 < in; j0 += tile {
		j1 := min(j0+tile, in)
		for o0 := 0; o0 < out; o0 += tile {
			o1 := min(o0+tile, out)
			for j := j0; j < j1; j++ {
				for o := o0; o < o1; o++ {
					if back {
						dst[o*in+j] = src[j*out+o]
					} else {
						dst[j*out+o] = src[o*in+j]
					}
				}
			}
		}
	}
}
