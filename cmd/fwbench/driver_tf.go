//go:build !notensorflow

package main

import (
	"context"

	"github.com/fwbench/fwbench/compare"
	"github.com/fwbench/fwbench/recipe"
	"github.com/fwbench/fwbench/tfrun"
	"github.com/fwbench/fwbench/weights"
)

func init() {
	register(compare.Framework{
		Name:    tfrun.Framework,
		Aliases: []string{"tf"},
		New: func(ctx context.Context, cfg recipe.Config, init []*weights.Tensor) (compare.Trainer, error) {
			t, err := tfrun.New(ctx, cfg, init)
			if err != nil {
				return nil, err // a nil *Trainer must not become a non-nil interface
			}
			return t, nil
		},
		NewParallel: func(ctx context.Context, cfg recipe.Config, init []*weights.Tensor, p recipe.Parallel) (compare.Trainer, error) {
			t, err := tfrun.NewParallel(ctx, cfg, init, p)
			if err != nil {
				return nil, err
			}
			return t, nil
		},
		Version:     tfrun.Version,
		CUDADevices: tfrun.CUDADevices,
	})
}
