// Package model owns the description of every network fwbench trains, the one
// that both drivers interpret: a small graph of layers (convolution with
// stride, padding and groups, batch norm, ReLU and ReLU6, max and adaptive
// average pooling, residual add, flatten, linear, dropout), torchvision's
// parameter names and shapes in state-dict order, the heads and training modes
// of the study, and analytic FLOP counts.
//
// A model is one entry of a table (see Names): VGG-11/13/16/19 with and
// without batch normalisation, ResNet-18 and ResNet-50 (torchvision's v1.5,
// stride on the 3×3 convolution) and MobileNetV2. Build turns an entry, a
// head, an image size and a class count into a Net. torchrun and tfrun walk
// Net.Layers with one generic builder each and hold no per-model code, so a
// new model is one entry here plus its fixtures.
//
// The package is pure Go, imports only the standard library and needs no
// native library. It describes the model; it does not hold weights (package
// weights makes the seeded initial values from Net.Params).
package model
