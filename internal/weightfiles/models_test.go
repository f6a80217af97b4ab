package weightfiles

import (
	"slices"
	"testing"

	"github.com/fwbench/fwbench/internal/reftest"
	"github.com/fwbench/fwbench/internal/testfixture"
	"github.com/fwbench/fwbench/model"
	"github.com/fwbench/fwbench/weights"
)

// tvPeriod is scripts/reference/make_model_fixtures.py's TV_PERIOD: in its
// weight files element j of a tensor holds the formula value of element
// j mod tvPeriod.
const tvPeriod = 127

// TestTorchvisionModelFiles reads the weight files that torch.save wrote from
// torchvision 0.26's own resnet18, resnet50 and mobilenet_v2 (1000 classes;
// scripts/reference/make_model_fixtures.py), in the zip and the legacy format,
// and composes them strictly (weights.Initial, scratch mode) for the Net that
// model.Build describes at 224 px: every tensor comes from the file under its
// torchvision name and shape, in state-dict order, none is missing or left
// over, every element is the reftest formula's, and both formats give the same
// tensors.
func TestTorchvisionModelFiles(t *testing.T) {
	tests := []struct {
		model   string
		tensors int // torchvision's state dict without num_batches_tracked (see reftest's models_test.go)
	}{
		{"resnet18", 102},
		{"resnet50", 267},
		{"mobilenet_v2", 262},
	}
	for _, tt := range tests {
		t.Run(tt.model, func(t *testing.T) {
			net, err := model.Build(model.Spec{Name: tt.model, Head: model.HeadTorchvision, ImageSize: 224, Classes: 1000})
			if err != nil {
				t.Fatal(err)
			}
			if len(net.Params) != tt.tensors {
				t.Fatalf("model.Build: got %d tensors, want %d", len(net.Params), tt.tensors)
			}
			// The file's values, tensor k element j: reftest's formula at (k, j mod tvPeriod).
			formula := reftest.WeightsForNet(net)
			var zip []*weights.Tensor
			for _, file := range []string{tt.model + ".pth", tt.model + "_legacy.pth"} {
				loaded, err := weights.Load(testfixture.Path(t, weightsData+"/"+file+".gz.gz"))
				if err != nil {
					t.Fatalf("%s: %v", file, err)
				}
				// torch.save keeps the state dict's order, which model.Build's Params follow.
				var names []string
				for _, x := range loaded {
					names = append(names, x.Name)
				}
				var want []string
				for _, p := range net.Params {
					want = append(want, p.Name)
				}
				if i := firstDiff(names, want); i >= 0 {
					t.Errorf("%s: tensor %d in the file's order: got %q of %d, want %q of %d (model.Build's Params order)",
						file, i, at(names, i), len(names), at(want, i), len(want))
				}
				ts, prov, err := weights.Initial(loaded, net, model.ModeScratch, 1, false)
				if err != nil {
					t.Fatalf("%s: %v", file, err)
				}
				if len(prov.FromFile) != len(net.Params) || len(prov.NotFromFile())+len(prov.Unexpected)+len(prov.Ignored)+len(prov.Seeded)+len(prov.Reinitialised) != 0 {
					t.Errorf("%s: provenance: got %d from the file, %d missing, %d mismatched, %d unexpected, %d ignored, %d seeded, %d reinitialised; want all %d from the file",
						file, len(prov.FromFile), len(prov.Missing), len(prov.Mismatched), len(prov.Unexpected), len(prov.Ignored), len(prov.Seeded), len(prov.Reinitialised), len(net.Params))
				}
				for k, p := range net.Params {
					x := ts[k]
					if x.Name != p.Name || !slices.Equal(x.Shape, p.Shape) || len(x.Data) != p.NumElements() {
						t.Errorf("%s: tensor %d: got %s %v with %d values, want %s %v", file, k, x.Name, x.Shape, len(x.Data), p.Name, p.Shape)
						continue
					}
					for j, v := range x.Data {
						if w := formula[k].Data[j%tvPeriod]; v != w {
							t.Errorf("%s: %s[%d]: got %v, want %v (formula(%d, %d mod %d))", file, p.Name, j, v, w, k, j, tvPeriod)
							break
						}
					}
				}
				if zip == nil {
					zip = ts
					continue
				}
				if got, want := weights.CanonicalSHA256(ts), weights.CanonicalSHA256(zip); got != want {
					t.Errorf("%s: canonical sha256: got %s, want %s (%s.pth, the zip format)", file, got, want, tt.model)
				}
			}
		})
	}
}

// firstDiff returns the first index where a and b differ, or −1 when they are equal.
func firstDiff(a, b []string) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	if len(a) != len(b) {
		return min(len(a), len(b))
	}
	return -1
}

// at returns s[i], or "" past its end.
func at(s []string, i int) string {
	if i < len(s) {
		return s[i]
	}
	return ""
}
