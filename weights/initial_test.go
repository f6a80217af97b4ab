package weights

import (
	"slices"
	"strings"
	"testing"

	"github.com/fwbench/fwbench/vgg"
)

func TestInitial(t *testing.T) {
	vgg11 := vgg.Config{Name: "vgg11"}
	model, err := vgg.ParamsFor(vgg11, vgg.HeadTorchvision, 32, 3, 8)
	if err != nil {
		t.Fatal(err)
	}
	// A torchvision-style file: the same base, fc6 and fc7, and a 1000-class output layer.
	fileParams, _ := vgg.ParamsFor(vgg11, vgg.HeadTorchvision, 32, 1000, 8)
	file, _ := InitParams(fileParams, 99)
	drop := func(name string) []*Tensor {
		return slices.DeleteFunc(slices.Clone(file), func(t *Tensor) bool { return t.Name == name })
	}
	tests := []struct {
		name      string
		loaded    []*Tensor
		mode      string
		head      vgg.Head
		partial   bool
		wantErr   string // "" for none
		fromFile  int    // tensors taken from the file
		reinit    []string
		notInFile []string
	}{
		// vgg11: 8 convolutions = 16 base tensors; fc6 and fc7 = 4 more.
		{"features keeps fc6/fc7", file, vgg.ModeFeatures, vgg.HeadTorchvision, false, "", 20, []string{"classifier.6.weight", "classifier.6.bias"}, nil},
		{"scratch needs the 3-class layer", file, vgg.ModeScratch, vgg.HeadTorchvision, false, "classifier.6.weight: got shape [1000 8], want [3 8]", 0, nil, nil},
		{"missing base tensor", drop("features.3.weight"), vgg.ModeFinetune, vgg.HeadTorchvision, false, "features.3.weight: missing", 0, nil, nil},
		{"partial allowed", drop("features.3.weight"), vgg.ModeFinetune, vgg.HeadTorchvision, true, "", 19, []string{"classifier.6.weight", "classifier.6.bias"}, []string{"features.3.weight"}},
		{"module prefix unmatched", []*Tensor{{Name: "module.features.0.weight", Shape: []int{1}, Data: []float32{0}}}, vgg.ModeFeatures, vgg.HeadTorchvision, false, "module.features.0.weight: unexpected", 0, nil, nil},
	}
	for _, tc := range tests {
		ts, prov, err := Initial(tc.loaded, model, tc.mode, tc.head, 1, tc.partial)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%s: got error %v, want one containing %q", tc.name, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if len(ts) != len(model) || len(prov.FromFile) != tc.fromFile || !slices.Equal(prov.Reinitialised, tc.reinit) || !slices.Equal(prov.NotFromFile(), tc.notInFile) {
			t.Errorf("%s: got %d tensors, %d from file, reinitialised %v, not from file %v; want %d, %d, %v, %v",
				tc.name, len(ts), len(prov.FromFile), prov.Reinitialised, prov.NotFromFile(), len(model), tc.fromFile, tc.reinit, tc.notInFile)
		}
		// Seeded tensors equal a full InitParams with the same seed (per-name streams).
		full, _ := InitParams(model, 1)
		for i, p := range model {
			if slices.Contains(prov.FromFile, p.Name) {
				if ts[i] != Lookup(tc.loaded, p.Name) {
					t.Errorf("%s: %s is not the file's tensor", tc.name, p.Name)
				}
			} else if !slices.Equal(ts[i].Data, full[i].Data) {
				t.Errorf("%s: seeded %s differs from InitParams", tc.name, p.Name)
			}
		}
	}
}
