//go:build nohdf5

package keras

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/fwbench/fwbench/internal/reftest"
	"github.com/fwbench/fwbench/model"
)

// TestNoHDF5 checks the nohdf5 build: the pure-Go checks still run, then
// reading and writing fail with ErrNoHDF5.
func TestNoHDF5(t *testing.T) {
	ts, err := reftest.Weights(model.Spec{Name: "vgg11", Head: model.HeadKeras, ImageSize: 32, Classes: 3, Hidden: 4})
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "x.weights.h5")
	if err := WriteWeightsH5(p, ts, WriteOptions{}); !errors.Is(err, ErrNoHDF5) {
		t.Errorf("WriteWeightsH5: got %v, want ErrNoHDF5", err)
	}
	if _, err := Read("nohdf5_test.go"); !errors.Is(err, ErrNoHDF5) {
		t.Errorf("Read: got %v, want ErrNoHDF5", err)
	}
}
