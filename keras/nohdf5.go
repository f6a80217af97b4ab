//go:build nohdf5

package keras

import "github.com/fwbench/fwbench/weights"

// With the nohdf5 tag the package links no HDF5: Read and WriteWeightsH5 fail
// with ErrNoHDF5 and the format is not registered with package weights.

func readFile(string) ([]*weights.Tensor, error) { return nil, ErrNoHDF5 }

func encode(*kmodel) ([]byte, error) { return nil, ErrNoHDF5 }
