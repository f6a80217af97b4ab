package weights

import (
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"runtime"
	"sync"

	"github.com/fwbench/fwbench/model"
)

// InitParams returns freshly initialised tensors for ps (a model.Net's
// Params, torchvision state-dict order), drawn the way torchvision
// initialises VGG and MobileNetV2, the same for every model:
//
//	Conv2d weight       normal(0, sqrt(2/fan_out)), fan_out = out·k·k
//	                    (kaiming_normal_, mode="fan_out", nonlinearity="relu";
//	                    torch's fan_out: out × the dimensions after the second)
//	Conv2d bias         0
//	BatchNorm2d         weight 1, bias 0, running_mean 0, running_var 1
//	Linear weight       normal(0, 0.01)
//	Linear bias         0
//
// (torchvision's ResNet gives its fc layer torch's default uniform init; here
// every Linear is normal(0, 0.01), one rule for every model.)
//
// The values depend only on seed and each tensor's name: every tensor (and
// every 1 Mi-element chunk of it) draws from its own PCG stream (math/rand/v2,
// seeded with the seed and an FNV-1a hash of the name and chunk index) through
// the Box-Muller transform. Adding layers, changing the head or the image size
// therefore leaves the other tensors' values unchanged, and the same seed
// always gives the same bytes. It uses all CPUs.
func InitParams(ps []model.Param, seed int64) ([]*Tensor, error) {
	for _, p := range ps {
		n := 1
		for _, d := range p.Shape {
			if d < 0 || d != 0 && n > maxElements/d {
				return nil, fmt.Errorf("weights: init: %s: bad shape %v", p.Name, p.Shape)
			}
			n *= d
		}
	}
	ts := make([]*Tensor, len(ps))
	type job struct {
		t     *Tensor
		chunk int
		std   float64
	}
	var jobs []job
	for i, p := range ps {
		t := &Tensor{Name: p.Name, Shape: append([]int(nil), p.Shape...), Data: make([]float32, p.NumElements())}
		ts[i] = t
		var std float64
		switch p.Kind {
		case model.ConvWeight:
			fanOut := 1
			for j, d := range p.Shape {
				if j != 1 {
					fanOut *= d
				}
			}
			if fanOut == 0 {
				continue
			}
			std = math.Sqrt(2 / float64(fanOut))
		case model.LinearWeight:
			std = 0.01
		case model.BNWeight, model.BNVar:
			for j := range t.Data {
				t.Data[j] = 1
			}
			continue
		default: // biases, running means
			continue
		}
		for c := 0; c*initChunk < len(t.Data); c++ {
			jobs = append(jobs, job{t, c, std})
		}
	}
	work := make(chan job)
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), max(len(jobs), 1)) {
		wg.Go(func() {
			for j := range work {
				lo := j.chunk * initChunk
				hi := min(lo+initChunk, len(j.t.Data))
				fillNormal(j.t.Data[lo:hi], j.std, streamSeed(j.t.Name, j.chunk), seed)
			}
		})
	}
	for _, j := range jobs {
		work <- j
	}
	close(work)
	wg.Wait()
	return ts, nil
}

// initChunk is the number of elements drawn from one random stream. It is
// part of the definition of the values: changing it changes every tensor
// larger than it.
const initChunk = 1 << 20

// streamSeed is the FNV-1a hash of the name, a 0 byte and the chunk index.
func streamSeed(name string, chunk int) uint64 {
	h := fnv.New64a()
	h.Write([]byte(name))
	h.Write([]byte{0, byte(chunk), byte(chunk >> 8), byte(chunk >> 16), byte(chunk >> 24)})
	return h.Sum64()
}

// fillNormal fills dst with normal(0, std) values from the PCG stream
// (seed, stream), by the Box-Muller transform: for uniform u1 in (0, 1] and
// u2 in [0, 1), r = sqrt(-2 ln u1) gives r·cos(2π u2) and r·sin(2π u2).
func fillNormal(dst []float32, std float64, stream uint64, seed int64) {
	rng := rand.NewPCG(uint64(seed), stream)
	for i := 0; i < len(dst); i += 2 {
		u1 := float64(rng.Uint64()>>11+1) / (1 << 53)
		u2 := float64(rng.Uint64()>>11) / (1 << 53)
		r := std * math.Sqrt(-2*math.Log(u1))
		s, c := math.Sincos(2 * math.Pi * u2)
		dst[i] = float32(r * c)
		if i+1 < len(dst) {
			dst[i+1] = float32(r * s)
		}
	}
}
