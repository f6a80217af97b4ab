package vgg

import (
	"math"
	"slices"
	"testing"
)

func TestParamsForHeads(t *testing.T) {
	vgg16 := Config{Name: "vgg16"}
	// Widths follow each head's definition (head.go); 25088 = 512·7·7 is
	// torchvision's classifier input, 512·(64/32)² = 2048 the flattened base at 64 px.
	tests := []struct {
		head  Head
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
		ps, err := ParamsFor(vgg16, tc.head, tc.size, 3, 16)
		if err != nil {
			t.Fatalf("%s: %v", tc.head, err)
		}
		var names []string
		var shapes [][]int
		for _, p := range ps {
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
		if got := len(ps) - 2*len(tc.names); got != 26 {
			t.Errorf("%s: %d base tensors, want 26", tc.head, got)
		}
	}
	if _, err := ParseHead("resnet"); err == nil {
		t.Error("ParseHead(resnet): got no error, want one")
	}
}

func TestReinitialisedAndTrainable(t *testing.T) {
	fc6 := Param{Name: "classifier.0.weight", Kind: LinearWeight, Head: true}
	out6 := Param{Name: "classifier.6.bias", Kind: LinearBias, Head: true}
	out3 := Param{Name: "classifier.3.weight", Kind: LinearWeight, Head: true}
	conv := Param{Name: "features.0.weight", Kind: ConvWeight}
	mean := Param{Name: "features.1.running_mean", Kind: BNMean}
	tests := []struct {
		mode              string
		head              Head
		p                 Param
		freeze            bool
		reinit, trainable bool
	}{
		{ModeScratch, HeadTorchvision, out6, false, false, true},
		{ModeFinetune, HeadTorchvision, out6, false, true, true},
		{ModeFinetune, HeadTorchvision, fc6, false, false, true},
		{ModeFeatures, HeadTorchvision, fc6, false, false, true},
		{ModeFeatures, HeadTorchvision, fc6, true, false, false},
		{ModeFeatures, HeadTorchvision, out6, true, true, true},
		{ModeFeatures, HeadKeras, fc6, true, true, true},
		{ModeFeatures, HeadKeras, out3, false, true, true},
		{ModeFeatures, HeadFlatten, conv, false, false, false},
		{ModeFinetune, HeadFlatten, conv, false, false, true},
		{ModeScratch, HeadFlatten, mean, false, false, false},
	}
	for _, tc := range tests {
		if got := Reinitialised(tc.mode, tc.head, tc.p); got != tc.reinit {
			t.Errorf("Reinitialised(%s, %s, %s): got %v, want %v", tc.mode, tc.head, tc.p.Name, got, tc.reinit)
		}
		if got := Trainable(tc.mode, tc.head, tc.freeze, tc.p); got != tc.trainable {
			t.Errorf("Trainable(%s, %s, freeze=%v, %s): got %v, want %v", tc.mode, tc.head, tc.freeze, tc.p.Name, got, tc.trainable)
		}
	}
}

func TestAdaptivePoolBins(t *testing.T) {
	// Expected bins from torch's AdaptiveAvgPool2d rule, start = floor(i·in/out),
	// end = ceil((i+1)·in/out) (aten/src/ATen/native/AdaptiveAveragePooling.cpp).
	tests := []struct {
		in, out    int
		start, end []int
	}{
		{1, 7, []int{0, 0, 0, 0, 0, 0, 0}, []int{1, 1, 1, 1, 1, 1, 1}},
		{2, 7, []int{0, 0, 0, 0, 1, 1, 1}, []int{1, 1, 1, 2, 2, 2, 2}},
		{7, 7, []int{0, 1, 2, 3, 4, 5, 6}, []int{1, 2, 3, 4, 5, 6, 7}},
		{10, 7, []int{0, 1, 2, 4, 5, 7, 8}, []int{2, 3, 5, 6, 8, 9, 10}},
	}
	for _, tc := range tests {
		s, e := AdaptivePoolBins(tc.in, tc.out)
		if !slices.Equal(s, tc.start) || !slices.Equal(e, tc.end) {
			t.Errorf("AdaptivePoolBins(%d, %d): got %v %v, want %v %v", tc.in, tc.out, s, e, tc.start, tc.end)
		}
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
