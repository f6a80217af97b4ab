package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/fwbench/fwbench/compare"
	"github.com/fwbench/fwbench/keras"
	"github.com/fwbench/fwbench/vgg"
	"github.com/fwbench/fwbench/weights"
)

// driver is one framework as the CLI sees it. Each is registered by its own file behind a
// build tag (notorch, notensorflow), so a binary can be built without either native library.
type driver struct {
	newTrainer  func(ctx context.Context, s compare.Spec, model vgg.Config, classes int, init []*weights.Tensor) (compare.Trainer, error)
	version     func() string
	cudaDevices func() ([]string, error)
}

var drivers = map[string]driver{}

func lookupDriver(framework string) (driver, error) {
	d, ok := drivers[framework]
	if !ok {
		return driver{}, fmt.Errorf("%w: framework %q is not built into this fwbench (build tags notorch/notensorflow)", compare.ErrInvalid, framework)
	}
	return d, nil
}

// newTrainer builds the driver for s.Framework. A CUDA device that is not there is an
// invalid-input error (exit 2), reported before any training.
func newTrainer(ctx context.Context, s compare.Spec, classes int, init []*weights.Tensor) (compare.Trainer, error) {
	d, err := lookupDriver(s.Framework)
	if err != nil {
		return nil, err
	}
	model, err := vgg.Parse(s.Model)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", compare.ErrInvalid, err)
	}
	if s.GPU() {
		if err := checkGPU(s.Framework, s.Device); err != nil {
			return nil, err
		}
	}
	return d.newTrainer(ctx, s, model, classes, init)
}

// checkGPU fails with an invalid-input error when the framework sees no CUDA device.
func checkGPU(framework, device string) error {
	d, err := lookupDriver(framework)
	if err != nil {
		return err
	}
	devs, err := d.cudaDevices()
	if err == nil && len(devs) == 0 {
		err = fmt.Errorf("no CUDA device is visible")
	}
	if err != nil {
		return fmt.Errorf("%w: --device %s asked for a GPU, but %s cannot use one: %v", compare.ErrInvalid, device, framework, err)
	}
	return nil
}

// saveTrainerWeights writes the trained weights, read back from the framework in the
// canonical layout, in the format the file name asks for: `.pth`/`.pt` a torch.save zip that
// torch.load(weights_only=True) reads into torchvision's model, `.weights.h5` a Keras 3 file
// for keras.applications.VGG16 plus the same head (plain VGG, flatten or keras head), any
// other name safetensors.
func saveTrainerWeights(tr compare.Trainer, path string) error {
	wr, ok := tr.(compare.WeightsReader)
	if !ok {
		return fmt.Errorf("%s cannot read its weights back", tr.Framework())
	}
	ts, err := wr.Weights()
	if err != nil {
		return err
	}
	switch lower := strings.ToLower(path); {
	case strings.HasSuffix(lower, ".pth") || strings.HasSuffix(lower, ".pt"):
		return weights.WritePth(path, ts)
	case strings.HasSuffix(lower, ".h5"):
		return keras.WriteWeightsH5(path, ts, keras.WriteOptions{})
	default:
		return weights.WriteSafetensors(path, ts, map[string]string{"fwbench": "trained weights", "framework": tr.Framework()})
	}
}

// trainerSettings records framework settings that affect speed, where the driver reports them.
func trainerSettings(tr compare.Trainer) map[string]string {
	type settingser interface{ Settings() map[string]string }
	m := map[string]string{"threads": fmt.Sprint(tr.Threads()), "device": tr.Device()}
	if s, ok := tr.(settingser); ok {
		for k, v := range s.Settings() {
			m[k] = v
		}
	}
	return m
}
