package recipe

import (
	"errors"
	"strings"
	"testing"
)

// TestValidate lists bad recipes with the words their message must hold. The
// same table drives the CLI, compare and both drivers (BadRecipes), so that
// every entry point refuses them with this one message.
func TestValidate(t *testing.T) {
	if err := Default().Validate(); err != nil {
		t.Fatalf("Default: %v", err)
	}
	for _, c := range BadRecipes() {
		err := c.Config.Validate()
		if err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.Want) {
			t.Errorf("%s: got %v, want an ErrInvalid containing %q", c.Name, err, c.Want)
		}
	}
}

func TestParseDevice(t *testing.T) {
	for _, c := range []struct {
		in, want string
		ok       bool
	}{{"", "cpu", true}, {" CPU ", "cpu", true}, {"cuda", "cuda:0", true}, {"cuda:3", "cuda:3", true},
		{"gpu", "", false}, {"cuda:-1", "", false}, {"cuda:x", "", false}, {"tpu", "", false}} {
		d, err := ParseDevice(c.in)
		if (err == nil) != c.ok || (c.ok && d.String() != c.want) {
			t.Errorf("ParseDevice(%q): got %v, %v; want %q, ok %t", c.in, d, err, c.want, c.ok)
		}
	}
}

// TestResolvedMap: two spellings of one recipe give one fairness map.
func TestResolvedMap(t *testing.T) {
	a := Default()
	b := a
	a.Head, a.Hidden, a.Device, a.Precision = "", 0, "", ""
	b.Head, b.Hidden, b.Device, b.Precision, b.Model = "flatten", 4096, "cpu", "fp32", " VGG16 "
	ma, mb := a.Map(), b.Map()
	for k, v := range ma {
		if mb[k] != v {
			t.Errorf("%s: got %q and %q", k, v, mb[k])
		}
	}
	r := Default()
	r.Model = "resnet50"
	r.Hidden = 256
	if got := r.Map()["hidden"]; got != "0" {
		t.Errorf("resnet50 hidden: got %q, want 0 (no hidden layers)", got)
	}
}

// TestPrecisions: every precision is accepted where it can run (TF32 on CUDA
// only), and each speed setting reaches the fairness map.
func TestPrecisions(t *testing.T) {
	for _, p := range Precisions() {
		for _, dev := range []string{"cpu", "cuda:0"} {
			c := Default()
			c.Precision, c.Device = p, dev
			err := c.Validate()
			if want := p != TF32 || dev != "cpu"; (err == nil) != want {
				t.Errorf("precision %s on %s: got %v, want accepted %t", p, dev, err, want)
			}
		}
	}
	c := Default()
	c.Precision, c.ChannelsLast, c.CUDNNBenchmark, c.XLA, c.Deterministic = BF16, true, true, true, true
	m := c.Map()
	for k, want := range map[string]string{"precision": "bf16", "channels_last": "true", "cudnn_benchmark": "true", "xla": "true", "deterministic": "true"} {
		if m[k] != want {
			t.Errorf("Map()[%q]: got %q, want %q", k, m[k], want)
		}
	}
	if got := len(SettingKeys()); got != 6 {
		t.Errorf("SettingKeys: got %d keys, want the 6 of the precision issue", got)
	}
}
