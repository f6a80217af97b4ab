package compare

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/fwbench/fwbench/recipe"
	"github.com/fwbench/fwbench/weights"
)

// Framework is one framework driver as compare sees it. A program that links a driver
// registers it (Register), usually from an init function of a file behind a build tag, so
// that compare itself names no framework: the names in specs, reports and charts are the
// registered ones and the ones the runs report.
type Framework struct {
	// Name is the framework's name in flags, run records and reports ("torch").
	Name string
	// Aliases are other spellings LookupFramework accepts ("pytorch"), case ignored.
	Aliases []string
	// New builds a Trainer for the recipe, from init (net.Params order, canonical layout;
	// nil means seeded by the recipe's seed). It must return cfg.Validate()'s error unchanged
	// for an invalid recipe.
	New func(ctx context.Context, cfg recipe.Config, init []*weights.Tensor) (Trainer, error)
	// NewParallel builds the Trainer of one rank of a data-parallel run, joined to the
	// framework's own process group as p places it (recipe.Parallel); nil when the driver
	// has none.
	NewParallel func(ctx context.Context, cfg recipe.Config, init []*weights.Tensor, p recipe.Parallel) (Trainer, error)
	// Version is the version of the native library the driver loaded.
	Version func() string
	// CUDADevices lists the CUDA devices the framework can use; an error says why it cannot
	// use any.
	CUDADevices func() ([]string, error)
}

var registry = struct {
	sync.RWMutex
	byName map[string]Framework // by Name and by every alias, lower case
	names  []string             // the Names, sorted
}{byName: map[string]Framework{}}

// Register makes a framework known to compare under its Name and Aliases. It fails when a
// name is empty, already taken (by a Name or an alias), or New is nil.
func Register(f Framework) error {
	if f.Name == "" || f.New == nil {
		return errors.New("compare: register: a framework needs a name and a New function")
	}
	registry.Lock()
	defer registry.Unlock()
	keys := append([]string{f.Name}, f.Aliases...)
	for _, k := range keys {
		if k == "" {
			return fmt.Errorf("compare: register %s: an empty alias", f.Name)
		}
		if prev, ok := registry.byName[strings.ToLower(k)]; ok {
			return fmt.Errorf("compare: register %s: the name %q is taken by %s", f.Name, k, prev.Name)
		}
	}
	for _, k := range keys {
		registry.byName[strings.ToLower(k)] = f
	}
	registry.names = append(registry.names, f.Name)
	slices.Sort(registry.names)
	return nil
}

// Frameworks returns the registered frameworks' names, sorted.
func Frameworks() []string {
	registry.RLock()
	defer registry.RUnlock()
	return slices.Clone(registry.names)
}

// LookupFramework finds a registered framework by its name or an alias, case and
// surrounding space ignored.
func LookupFramework(name string) (Framework, bool) {
	registry.RLock()
	defer registry.RUnlock()
	f, ok := registry.byName[strings.ToLower(strings.TrimSpace(name))]
	return f, ok
}

// lookup is LookupFramework with the error every entry point gives for an unknown name
// (it wraps ErrInvalid).
func lookup(name string) (Framework, error) {
	f, ok := LookupFramework(name)
	if !ok {
		known := "none is built in"
		if fws := Frameworks(); len(fws) > 0 {
			known = "want " + strings.Join(fws, " or ")
		}
		return Framework{}, fmt.Errorf("compare: %w: framework %q is not built into this fwbench (%s; build tags leave drivers out)", ErrInvalid, name, known)
	}
	return f, nil
}

// CheckGPU fails with an error wrapping ErrInvalid when the recipe asks for a CUDA device
// and the framework sees none (or cannot use CUDA at all); on the CPU it does nothing.
func CheckGPU(framework, device string) error {
	d, err := recipe.ParseDevice(device)
	if err != nil || !d.GPU {
		return nil // Validate reports a malformed device
	}
	f, err := lookup(framework)
	if err != nil {
		return err
	}
	if f.CUDADevices == nil {
		return fmt.Errorf("compare: %w: --device %s asked for a GPU, but %s cannot use one: it reports no CUDA devices", ErrInvalid, device, f.Name)
	}
	devs, err := f.CUDADevices()
	if err == nil && len(devs) == 0 {
		err = errors.New("no CUDA device is visible")
	}
	if err != nil {
		return fmt.Errorf("compare: %w: --device %s asked for a GPU, but %s cannot use one: %v", ErrInvalid, device, f.Name, err)
	}
	return nil
}
