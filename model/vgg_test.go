package model

import (
	"math"
	"slices"
	"testing"
)

func TestVGGHeads(t *testing.T) {
	// Widths follow each head's definition (zoo.go); 25088 = 512·7·7 is
	// torchvision's classifier input, 512·(64/32)² = 2048 the flattened base at 64 px.
	tests := []struct {
		head  string
		size  int
		names []string
		shape [][]int
	}{
		{HeadFlatten, 64, []string{"classifier.0.weight", "classifier.3.weight", "classifier.6.weight"}, [][]int{{16, 2048}, {16, 16}, {3, 16}}},
		{HeadTorchvision, 64, []string{"classifier.0.weight", "classifier.3.weight", "classifier.6.weight"}, [][]int{{16, 25088}, {16, 16}, {3, 16}}},
		{HeadTorchvision, 32, []string{"classifier.0.weight", "classifier.3.weight", "classifier.6.weight"}, [][]int{{16, 25088}, {16, 16}, {3, 16}}},
		{HeadKeras, 64, []string{"classifier.0.weight", "classifier.3.weight"}, [][]int{{16, 2048}, {3, 16}}},
	}
	for _, tc := range tests {
		n, err := Build(Spec{Name: "vgg16", Head: tc.head, ImageSize: tc.size, Classes: 3, Hidden: 16})
		if err != nil {
			t.Fatalf("%s: %v", tc.head, err)
		}
		var names []string
		var shapes [][]int
		for _, p := range n.Params {
			if p.Head && p.Kind == LinearWeight {
				names = append(names, p.Name)
				shapes = append(shapes, p.Shape)
			}
		}
		if !slices.Equal(names, tc.names) {
			t.Errorf("%s at %d px: head weights %v, want %v", tc.head, tc.size, names, tc.names)
		}
		for i := range min(len(shapes), len(tc.shape)) {
			if !slices.Equal(shapes[i], tc.shape[i]) {
				t.Errorf("%s at %d px: %s shape %v, want %v", tc.head, tc.size, names[i], shapes[i], tc.shape[i])
			}
		}
		// vgg16 has 13 convolutions: 26 base tensors.
		if got := len(n.Params) - 2*len(tc.names); got != 26 {
			t.Errorf("%s: %d base tensors, want 26", tc.head, got)
		}
	}
}

// TestVGGFLOPs: torchvision documentation "GFLOPS" of the IMAGENET1K_V1
// weights at 224 px, 1000 classes (7.61, 11.31, 15.47, 19.63), which are
// multiply-accumulates, so FLOPs = 2 × that, rounded to 0.01 G in the docs.
func TestVGGFLOPs(t *testing.T) {
	for _, tt := range []struct {
		model string
		gmacs float64
	}{{"vgg11", 7.61}, {"vgg13", 11.31}, {"vgg16", 15.47}, {"vgg19", 19.63}, {"vgg16_bn", 15.47}} {
		n, err := Build(Spec{Name: tt.model, ImageSize: 224, Classes: 1000})
		if err != nil {
			t.Fatal(err)
		}
		fwd, train := n.TrainFLOPs(1, false)
		if math.Abs(fwd/2e9-tt.gmacs) > 0.005 {
			t.Errorf("%s: got %.4f GMACs, want %.2f", tt.model, fwd/2e9, tt.gmacs)
		}
		if train != 3*fwd {
			t.Errorf("%s: train got %g, want 3 × forward = %g", tt.model, train, 3*fwd)
		}
	}
}

func TestFLOPsExact(t *testing.T) {
	n, err := Build(Spec{Name: "vgg16", ImageSize: 224, Classes: 1000, Hidden: 4096})
	if err != nil {
		t.Fatal(err)
	}
	base, head := n.FLOPs()
	// Hand sum of 2·Cin·Cout·9·H·W over the 13 convs (MACs in millions):
	// 224²·9·(3·64 + 64·64) + 112²·9·(64·128 + 128·128)
	// + 56²·9·(128·256 + 2·256·256) + 28²·9·(256·512 + 2·512·512)
	// + 14²·9·(3·512·512) = 15,346,630,656 MACs.
	if want := 2 * 15_346_630_656.0; base != want {
		t.Errorf("base: got %.0f, want %.0f", base, want)
	}
	// 2·(25088·4096 + 4096·4096 + 4096·1000) = 2·123,633,664.
	if want := 2 * 123_633_664.0; head != want {
		t.Errorf("head: got %.0f, want %.0f", head, want)
	}
	fwd, train := n.TrainFLOPs(8, true)
	if want := 8 * (base + head); fwd != want {
		t.Errorf("frozen forward: got %g, want %g", fwd, want)
	}
	if want := 8 * (base + 3*head); train != want {
		t.Errorf("frozen train: got %g, want 8·(base + 3·head) = %g", train, want)
	}
	if f, tr := n.TrainFLOPs(0, false); f != 0 || tr != 0 {
		t.Errorf("batch 0: got %g %g, want 0 0", f, tr)
	}
}

func TestDropoutMask(t *testing.T) {
	const n, p = 1 << 16, 0.5
	a, b, c := make([]float32, n), make([]float32, n), make([]float32, n)
	DropoutMask(a, 7, 3, 0, p)
	DropoutMask(b, 7, 3, 0, p)
	DropoutMask(c, 7, 3, 1, p)
	if !slices.Equal(a, b) {
		t.Error("the same (seed, step, layer) gave two masks")
	}
	kept, same := 0, 0
	for i := range a {
		switch a[i] {
		case 2: // 1/(1-p)
			kept++
		case 0:
		default:
			t.Fatalf("mask value %v, want 0 or 2", a[i])
		}
		if a[i] == c[i] {
			same++
		}
	}
	// Kept count ~ Binomial(n, 1-p): mean n/2, sd sqrt(n)/2 = 128; allow 5 sd.
	if d := math.Abs(float64(kept) - n*(1-p)); d > 5*128 {
		t.Errorf("kept %d of %d, want %v ± 640", kept, n, n*(1-p))
	}
	// Two independent masks agree on half the elements (same Binomial bound).
	if d := math.Abs(float64(same) - n/2); d > 5*128 {
		t.Errorf("layers 0 and 1 agree on %d of %d elements, want %d ± 640 (independent)", same, n, n/2)
	}
	DropoutMask(a, 7, 3, 0, 0)
	if a[0] != 1 || a[n-1] != 1 {
		t.Errorf("p=0: mask %v…%v, want all 1", a[0], a[n-1])
	}
}

func TestDropoutMaskAllocatesNothing(t *testing.T) {
	dst := make([]float32, 4096)
	if n := testing.AllocsPerRun(10, func() { DropoutMask(dst, 1, 2, 0, 0.5) }); n != 0 {
		t.Errorf("DropoutMask allocates %v times per call, want 0", n)
	}
}
