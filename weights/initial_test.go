package weights

import (
	"slices"
	"strings"
	"testing"

	"github.com/fwbench/fwbench/model"
)

// names returns the names of ps for which keep is true, in order.
func names(ps []model.Param, keep func(model.Param) bool) []string {
	var out []string
	for _, p := range ps {
		if keep(p) {
			out = append(out, p.Name)
		}
	}
	return out
}

func TestInitial(t *testing.T) {
	// VGG-11 with torchvision's head, 3 classes, and a torchvision-style file:
	// the same base, fc6 and fc7, and a 1000-class output layer.
	vggTV := model.Spec{Name: "vgg11", Head: model.HeadTorchvision, ImageSize: 32, Classes: 3, Hidden: 8}
	vggFile := vggTV
	vggFile.Classes = 1000
	vggNet := build(t, vggTV)
	file, _ := InitParams(build(t, vggFile).Params, 99)
	drop := func(name string) []*Tensor {
		return slices.DeleteFunc(slices.Clone(file), func(t *Tensor) bool { return t.Name == name })
	}
	// ResNet-18 and MobileNetV2 for 10 classes, with a file from the same
	// model built for ImageNet's 1000: its output layer (fc, classifier.1)
	// has another shape.
	resnet := build(t, model.Spec{Name: "resnet18", ImageSize: 32, Classes: 10})
	resnetFile, _ := InitParams(build(t, model.Spec{Name: "resnet18", ImageSize: 32, Classes: 1000}).Params, 99)
	mobilenet := build(t, model.Spec{Name: "mobilenet_v2", ImageSize: 32, Classes: 10})
	mobilenetFile, _ := InitParams(build(t, model.Spec{Name: "mobilenet_v2", ImageSize: 32, Classes: 1000}).Params, 99)
	fc := []string{"fc.weight", "fc.bias"}
	classifier1 := []string{"classifier.1.weight", "classifier.1.bias"}
	classifier6 := []string{"classifier.6.weight", "classifier.6.bias"}
	tests := []struct {
		name      string
		net       *model.Net
		loaded    []*Tensor
		mode      string
		partial   bool
		wantErr   string // "" for none
		fromFile  int    // tensors taken from the file
		reinit    []string
		notInFile []string
		// ignored: the file's tensors under a replaced head that the model
		// does not name (a file tensor named like a reinitialised one, such
		// as a 1000-class fc.weight, is listed under reinit only).
		ignored []string
	}{
		// vgg11: 8 convolutions = 16 base tensors; fc6 and fc7 = 4 more.
		{"vgg features keeps fc6/fc7", vggNet, file, model.ModeFeatures, false, "", 20, classifier6, nil, nil},
		{"vgg scratch needs the 3-class layer", vggNet, file, model.ModeScratch, false, "classifier.6.weight: got shape [1000 8], want [3 8]", 0, nil, nil, nil},
		{"vgg missing base tensor", vggNet, drop("features.3.weight"), model.ModeFinetune, false, "features.3.weight: missing", 0, nil, nil, nil},
		{"vgg partial allowed", vggNet, drop("features.3.weight"), model.ModeFinetune, true, "", 19, classifier6, []string{"features.3.weight"}, nil},
		{"nil tensor", vggNet, append(slices.Clone(file), nil), model.ModeFinetune, true, "a nil tensor", 0, nil, nil, nil},
		{"duplicate tensor", vggNet, append(slices.Clone(file), file[0]), model.ModeFinetune, true, "features.0.weight appears twice", 0, nil, nil, nil},
		{"module prefix unmatched", vggNet, []*Tensor{{Name: "module.features.0.weight", Shape: []int{1}, Data: []float32{0}}}, model.ModeFeatures, false, "module.features.0.weight: unexpected", 0, nil, nil, nil},
		// torchvision's resnet18 state dict: 122 entries less 20
		// num_batches_tracked = 102 float tensors; all but fc come from the file.
		{"resnet18 finetune replaces fc", resnet, resnetFile, model.ModeFinetune, false, "", 100, fc, nil, nil},
		{"resnet18 features replaces fc", resnet, resnetFile, model.ModeFeatures, false, "", 100, fc, nil, nil},
		{"resnet18 scratch needs the 10-class fc", resnet, resnetFile, model.ModeScratch, false, "fc.weight: got shape [1000 512], want [10 512]", 0, nil, nil, nil},
		// torchvision's mobilenet_v2 state dict: 314 entries less 52
		// num_batches_tracked = 262 float tensors; classifier.1 is new.
		{"mobilenet_v2 finetune replaces classifier.1", mobilenet, mobilenetFile, model.ModeFinetune, false, "", 260, classifier1, nil, nil},
	}
	for _, tc := range tests {
		ts, prov, err := Initial(tc.loaded, tc.net, tc.mode, 1, tc.partial)
		if tc.wantErr != "" {
			if err == nil || !strings.HasPrefix(err.Error(), "weights: ") || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%s: got error %v, want one containing %q", tc.name, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		ps := tc.net.Params
		if len(ts) != len(ps) || len(prov.FromFile) != tc.fromFile || !slices.Equal(prov.Reinitialised, tc.reinit) ||
			!slices.Equal(prov.NotFromFile(), tc.notInFile) || !slices.Equal(prov.Ignored, tc.ignored) || len(prov.Unexpected) != 0 {
			t.Errorf("%s: got %d tensors, %d from file, reinitialised %v, not from file %v, ignored %v, unexpected %v; want %d, %d, %v, %v, %v, none",
				tc.name, len(ts), len(prov.FromFile), prov.Reinitialised, prov.NotFromFile(), prov.Ignored, prov.Unexpected,
				len(ps), tc.fromFile, tc.reinit, tc.notInFile, tc.ignored)
		}
		// Seeded tensors equal a full InitParams with the same seed (per-name streams).
		seeded := names(ps, func(p model.Param) bool { return !slices.Contains(prov.FromFile, p.Name) })
		var seedParams []model.Param
		for _, p := range ps {
			if slices.Contains(seeded, p.Name) {
				seedParams = append(seedParams, p)
			}
		}
		want, _ := InitParams(seedParams, 1)
		for i, p := range ps {
			if ts[i].Name != p.Name || !slices.Equal(ts[i].Shape, p.Shape) {
				t.Errorf("%s: tensor %d: got %s %v, want %s %v (Params order)", tc.name, i, ts[i].Name, ts[i].Shape, p.Name, p.Shape)
				continue
			}
			if slices.Contains(prov.FromFile, p.Name) {
				if ts[i] != Lookup(tc.loaded, p.Name) {
					t.Errorf("%s: %s is not the file's tensor", tc.name, p.Name)
				}
			} else if !slices.Equal(ts[i].Data, Lookup(want, p.Name).Data) {
				t.Errorf("%s: seeded %s differs from InitParams", tc.name, p.Name)
			}
		}
	}
}

func TestInitialNewHead(t *testing.T) {
	// Features mode with VGG's keras head: the base from the file, the whole
	// head new (what WithNewHead used to compose). The "pretrained" file has
	// another head: 1000 classes, hidden 32, flattened at 64 px.
	net := build(t, model.Spec{Name: "vgg11", Head: model.HeadKeras, ImageSize: 32, Classes: 10, Hidden: 16})
	pre := build(t, model.Spec{Name: "vgg11", ImageSize: 64, Classes: 1000, Hidden: 32}).Params
	loaded := zeros(pre)
	got, prov, err := Initial(loaded, net, model.ModeFeatures, 2, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckShapes(got, net.Params, false); err != nil {
		t.Fatal(err)
	}
	headParams := slices.DeleteFunc(slices.Clone(net.Params), func(p model.Param) bool { return !p.Head })
	head, _ := InitParams(headParams, 2)
	for i, p := range net.Params {
		if got[i].Name != p.Name {
			t.Errorf("tensor %d: got %s, want %s (state-dict order)", i, got[i].Name, p.Name)
		}
		if !p.Head && Lookup(loaded, p.Name) != got[i] {
			t.Errorf("%s: base tensor not taken from loaded", p.Name)
		}
		if p.Head && !slices.Equal(got[i].Data, Lookup(head, p.Name).Data) {
			t.Errorf("%s: got values unlike InitParams of the head with seed 2", p.Name)
		}
	}
	// The net's classifier.0 and 3 are new; the file's classifier.6, which
	// the net does not name, is listed as ignored.
	wantIgnored := []string{"classifier.6.weight", "classifier.6.bias"}
	if want := names(net.Params, func(p model.Param) bool { return p.Head }); !slices.Equal(prov.Reinitialised, want) || !slices.Equal(prov.Ignored, wantIgnored) {
		t.Errorf("got reinitialised %v, ignored %v; want %v, %v", prov.Reinitialised, prov.Ignored, want, wantIgnored)
	}

	tests := []struct {
		name   string
		net    *model.Net
		loaded []*Tensor
		want   string
	}{
		// A missing base tensor is an error naming it.
		{"missing base", net, loaded[2:], "features.0.weight: missing"},
		// The flatten head replaces classifier.6 only: fc6 must come from the
		// file, and the 64 px file's has another shape.
		{"flatten head keeps fc6", build(t, model.Spec{Name: "vgg11", ImageSize: 32, Classes: 10, Hidden: 16}), loaded,
			"classifier.0.weight: got shape [32 2048], want [16 512]"},
	}
	for _, tt := range tests {
		if _, _, err := Initial(tt.loaded, tt.net, model.ModeFeatures, 2, false); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: got %v, want an error containing %q", tt.name, err, tt.want)
		}
	}
}
