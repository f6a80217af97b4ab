package tfrun

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/fwbench/fwbench/model"
)

func randData(n int, seed uint64) []float32 {
	r := rand.New(rand.NewPCG(seed, 1))
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(r.NormFloat64())
	}
	return x
}

// TestLayoutRoundTrip: fromTF(toTF(x)) = x for every parameter of every
// model (VGG with BatchNorm and each head, ResNet-18, MobileNetV2's
// depthwise filters).
func TestLayoutRoundTrip(t *testing.T) {
	for _, s := range []model.Spec{
		{Name: "vgg11_bn", Head: model.HeadFlatten, ImageSize: 64, Classes: 5, Hidden: 7},
		{Name: "vgg11_bn", Head: model.HeadTorchvision, ImageSize: 32, Classes: 5, Hidden: 7},
		{Name: "vgg11_bn", Head: model.HeadKeras, ImageSize: 32, Classes: 5, Hidden: 7},
		{Name: "resnet18", ImageSize: 32, Classes: 5},
		{Name: "mobilenet_v2", ImageSize: 32, Classes: 5},
	} {
		net, err := model.Build(s)
		if err != nil {
			t.Fatal(err)
		}
		for i, p := range net.Params {
			dw := net.Layers[p.Layer].Depthwise()
			x := randData(p.NumElements(), uint64(i))
			if got := fromTF(p, dw, toTF(p, dw, x)); !slices.Equal(got, x) {
				t.Errorf("%s %s: round trip changed the data", s.Name, p.Name)
			}
			n := int64(1)
			for _, d := range tfShape(p, dw) {
				n *= d
			}
			if n != int64(p.NumElements()) {
				t.Errorf("%s %s: TF shape %v holds %d elements, want %d", s.Name, p.Name, tfShape(p, dw), n, p.NumElements())
			}
		}
	}
}

// TestLayoutMeaning checks what the conversions mean, not just that they
// invert: torch's w[o][i][y][x] is TF's Conv2D filter w[y][x][i][o], a
// depthwise filter torch [C][1][y][x] is TF's DepthwiseConv2dNative filter
// [y][x][c][0], and a Linear [out][in] is TF's MatMul [in][out].
func TestLayoutMeaning(t *testing.T) {
	// Conv: torch w[o][i][y][x] is TF w[y][x][i][o].
	p := model.Param{Name: "features.0.weight", Shape: []int{4, 3, 3, 3}, Kind: model.ConvWeight}
	src := randData(p.NumElements(), 1)
	dst := toTF(p, false, src)
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
	if got, want := tfShape(p, false), []int64{3, 3, 3, 4}; !slices.Equal(got, want) {
		t.Errorf("conv TF shape %v, want %v", got, want)
	}

	// Depthwise: torch [C=5][1][3][3] is TF [3][3][5][1], element [y][x][c][0].
	dp := model.Param{Name: "features.1.conv.0.0.weight", Shape: []int{5, 1, 3, 3}, Kind: model.ConvWeight}
	dsrc := randData(dp.NumElements(), 2)
	ddst := toTF(dp, true, dsrc)
	for c := range 5 {
		for y := range 3 {
			for x := range 3 {
				if got, want := ddst[(y*3+x)*5+c], dsrc[(c*3+y)*3+x]; got != want {
					t.Fatalf("depthwise [c=%d y=%d x=%d]: got %v, want %v", c, y, x, got, want)
				}
			}
		}
	}
	if got, want := tfShape(dp, true), []int64{3, 3, 5, 1}; !slices.Equal(got, want) {
		t.Errorf("depthwise TF shape %v, want %v", got, want)
	}

	// Linear layers are plain transposes (the graph flattens in torch's order).
	lp := model.Param{Name: "classifier.0.weight", Shape: []int{5, 7}, Kind: model.LinearWeight, Head: true}
	w := randData(35, 4)
	wtf := toTF(lp, false, w)
	for o := range 5 {
		for j := range 7 {
			if wtf[j*5+o] != w[o*7+j] {
				t.Fatalf("linear [%d][%d] not transposed", o, j)
			}
		}
	}
	if got, want := tfShape(lp, false), []int64{7, 5}; !slices.Equal(got, want) {
		t.Errorf("linear TF shape %v, want %v", got, want)
	}
}
