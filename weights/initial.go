package weights

import (
	"fmt"
	"slices"
	"strings"

	"github.com/fwbench/fwbench/model"
)

// Provenance says where each initial tensor of a run came from. Every list
// holds tensor names in the model's order (Ignored: in the file's order).
type Provenance struct {
	FromFile []string `json:"from_file,omitempty"`
	// Reinitialised tensors are seeded on purpose: the mode replaces them (a
	// new output layer, a new Keras head), see model.Net.Reinitialised.
	Reinitialised []string `json:"reinitialised,omitempty"`
	// Seeded tensors were seeded because no weights file was given.
	Seeded []string `json:"seeded,omitempty"`
	// Missing and Mismatched tensors were needed from the file but absent, or
	// of another shape; they are seeded instead, which only AllowPartial permits.
	Missing    []string `json:"missing,omitempty"`
	Mismatched []string `json:"mismatched,omitempty"`
	// Unexpected tensors are in the file but not in the model; Ignored ones are
	// in the file under the head's modules ("classifier.", "fc.") where the
	// mode replaces head layers.
	Unexpected []string `json:"unexpected,omitempty"`
	Ignored    []string `json:"ignored,omitempty"`
}

// NotFromFile lists every tensor that did not come from the weights file
// although the model needed it from there: Missing and Mismatched.
func (p Provenance) NotFromFile() []string { return append(slices.Clone(p.Missing), p.Mismatched...) }

// Initial composes a run's initial tensors, in net.Params order, the one way
// every part of fwbench does it. Without loaded (nil) every tensor is seeded
// (InitParams with seed). With loaded, every tensor the model needs comes
// from loaded, except those that mode re-initialises on purpose
// (net.Reinitialised), which are seeded; a missing, mis-shaped or
// unexpected tensor is an error that names each one, unless allowPartial,
// which seeds what is missing or mis-shaped and ignores the rest, and says so
// in the Provenance. Tensors are shared with loaded, not copied.
//
// Seeded values depend only on (seed, tensor name), so the seeded tensors
// here equal those of a full InitParams(net.Params, seed).
func Initial(loaded []*Tensor, net *model.Net, mode string, seed int64, allowPartial bool) ([]*Tensor, Provenance, error) {
	var prov Provenance
	ps := net.Params
	if loaded == nil {
		ts, err := InitParams(ps, seed)
		for _, p := range ps {
			prov.Seeded = append(prov.Seeded, p.Name)
		}
		return ts, prov, err
	}
	byName := make(map[string]*Tensor, len(loaded))
	for _, t := range loaded {
		if t == nil {
			return nil, prov, fmt.Errorf("weights: a nil tensor")
		}
		if _, dup := byName[t.Name]; dup {
			return nil, prov, fmt.Errorf("weights: tensor %s appears twice", t.Name)
		}
		byName[t.Name] = t
	}
	want := make(map[string]bool, len(ps))
	for _, p := range ps {
		want[p.Name] = true
	}
	underHead := func(name string) bool {
		return net.Replaces(mode) && slices.ContainsFunc(net.HeadPrefixes(), func(pre string) bool { return strings.HasPrefix(name, pre) })
	}
	out := make([]*Tensor, len(ps))
	var seed_ []model.Param
	var seedAt []int
	var problems []string
	for i, p := range ps {
		t := byName[p.Name]
		switch {
		case net.Reinitialised(mode, p):
			prov.Reinitialised = append(prov.Reinitialised, p.Name)
		case t == nil:
			prov.Missing = append(prov.Missing, p.Name)
			problems = append(problems, fmt.Sprintf("%s: missing (want shape %v)", p.Name, p.Shape))
		case !slices.Equal(t.Shape, p.Shape) || len(t.Data) != p.NumElements():
			prov.Mismatched = append(prov.Mismatched, p.Name)
			problems = append(problems, fmt.Sprintf("%s: got shape %v, want %v", p.Name, t.Shape, p.Shape))
		default:
			prov.FromFile = append(prov.FromFile, p.Name)
			out[i] = t
			continue
		}
		seed_ = append(seed_, p)
		seedAt = append(seedAt, i)
	}
	var unexpected []string
	for _, t := range loaded {
		switch {
		case want[t.Name]:
		case underHead(t.Name):
			prov.Ignored = append(prov.Ignored, t.Name)
		default:
			prov.Unexpected = append(prov.Unexpected, t.Name)
			unexpected = append(unexpected, fmt.Sprintf("%s: unexpected (not in the model)", t.Name))
		}
	}
	// Unexpected names first: they usually explain the missing ones (a prefix, another model).
	problems = append(unexpected, problems...)
	if len(problems) > 0 && !allowPartial {
		const show = 8
		msg := strings.Join(problems[:min(len(problems), show)], "; ")
		if len(problems) > show {
			msg += fmt.Sprintf("; and %d more", len(problems)-show)
		}
		return nil, prov, fmt.Errorf("weights: %d tensor(s) do not match the model (%d missing, %d of another shape, %d unexpected): %s",
			len(problems), len(prov.Missing), len(prov.Mismatched), len(prov.Unexpected), msg)
	}
	seeded, err := InitParams(seed_, seed)
	if err != nil {
		return nil, prov, err
	}
	for k, i := range seedAt {
		out[i] = seeded[k]
	}
	return out, prov, nil
}
