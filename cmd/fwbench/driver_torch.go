//go:build !notorch

package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/fwbench/fwbench/compare"
	"github.com/fwbench/fwbench/recipe"
	"github.com/fwbench/fwbench/torchrun"
	"github.com/fwbench/fwbench/weights"
)

func init() {
	parallelRefusals[torchrun.Framework] = func(s compare.Spec) error {
		if !s.GPU() {
			return nil
		}
		if _, err := torchrun.NCCL(); err != nil {
			return fmt.Errorf("torch trains data-parallel on CUDA with c10d's NCCL, which cannot be used here: %w", err)
		}
		return nil
	}
	register(compare.Framework{
		Name:    torchrun.Framework,
		Aliases: []string{"pytorch", "libtorch"},
		New: func(ctx context.Context, cfg recipe.Config, init []*weights.Tensor) (compare.Trainer, error) {
			t, err := torchrun.New(ctx, cfg, init)
			if err != nil {
				return nil, err // a nil *Trainer must not become a non-nil interface
			}
			return t, nil
		},
		NewParallel: func(ctx context.Context, cfg recipe.Config, init []*weights.Tensor, p recipe.Parallel) (compare.Trainer, error) {
			t, err := torchrun.NewParallel(ctx, cfg, init, p)
			if err != nil {
				return nil, err
			}
			return t, nil
		},
		Version: torchrun.Version,
		CUDADevices: func() ([]string, error) {
			devs, err := torchrun.CUDADevices()
			if why := torchrun.CUDAUnavailable(); err == nil && len(devs) == 0 && why != "" {
				err = errors.New(why)
			}
			return devs, err
		},
	})
}
