// Package weightfiles holds only tests: the driver-level acceptance of fwbench's
// weight files, the tests that need both frameworks (torchrun on libtorch,
// tfrun on the TensorFlow C API) and the weight-file fixtures of packages
// weights and keras (weights/testdata/vgg16*, keras/testdata/*.h5.gz, made by
// scripts/reference/make_weights_fixtures.py and make_keras_fixtures.py). It
// checks that every file format users have gives, in both drivers, the
// parameters and eval logits that PyTorch and Keras computed from the same
// file, and that one state dict written in every format fwbench writes gives
// the same run. Package keras registers the HDF5 format, so the tests also
// need libhdf5.
//
//	. scripts/env.sh && go test -v ./internal/weightfiles
package weightfiles
