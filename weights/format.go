package weights

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
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

// RegisterFormat adds f to the formats Load recognises. A format whose Name is
// already registered replaces that entry in its place, so Load tries it in the
// same order: a program can wrap a format another package registered (see
// LookupFormat), as cmd/fwbench runs the Keras reader in a child process. It
// panics on a format without a name, a sniffer or a reader, which is a
// programming error.
func RegisterFormat(f Format) {
	if f.Name == "" || f.Sniff == nil || f.Read == nil {
		panic(fmt.Sprintf("weights: RegisterFormat: incomplete format %+v", f))
	}
	formatsMu.Lock()
	defer formatsMu.Unlock()
	for i := range formats {
		if formats[i].Name == f.Name {
			formats[i] = f
			return
		}
	}
	formats = append(formats, f)
}

// LookupFormat returns the registered format named name, and whether there is one.
func LookupFormat(name string) (Format, bool) {
	formatsMu.RLock()
	defer formatsMu.RUnlock()
	for _, f := range formats {
		if f.Name == name {
			return f, true
		}
	}
	return Format{}, false
}

// registeredFormats returns a copy of the registered formats, in registration order.
func registeredFormats() []Format {
	formatsMu.RLock()
	defer formatsMu.RUnlock()
	return append([]Format(nil), formats...)
}

// sniffLen is how many bytes of a file Load gives each Format's Sniff.
const sniffLen = 64

// The formats of this package, in the order Load lists them.
const (
	FormatSafetensors = "safetensors"
	FormatPthZip      = "torch .pth (zip, PyTorch >= 1.6)"
	FormatPthLegacy   = "torch .pth (legacy, PyTorch < 1.6)"
)

func init() {
	RegisterFormat(Format{Name: FormatSafetensors, Sniff: isSafetensors, Read: func(path string) ([]*Tensor, error) {
		ts, _, err := ReadSafetensors(path)
		return ts, err
	}})
	RegisterFormat(Format{Name: FormatPthZip, Sniff: isZip, Read: ReadPth})
	RegisterFormat(Format{Name: FormatPthLegacy, Sniff: isLegacyPth, Read: ReadPth})
}

// isSafetensors reports whether head starts like a safetensors file: an
// 8-byte little-endian header length of at least 2, then the header's '{'.
func isSafetensors(head []byte) bool {
	return len(head) >= 9 && binary.LittleEndian.Uint64(head) >= 2 && head[8] == '{'
}

// isZip reports whether head starts with a zip local file header, as every
// torch.save zip does.
func isZip(head []byte) bool { return bytes.HasPrefix(head, []byte("PK\x03\x04")) }

// Load reads a weight file in any registered format, chosen by the file's
// first 64 bytes, never by its name: a zip is a torch .pth (PyTorch >= 1.6),
// a pickle of torch's magic number a legacy .pth, an 8-byte header length
// followed by '{' safetensors; then the formats other packages registered
// (see RegisterFormat) are tried in registration order. A file in none of
// them is an error that lists the accepted formats.
//
// When every tensor name starts with "module." (a state dict saved from a
// DataParallel or DistributedDataParallel wrapper), the prefix is removed,
// whatever the format.
func Load(path string) ([]*Tensor, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("weights: %w", err)
	}
	head := make([]byte, sniffLen)
	n, err := io.ReadFull(f, head)
	f.Close()
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
		return nil, fmt.Errorf("weights: %w", err)
	}
	fm, ok := formatOf(head[:n])
	if !ok {
		return nil, fmt.Errorf("weights: %s: unknown weight-file format; accepted: %s", path, strings.Join(formatNames(), ", "))
	}
	ts, err := fm.Read(path)
	if err != nil {
		return nil, err
	}
	stripModulePrefix(ts)
	return ts, nil
}

// formatOf returns the first registered format whose Sniff accepts head.
func formatOf(head []byte) (Format, bool) {
	for _, fm := range registeredFormats() {
		if fm.Sniff(head) {
			return fm, true
		}
	}
	return Format{}, false
}

// formatNames lists the registered formats' names in registration order.
func formatNames() []string {
	var names []string
	for _, fm := range registeredFormats() {
		names = append(names, fm.Name)
	}
	return names
}

// modulePrefix is what torch.nn.DataParallel and DistributedDataParallel put
// before every name of the wrapped module's state dict.
const modulePrefix = "module."

// stripModulePrefix removes modulePrefix from every name when every name has
// it (and something after it); otherwise it leaves ts as it is.
func stripModulePrefix(ts []*Tensor) {
	if len(ts) == 0 {
		return
	}
	for _, t := range ts {
		if t == nil || len(t.Name) <= len(modulePrefix) || !strings.HasPrefix(t.Name, modulePrefix) {
			return
		}
	}
	for _, t := range ts {
		t.Name = t.Name[len(modulePrefix):]
	}
}
