package compare

import (
	"errors"
	"math"
	"slices"
	"strings"
	"testing"
)

// TestSpecBounds: every numeric input has an upper bound and finite floats; each refusal
// wraps ErrInvalid (exit 2) and names what is wrong. The limits are the documented constants.
func TestSpecBounds(t *testing.T) {
	nan, inf := math.NaN(), math.Inf(1)
	tests := []struct {
		name   string
		change func(*Spec)
		want   string // "" means valid
	}{
		// The recipe's own bounds are recipe.Config.Validate's (tested in package recipe);
		// these are the bounds of what a Spec adds.
		// 16·4128·4128·3·4 = 3,271,753,728 bytes, over 2^30.
		{"image size 4128", func(s *Spec) { s.ImageSize = 4128 }, "a batch of 16 images of 4128×4128 is 3271753728 bytes"},
		{"batch size over", func(s *Spec) { s.BatchSize = MaxBatchSize + 1 }, "batch size must be in [1, 65536]"},
		// 256·512·512·3·4 = 805,306,368 bytes, under 2^30.
		{"batch 256 at 512 px", func(s *Spec) { s.BatchSize, s.ImageSize = 256, 512 }, ""},
		// 1024·512·512·3·4 = 3,221,225,472 bytes, over 2^30.
		{"batch 1024 at 512 px", func(s *Spec) { s.BatchSize, s.ImageSize = 1024, 512 }, "is 3221225472 bytes of float32 input, over the limit of 1073741824"},
		// vgg16, flatten head, 4096 px: fc6 is 128·128·512 × 16384 = 137e9 weights.
		{"model over MaxParams", func(s *Spec) { s.BatchSize, s.ImageSize, s.Hidden = 1, 4096, 16384 }, "parameters, over the limit of 1073741824"},
		// hidden 1,000,000 at 32 px: fc7 alone is 10^12 weights.
		{"hidden 1,000,000", func(s *Spec) { s.Hidden = 1_000_000 }, "vgg16_bn with head flatten, hidden 1000000 at 32 px has"},
		// torchvision VGG16 at 224 px: 138,357,544 parameters (torchvision's documentation).
		{"torchvision VGG16 at 224 px", func(s *Spec) { s.Model, s.Head, s.ImageSize, s.Hidden = "vgg16", "torchvision", 224, 4096 }, ""},
		// torchvision ResNet-50: 25,557,032 parameters (torchvision's documentation).
		{"resnet50 at 224 px", func(s *Spec) { s.Model, s.ImageSize = "resnet50", 224 }, ""},
		{"steps per epoch -1", func(s *Spec) { s.StepsPerEpoch = -1 }, "steps per epoch must not be negative, got -1"},
		{"warm-up steps -1", func(s *Spec) { s.WarmupSteps = -1 }, "warm-up steps must not be negative, got -1"},
		{"target accuracy 5", func(s *Spec) { s.TargetAccuracy = 5 }, "target accuracy must be in [0, 1] (0: off), got 5"},
		{"target accuracy 1", func(s *Spec) { s.TargetAccuracy = 1 }, ""},
		{"target accuracy -0.5", func(s *Spec) { s.TargetAccuracy = -0.5 }, "target accuracy must be in [0, 1]"},
		{"val split NaN", func(s *Spec) { s.ValSplit = nan }, "--val-split must be a finite number"},
		{"val split +Inf", func(s *Spec) { s.ValSplit = inf }, "--val-split must be a finite number"},
		{"target accuracy -Inf", func(s *Spec) { s.TargetAccuracy = math.Inf(-1) }, "--target-accuracy must be a finite number"},
		{"max pixels negative", func(s *Spec) { s.MaxPixels = -1 }, "max pixels must be in [1, 2147483648]"},
		{"max pixels over", func(s *Spec) { s.MaxPixels = MaxPixelsLimit + 1 }, "max pixels must be in [1, 2147483648]"},
		{"max pixels 1000", func(s *Spec) { s.MaxPixels = 1000 }, ""},
	}
	for _, tt := range tests {
		s := testSpec()
		tt.change(&s)
		err := s.Validate()
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%s: got %v, want no error", tt.name, err)
		case tt.want != "" && (!errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("%s: got %v, want ErrInvalid containing %q", tt.name, err, tt.want)
		}
	}
}

// TestArgsCarryDataLimits: compare's children get --max-pixels and --strict.
func TestArgsCarryDataLimits(t *testing.T) {
	s := testSpec()
	if a := s.Args(); slices.Contains(a, "--strict") || slices.Contains(a, "--max-pixels") {
		t.Errorf("defaults: got %v, want neither --strict nor --max-pixels", a)
	}
	s.MaxPixels, s.Strict = 1234, true
	a := s.Args()
	i := slices.Index(a, "--max-pixels")
	if i < 0 || i+1 >= len(a) || a[i+1] != "1234" || !slices.Contains(a, "--strict") {
		t.Errorf("got %v, want --max-pixels 1234 and --strict", a)
	}
}
