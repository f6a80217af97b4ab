package tfrun

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/fwbench/fwbench/vgg"
)

func randData(n int, seed uint64) []float32 {
	r := rand.New(rand.NewPCG(seed, 1))
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(r.NormFloat64())
	}
	return x
}

// TestLayoutRoundTrip: fromTF(toTF(x)) = x for every parameter kind and
// head.
func TestLayoutRoundTrip(t *testing.T) {
	for _, S := range []int{32, 64, 96} {
		for _, h := range vgg.Heads() {
			ps, err := vgg.ParamsFor(vgg.Config{Name: "vgg11", BatchNorm: true}, h, S, 5, 7)
			if err != nil {
				t.Fatal(err)
			}
			side := flatSide(S, h)
			for i, p := range ps {
				x := randData(p.NumElements(), uint64(i))
				if got := fromTF(p, side, toTF(p, side, x)); !slices.Equal(got, x) {
					t.Errorf("S=%d head %s %s: round trip changed the data", S, h, p.Name)
				}
			}
		}
	}
}

// TestLayoutMeaning checks what the conversions mean, not just that they
// invert: a convolution tap and the first classifier layer must compute
// the same numbers in both layouts.
func TestLayoutMeaning(t *testing.T) {
	// Conv: torch w[o][i][y][x] is TF w[y][x][i][o].
	p := vgg.Param{Name: "features.0.weight", Shape: []int{4, 3, 3, 3}, Kind: vgg.ConvWeight}
	src := randData(p.NumElements(), 1)
	dst := toTF(p, 1, src)
	for o := range 4 {
		for i := range 3 {
			for y := range 3 {
				for x := range 3 {
					if got, want := dst[((y*3+x)*3+i)*4+o], src[((o*3+i)*3+y)*3+x]; got != want {
						t.Fatalf("conv [o=%d i=%d y=%d x=%d]: got %v, want %v", o, i, y, x, got, want)
					}
				}
			}
		}
	}
	if got, want := tfShape(p), []int64{3, 3, 3, 4}; !slices.Equal(got, want) {
		t.Errorf("conv TF shape %v, want %v", got, want)
	}

	// First classifier layer at S = 64 (a 2×2×512 map): torch's
	// out = W·flatten_CHW(map) must equal TF's flatten_HWC(map)·W'.
	const S, s, C, out = 64, 2, 512, 3
	if got := flatSide(S, vgg.HeadFlatten); got != s {
		t.Errorf("flatSide(%d, flatten): got %d, want %d = S/32", S, got, s)
	}
	lp := vgg.Param{Name: "classifier.0.weight", Shape: []int{out, C * s * s}, Kind: vgg.LinearWeight, Head: true}
	w := randData(lp.NumElements(), 2)
	wtf := toTF(lp, s, w)
	fm := randData(C*s*s, 3) // feature map, indexed [c][h][w]
	chw := fm
	hwc := make([]float32, len(fm))
	for c := range C {
		for h := range s {
			for x := range s {
				hwc[(h*s+x)*C+c] = fm[(c*s+h)*s+x]
			}
		}
	}
	in := C * s * s
	for o := range out {
		var torchOut, tfOut float64
		for j := range in {
			torchOut += float64(w[o*in+j]) * float64(chw[j])
			tfOut += float64(hwc[j]) * float64(wtf[j*out+o])
		}
		if d := torchOut - tfOut; d > 1e-9 || d < -1e-9 {
			t.Errorf("output %d: torch layout %v, TF layout %v", o, torchOut, tfOut)
		}
	}
	// Other linear layers are plain transposes.
	lp3 := vgg.Param{Name: "classifier.3.weight", Shape: []int{5, 7}, Kind: vgg.LinearWeight, Head: true}
	w3 := randData(35, 4)
	w3tf := toTF(lp3, s, w3)
	for o := range 5 {
		for j := range 7 {
			if w3tf[j*5+o] != w3[o*7+j] {
				t.Fatalf("classifier.3 [%d][%d] not transposed", o, j)
			}
		}
	}
	// After the adaptive pool the graph flattens in torch's C×H×W order
	// itself (adaptivePool): classifier.0 is a plain transpose.
	if got := flatSide(S, vgg.HeadTorchvision); got != 0 {
		t.Errorf("flatSide(%d, torchvision): got %d, want 0 (no permutation)", S, got)
	}
	const in7 = C * vgg.PoolSize * vgg.PoolSize
	lp7 := vgg.Param{Name: "classifier.0.weight", Shape: []int{out, in7}, Kind: vgg.LinearWeight, Head: true}
	w7 := randData(lp7.NumElements(), 5)
	w7tf := toTF(lp7, 0, w7)
	for o := range out {
		for j := range in7 {
			if w7tf[j*out+o] != w7[o*in7+j] {
				t.Fatalf("torchvision classifier.0 [%d][%d] not a plain transpose", o, j)
			}
		}
	}
}
