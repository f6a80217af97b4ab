//go:build !notensorflow

package main

import (
	"context"
	"fmt"

	"github.com/fwbench/fwbench/compare"
	"github.com/fwbench/fwbench/tfrun"
	"github.com/fwbench/fwbench/vgg"
	"github.com/fwbench/fwbench/weights"
)

func init() {
	drivers[compare.TensorFlow] = driver{
		newTrainer: func(ctx context.Context, s compare.Spec, model vgg.Config, classes int, init []*weights.Tensor) (compare.Trainer, error) {
			c := tfrun.DefaultConfig()
			c.Model, c.ImageSize, c.NumClasses, c.Hidden, c.Dropout = model, s.ImageSize, classes, s.Hidden, s.Dropout
			c.Mode, c.Optimizer, c.LR, c.Momentum, c.WeightDecay, c.Nesterov = s.Mode, s.Optimizer, s.LR, s.Momentum, s.WeightDecay, s.Nesterov
			c.Head, c.FreezeLoadedHead = vgg.Head(s.Head), s.FreezeFC
			c.Seed, c.Device, c.Threads, c.InterOpThreads, c.Weights = s.Seed, s.Device, s.Threads, s.Threads, init
			if err := c.Validate(); err != nil {
				return nil, fmt.Errorf("%w: %v", compare.ErrInvalid, err)
			}
			t, err := tfrun.New(ctx, c)
			if err != nil {
				return nil, err
			}
			return t, nil
		},
		version:     tfrun.Version,
		cudaDevices: tfrun.CUDADevices,
	}
}
