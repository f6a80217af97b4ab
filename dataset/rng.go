package dataset

import "math/bits"

// The random streams are specified here so that another implementation (a
// Python reference script) can reproduce them: every stream is splitmix64
// (Steele, Lea, Flood 2014) started from a key that mixes the seed with the
// stream's coordinates, and a float is (next() >> 11) * 2^-53.

const (
	golden = 0x9e3779b97f4a7c15

	// Domain tags keep the streams independent.
	tagShuffle = 0x53485546464c4521 // "SHUFFLE!"
	tagAugment = 0x4155474d454e5421 // "AUGMENT!"
	tagSplit   = 0x53504c4954212121 // "SPLIT!!!"
	tagSynth   = 0x53594e5448212121 // "SYNTH!!!"
)

// rng is a splitmix64 generator. The zero value is a valid stream.
type rng struct{ s uint64 }

func mix64(z uint64) uint64 {
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// newRNG derives a stream from a domain tag and any number of coordinates.
func newRNG(tag uint64, seed int64, coords ...int64) *rng {
	s := mix64(tag ^ uint64(seed))
	for _, c := range coords {
		s = mix64(s + golden + uint64(c))
	}
	return &rng{s: s}
}

func (r *rng) next() uint64 {
	r.s += golden
	return mix64(r.s)
}

// float64 returns a number in [0, 1).
func (r *rng) float64() float64 {
	return float64(r.next()>>11) * (1.0 / (1 << 53))
}

// uniform returns a number in [lo, hi).
func (r *rng) uniform(lo, hi float64) float64 {
	return lo + float64((hi-lo)*r.float64())
}

// intn returns a number in [0, n) for n > 0 (Lemire's multiply-shift,
// without rejection: the bias is below 2^-32 for the sizes used here).
func (r *rng) intn(n int) int {
	hi, _ := bits.Mul64(r.next(), uint64(n))
	return int(hi)
}

// shuffle is Fisher–Yates from the top down.
func (r *rng) shuffle(xs []int) {
	for i := len(xs) - 1; i > 0; i-- {
		j := r.intn(i + 1)
		xs[i], xs[j] = xs[j], xs[i]
	}
}
