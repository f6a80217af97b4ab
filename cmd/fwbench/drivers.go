package main

import (
	"fmt"
	"strings"

	"github.com/fwbench/fwbench/compare"
	"github.com/fwbench/fwbench/keras"
	"github.com/fwbench/fwbench/model"
	"github.com/fwbench/fwbench/weights"
)

// The frameworks are registered with compare by their own files behind a build tag
// (driver_torch.go: notorch, driver_tf.go: notensorflow), so a binary can be built without
// either native library.

// register registers a framework from an init function: a refusal is a programming error.
func register(f compare.Framework) {
	if err := compare.Register(f); err != nil {
		panic(err)
	}
}

// exportWeights writes trained weights (canonical layout) in the format the file name asks
// for: `.h5` a Keras 3 .weights.h5 for keras.applications.VGG16 plus the same head (see
// kerasExportable), anything else as compare.WriteWeights writes it (`.pth`/`.pt` a
// torch.save zip for torchvision, else safetensors). It is compare.TrainOptions.Export.
func exportWeights(ts []*weights.Tensor, path string) error {
	if strings.HasSuffix(strings.ToLower(path), ".h5") {
		return keras.WriteWeightsH5(path, ts, keras.WriteOptions{})
	}
	return compare.WriteWeights(ts, path)
}

// kerasExportable reports whether keras.WriteWeightsH5 can hold net: a plain VGG, which is
// what keras.applications.VGG16 plus a Keras head is. Decided from the layers, not the
// model's name: only ungrouped convolutions, ReLU and max pooling before the head, and
// Flatten, Linear, ReLU and Dropout in it; no batch norm (Keras' VGG has none), no residual
// add or ReLU6, and no adaptive pool (the torchvision head). This rule lives beside the
// writer's caller because package keras exposes no check of its own.
func kerasExportable(net *model.Net) bool {
	for _, l := range net.Layers {
		switch l.Op {
		case model.Conv:
			if l.Groups > 1 || !l.Bias {
				return false
			}
		case model.ReLU, model.MaxPool, model.Flatten, model.Linear, model.Dropout:
		default:
			return false
		}
	}
	return true
}

// checkpointExports are the files a finished run writes into its checkpoint folder so the
// trained weights leave fwbench for either ecosystem: a torch .pth always, a Keras
// .weights.h5 where Keras can hold the model.
func checkpointExports(net *model.Net) []string {
	exports := []string{"final.pth"}
	if kerasExportable(net) {
		exports = append(exports, "final.weights.h5")
	}
	return exports
}

// specNet builds s's model for checks that do not depend on the class count (2 when the
// data has not said yet).
func specNet(s compare.Spec) (*model.Net, error) {
	c := s.Config
	if c.Classes == 0 {
		c.Classes = 2
	}
	n, err := c.Net()
	if err != nil {
		return nil, fmt.Errorf("fwbench: %w", err)
	}
	return n, nil
}
