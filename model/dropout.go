package model

import "math/rand/v2"

// DropoutMask fills dst with the dropout mask of one Dropout layer for one
// training step: every element is 0 (dropped, with probability p) or
// float32(1/(1-p)) (kept, scaled as torch's nn.Dropout and Keras' Dropout
// scale in training). Both drivers multiply the layer's activations by the
// same mask, so TensorFlow and PyTorch drop the same units at every step.
//
// The mask depends only on (seed, step, layer): step is the global training
// step (0-based, counted across epochs, so a resumed run draws the same
// masks), layer the dropout's number in the head (Layer.Mask). Element
// j is kept when the j-th Float64 of a PCG stream seeded with (seed,
// splitmix64(step·256 + layer)) is below 1-p. With p = 0 every element is 1.
func DropoutMask(dst []float32, seed, step int64, layer int, p float64) {
	if p <= 0 {
		for i := range dst {
			dst[i] = 1
		}
		return
	}
	keep, scale := 1-p, float32(1/(1-p))
	var r rand.PCG // on the stack: no allocation per call (the step's hot path)
	r.Seed(uint64(seed), splitmix64(uint64(step)<<8|uint64(layer&0xff)))
	for i := range dst {
		// rand.Rand.Float64's conversion, on the PCG directly.
		if float64(r.Uint64()<<11>>11)/(1<<53) < keep {
			dst[i] = scale
		} else {
			dst[i] = 0
		}
	}
}

// splitmix64 is Vigna's SplitMix64 finaliser: it spreads consecutive inputs
// over the whole 64-bit range.
func splitmix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}
