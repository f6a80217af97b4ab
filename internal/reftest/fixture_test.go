package reftest

import "testing"

// TestFixtureSums checks that a missing or unusable sums entry is an error,
// not a NaN comparison that passes.
func TestFixtureSums(t *testing.T) {
	f := LoadFixture(t, "../../testdata/reference/vgg16_s32.safetensors")
	// sgd1/features.0.weight is in the fixture: scripts/reference/make_fixture.py (record)
	// writes sums for every features.* tensor of every run.
	if s, err := f.Sums("sgd1/features.0.weight"); err != nil || s.DeltaAbsSum <= 0 {
		t.Errorf("sgd1/features.0.weight: got %+v, %v; want positive sums and no error", s, err)
	}
	f.sums["zero/features.0.weight"] = Sums{}
	for _, key := range []string{"sgd1/no.such.tensor", "nosuchrun/features.0.weight", "zero/features.0.weight"} {
		if _, err := f.Sums(key); err == nil {
			t.Errorf("%s: got no error, want one", key)
		}
	}
	if f.Get(t, "logits") == nil || f.Tensor("no such key") != nil {
		t.Error("Get(logits) or Tensor(no such key): got the wrong presence")
	}
}
