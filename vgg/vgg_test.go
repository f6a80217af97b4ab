package vgg

import (
	"math"
	"slices"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		in   string
		want Config
		str  string
	}{
		{"vgg11", Config{Name: "vgg11"}, "vgg11"},
		{"vgg13_bn", Config{Name: "vgg13", BatchNorm: true}, "vgg13_bn"},
		{"vgg16", Config{Name: "vgg16"}, "vgg16"},
		{" VGG16_BN ", Config{Name: "vgg16", BatchNorm: true}, "vgg16_bn"},
		{"vgg19", Config{Name: "vgg19"}, "vgg19"},
	}
	for _, tt := range tests {
		got, err := Parse(tt.in)
		if err != nil {
			t.Errorf("Parse(%q): %v", tt.in, err)
			continue
		}
		if got != tt.want {
			t.Errorf("Parse(%q): got %+v, want %+v", tt.in, got, tt.want)
		}
		if got.String() != tt.str {
			t.Errorf("Parse(%q).String(): got %q, want %q", tt.in, got.String(), tt.str)
		}
	}
	for _, name := range Names() {
		for _, suffix := range []string{"", "_bn"} {
			if c, err := Parse(name + suffix); err != nil || c.String() != name+suffix {
				t.Errorf("Parse(%q): got %v, %v; want round trip", name+suffix, c, err)
			}
		}
	}
	for _, bad := range []string{"", "vgg", "vgg17", "resnet50", "vgg16_bn_bn", "_bn"} {
		if _, err := Parse(bad); err == nil || !strings.HasPrefix(err.Error(), "vgg: ") {
			t.Errorf("Parse(%q): got error %v, want one starting with \"vgg: \"", bad, err)
		}
	}
}

func TestLayers(t *testing.T) {
	// Expected lists: torchvision/models/vgg.py cfgs "A", "B", "D", "E".
	tests := []struct {
		name string
		want []int
	}{
		{"vgg11", []int{64, Pool, 128, Pool, 256, 256, Pool, 512, 512, Pool, 512, 512, Pool}},
		{"vgg13", []int{64, 64, Pool, 128, 128, Pool, 256, 256, Pool, 512, 512, Pool, 512, 512, Pool}},
		{"vgg16", []int{64, 64, Pool, 128, 128, Pool, 256, 256, 256, Pool, 512, 512, 512, Pool, 512, 512, 512, Pool}},
		{"vgg19", []int{64, 64, Pool, 128, 128, Pool, 256, 256, 256, 256, Pool, 512, 512, 512, 512, Pool, 512, 512, 512, 512, Pool}},
	}
	for _, tt := range tests {
		got := Config{Name: tt.name}.Layers()
		if !slices.Equal(got, tt.want) {
			t.Errorf("%s: got %v, want %v", tt.name, got, tt.want)
		}
	}
	if got := (Config{Name: "nope"}).Layers(); got != nil {
		t.Errorf("unknown model: got %v, want nil", got)
	}
}

func TestFeatureLayerIndices(t *testing.T) {
	// Expected indices: print(torchvision.models.vgg16()) and vgg16_bn():
	// Conv2d at these features indices, BatchNorm2d right after each.
	tests := []struct {
		model string
		conv  []int
		pool  []int
	}{
		{"vgg16", []int{0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28}, []int{4, 9, 16, 23, 30}},
		{"vgg16_bn", []int{0, 3, 7, 10, 14, 17, 20, 24, 27, 30, 34, 37, 40}, []int{6, 13, 23, 33, 43}},
	}
	for _, tt := range tests {
		c, _ := Parse(tt.model)
		ls, err := c.FeatureLayers(224)
		if err != nil {
			t.Fatal(err)
		}
		var conv, pool []int
		for _, l := range ls {
			if l.Pool {
				pool = append(pool, l.Index)
				continue
			}
			conv = append(conv, l.Index)
			if c.BatchNorm && (l.BN != l.Index+1 || l.ReLU != l.Index+2) {
				t.Errorf("%s conv %d: got BN %d ReLU %d, want %d %d", tt.model, l.Index, l.BN, l.ReLU, l.Index+1, l.Index+2)
			}
		}
		if !slices.Equal(conv, tt.conv) || !slices.Equal(pool, tt.pool) {
			t.Errorf("%s: got conv %v pool %v, want %v %v", tt.model, conv, pool, tt.conv, tt.pool)
		}
		// Spatial size halves at each pool: 224, 112, 56, 28, 14.
		if last := ls[len(ls)-1]; last.Size != 14 {
			t.Errorf("%s: last pool input size got %d, want 14", tt.model, last.Size)
		}
	}
}

func TestParamCounts(t *testing.T) {
	// Expected trainable counts: torchvision documentation, "num_params" of
	// VGG{11,13,16,19}[_BN]_Weights.IMAGENET1K_V1 (224 px, 1000 classes).
	// BatchNorm weight and bias count; running_mean/var are buffers, 2 per
	// BN channel: vgg16 has 4224 BN channels, so 8448 buffer elements.
	tests := []struct {
		model     string
		trainable int
		buffers   int
	}{
		{"vgg11", 132_863_336, 0},
		{"vgg13", 133_047_848, 0},
		{"vgg16", 138_357_544, 0},
		{"vgg19", 143_667_240, 0},
		{"vgg11_bn", 132_868_840, 2 * 2752},
		{"vgg13_bn", 133_053_736, 2 * 2944},
		{"vgg16_bn", 138_365_992, 2 * 4224},
		{"vgg19_bn", 143_678_248, 2 * 5504},
	}
	for _, tt := range tests {
		c, err := Parse(tt.model)
		if err != nil {
			t.Fatal(err)
		}
		ps, err := Params(c, 224, 1000)
		if err != nil {
			t.Fatal(err)
		}
		tr, buf := Count(ps)
		if tr != tt.trainable || buf != tt.buffers {
			t.Errorf("%s: got %d trainable + %d buffers, want %d + %d", tt.model, tr, buf, tt.trainable, tt.buffers)
		}
	}
}

func TestParamsSmall(t *testing.T) {
	c := Config{Name: "vgg11"}
	ps, err := ParamsHidden(c, 64, 10, 32)
	if err != nil {
		t.Fatal(err)
	}
	// Classifier input 512·(64/32)² = 2048; hidden 32; 10 classes.
	want := map[string][]int{
		"features.0.weight":   {64, 3, 3, 3},
		"features.0.bias":     {64},
		"features.3.weight":   {128, 64, 3, 3},
		"classifier.0.weight": {32, 2048},
		"classifier.3.weight": {32, 32},
		"classifier.6.weight": {10, 32},
		"classifier.6.bias":   {10},
	}
	got := map[string]Param{}
	for _, p := range ps {
		got[p.Name] = p
		if p.Head != strings.HasPrefix(p.Name, "classifier.") {
			t.Errorf("%s: got Head %v, want %v", p.Name, p.Head, !p.Head)
		}
	}
	for name, shape := range want {
		if !slices.Equal(got[name].Shape, shape) {
			t.Errorf("%s: got shape %v, want %v", name, got[name].Shape, shape)
		}
	}
	// 8 convs × 2 + 3 linears × 2 tensors.
	if len(ps) != 22 {
		t.Errorf("got %d tensors, want 22", len(ps))
	}
	// Order is torchvision's state_dict order: first and last names.
	if ps[0].Name != "features.0.weight" || ps[len(ps)-1].Name != "classifier.6.bias" {
		t.Errorf("order: got first %s last %s", ps[0].Name, ps[len(ps)-1].Name)
	}
	// hidden 0 means DefaultHidden.
	p0, _ := ParamsHidden(c, 64, 10, 0)
	p1, _ := Params(c, 64, 10)
	for i := range p0 {
		if !slices.Equal(p0[i].Shape, p1[i].Shape) {
			t.Errorf("hidden 0 %s: got %v, want %v", p0[i].Name, p0[i].Shape, p1[i].Shape)
		}
	}
}

func TestParamsErrors(t *testing.T) {
	tests := []struct {
		name                  string
		c                     Config
		size, classes, hidden int
	}{
		{"unknown model", Config{Name: "vgg8"}, 224, 10, 0},
		{"size below 32", Config{Name: "vgg16"}, 16, 10, 0},
		{"size not multiple of 32", Config{Name: "vgg16"}, 100, 10, 0},
		{"zero classes", Config{Name: "vgg16"}, 224, 0, 0},
		{"negative hidden", Config{Name: "vgg16"}, 224, 10, -1},
	}
	for _, tt := range tests {
		_, err := ParamsHidden(tt.c, tt.size, tt.classes, tt.hidden)
		if err == nil || !strings.HasPrefix(err.Error(), "vgg: ") {
			t.Errorf("%s: got error %v, want a \"vgg: \" error", tt.name, err)
		}
	}
}

func TestFLOPs(t *testing.T) {
	// Expected: torchvision documentation "GFLOPS" of the IMAGENET1K_V1
	// weights at 224 px, 1000 classes (7.61, 11.31, 15.47, 19.63), which are
	// multiply-accumulates, so FLOPs = 2 × that. Rounded to 0.01 G in the docs.
	tests := []struct {
		model string
		gmacs float64
	}{
		{"vgg11", 7.61}, {"vgg13", 11.31}, {"vgg16", 15.47}, {"vgg19", 19.63},
		{"vgg16_bn", 15.47}, // BatchNorm is not counted
	}
	for _, tt := range tests {
		c, _ := Parse(tt.model)
		fwd, train := TrainFLOPs(c, 224, 1000, 0, 1)
		if math.Abs(fwd/2e9-tt.gmacs) > 0.005 {
			t.Errorf("%s: got %.4f GMACs, want %.2f", tt.model, fwd/2e9, tt.gmacs)
		}
		if train != 3*fwd {
			t.Errorf("%s: train got %g, want 3 × forward = %g", tt.model, train, 3*fwd)
		}
	}
}

func TestFLOPsExact(t *testing.T) {
	c := Config{Name: "vgg16"}
	base, head, err := FLOPs(c, 224, 1000, 4096)
	if err != nil {
		t.Fatal(err)
	}
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
	fwd, train := TrainFLOPsMode(c, 224, 1000, 4096, 8, true)
	if want := 8 * (base + head); fwd != want {
		t.Errorf("frozen forward: got %g, want %g", fwd, want)
	}
	if want := 8 * (base + 3*head); train != want {
		t.Errorf("frozen train: got %g, want 8·(base + 3·head) = %g", train, want)
	}
	if f, tr := TrainFLOPs(c, 225, 1000, 0, 1); f != 0 || tr != 0 {
		t.Errorf("invalid size: got %g %g, want 0 0", f, tr)
	}
}
