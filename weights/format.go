package weights

import (
	"fmt"
	"sync"
)

// Format is a weight-file format that Load recognises by the first bytes of a
// file. Package weights registers safetensors and torch's .pth formats itself;
// a package that needs a native library (the Keras HDF5 reader, for one)
// registers its format from its init function, so that weights stays pure Go.
type Format struct {
	Name  string                 // shown in messages, e.g. "Keras HDF5 (.h5, .weights.h5)"
	Sniff func(head []byte) bool // reports whether a file starting with head is in this format; head holds up to 64 bytes
	Read  func(path string) ([]*Tensor, error)
}

var (
	formatsMu sync.RWMutex
	formats   []Format
)

// RegisterFormat adds f to the formats Load recognises. It panics on a format
// without a name, a sniffer or a reader, which is a programming error.
func RegisterFormat(f Format) {
	if f.Name == "" || f.Sniff == nil || f.Read == nil {
		panic(fmt.Sprintf("weights: RegisterFormat: incomplete format %+v", f))
	}
	formatsMu.Lock()
	defer formatsMu.Unlock()
	formats = append(formats, f)
}

// registeredFormats returns a copy of the registered formats, in registration order.
func registeredFormats() []Format {
	formatsMu.RLock()
	defer formatsMu.RUnlock()
	return append([]Format(nil), formats...)
}
