// Package reftest defines fwbench's numerical reference inputs: the weights of
// any model.Net and an input batch given by closed-form formulas, so that a Python reference run
// (scripts/reference/make_fixture.py) and the Go drivers start from bit-identical
// values without exchanging weight files. The fixture that the Python run writes
// (testdata/reference/vgg16_s32.safetensors) holds what PyTorch computed from
// them: logits, loss and updated weights after SGD and Adam steps;
// scripts/reference/make_head_fixture.py does the same for the torchvision and
// Keras heads (testdata/reference/heads_s32.safetensors), and
// scripts/reference/make_model_fixtures.py for ResNet-18/50 and MobileNetV2
// (testdata/reference/models_s32.safetensors), all from WeightsForNet.
//
// # The formula
//
// All integer arithmetic is modulo 2³². For tensor k and element j (the flat,
// row-major index in the tensor's canonical layout):
//
//	h(k, j) = uint32(j·2654435761 + k·40503 + 12345)
//	u(k, j) = float64(h) / 4294967296 − 0.5                 (in [−0.5, 0.5))
//
// Weights: tensor k is the k-th entry of a model.Net's Params (torchvision
// state-dict order), element j is
//
//	conv / linear weight  float32((u·√12)·std),  std = √(2/fan_in)
//	                      (fan_in = the product of the dimensions after the first:
//	                      in/groups·k·k for a convolution, in for a linear layer)
//	conv / linear bias    float32(0.01·u)
//	BatchNorm weight      float32(1 + float64(0.1·u))
//	BatchNorm bias        float32(0.01·u)
//	BatchNorm running_mean float32(0.01·u)
//	BatchNorm running_var float32(1 + float64(0.1·u))
//
// with every product evaluated left to right in float64 and rounded once to float32
// at the end (u·√12 has unit variance, so a weight has standard deviation std: He
// initialisation, which keeps activations of order 1 through 16 layers).
//
// Input: Input(n, S) is an n×S×S×3 NHWC batch whose element j (flat NHWC index)
// is float32(u(1000, j)), and label i is i mod 3.
//
// The package is pure Go and needs no native library.
package reftest

import (
	"fmt"
	"math"

	"github.com/fwbench/fwbench/dataset"
	"github.com/fwbench/fwbench/model"
	"github.com/fwbench/fwbench/weights"
)

// InputTensor is the tensor index k that Input uses in the formula.
const InputTensor = 1000

// InputClasses is the number of classes Input's labels cycle through.
const InputClasses = 3

// U returns u(k, j) of the package formula, in [−0.5, 0.5).
func U(k, j int) float64 {
	h := uint32(uint64(j)*2654435761 + uint64(k)*40503 + 12345)
	return float64(h)/4294967296.0 - 0.5
}

// Weights returns the reference tensors of the model s describes (see
// model.Build), in its Params order. It fails only when model rejects s.
func Weights(s model.Spec) ([]*weights.Tensor, error) {
	n, err := model.Build(s)
	if err != nil {
		return nil, fmt.Errorf("reftest: %w", err)
	}
	return WeightsForNet(n), nil
}

// WeightsForNet returns the reference tensors for n: tensor k is the k-th
// entry of n.Params, with the package formula. The scripts under
// scripts/reference start from these values.
func WeightsForNet(n *model.Net) []*weights.Tensor {
	ps := n.Params
	out := make([]*weights.Tensor, len(ps))
	for k, p := range ps {
		t := &weights.Tensor{Name: p.Name, Shape: append([]int(nil), p.Shape...), Data: make([]float32, p.NumElements())}
		var std float64
		switch p.Kind {
		case model.ConvWeight, model.LinearWeight:
			fanIn := 1
			for _, d := range p.Shape[1:] {
				fanIn *= d
			}
			std = math.Sqrt(2 / float64(fanIn))
		}
		sqrt12 := math.Sqrt(12)
		for j := range t.Data {
			u := U(k, j)
			var v float64
			switch p.Kind {
			case model.ConvWeight, model.LinearWeight:
				v = u * sqrt12 * std
			case model.BNWeight, model.BNVar:
				v = 1 + float64(0.1*u)
			default: // biases, BatchNorm bias and running mean
				v = 0.01 * u
			}
			t.Data[j] = float32(v)
		}
		out[k] = t
	}
	return out
}

// Input returns the reference batch: n images of S×S×3 (NHWC) with element j
// equal to float32(U(InputTensor, j)) and label i equal to i mod InputClasses.
func Input(n, S int) *dataset.Batch {
	b := &dataset.Batch{X: make([]float32, n*S*S*3), Labels: make([]int32, n), N: n, H: S, W: S, C: 3}
	for j := range b.X {
		b.X[j] = float32(U(InputTensor, j))
	}
	for i := range b.Labels {
		b.Labels[i] = int32(i % InputClasses)
	}
	return b
}

// UpdateDiff compares a training update with a reference one, element by element: the
// change got−init against want−init, each element forgiven 2 float32 ulps of want, as a
// fraction of the tensor's largest reference change. It returns the worst fraction and the
// share of elements whose fraction exceeds 1e-4. Updates, not weights, are compared because
// a step changes weights by 1e-3 of their size or less: a weight-relative tolerance would
// hide a wrong update.
func UpdateDiff(got, want, init []float32) (worst, fracOver float64) {
	var m float64
	diff := make([]float64, len(want))
	for i := range want {
		dg := float64(got[i]) - float64(init[i])
		dw := float64(want[i]) - float64(init[i])
		diff[i] = max(0, math.Abs(dg-dw)-2*ulp(want[i]))
		m = max(m, math.Abs(dw))
	}
	if m == 0 {
		m = 1
	}
	over := 0
	for _, d := range diff {
		worst = max(worst, d/m)
		if d/m > 1e-4 {
			over++
		}
	}
	return worst, float64(over) / float64(len(diff))
}

// RelErr is max|got−want| / max|want| over the elements (max|got−want| when want is all
// zeros): the largest difference relative to the tensor's largest reference value.
func RelErr(got, want []float32) float64 {
	var d, m float64
	for i := range want {
		d = max(d, math.Abs(float64(got[i])-float64(want[i])))
		m = max(m, math.Abs(float64(want[i])))
	}
	if m == 0 {
		return d
	}
	return d / m
}

// ulp is the distance from |x| to the next float32 away from zero.
func ulp(x float32) float64 {
	a := math.Abs(float64(x))
	return float64(math.Nextafter32(float32(a), float32(math.Inf(1)))) - a
}
