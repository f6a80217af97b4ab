package weights

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

// testFormat is registered once for the whole test binary (registrations are
// permanent), so that every test sees the same list.
var registerTestFormat = sync.OnceFunc(func() {
	RegisterFormat(Format{
		Name:  "fwbench test format",
		Sniff: func(head []byte) bool { return bytes.HasPrefix(head, []byte("FWBTEST\n")) },
		Read: func(path string) ([]*Tensor, error) {
			return []*Tensor{{Name: "module.test.weight", Shape: []int{1}, Data: []float32{42}}}, nil
		},
	})
})

func TestLoadChoosesByContent(t *testing.T) {
	registerTestFormat()
	dir := t.TempDir()
	tests := []struct {
		src, dst string // a fixture copied under a misleading name
		format   string
	}{
		{"tiny_vgg.pth", "weights.safetensors", FormatPthZip},
		{"tiny_vgg_deflate.pth", "weights", FormatPthZip},
		{"tiny_vgg_legacy.pth", "weights.h5", FormatPthLegacy},
		{"tiny_vgg.safetensors", "weights.pth", FormatSafetensors},
		{"tiny_vgg.safetensors", "model.bin", FormatSafetensors},
	}
	for _, tt := range tests {
		dst := filepath.Join(dir, tt.src+"-"+tt.dst)
		copyFile(t, filepath.Join("testdata", tt.src), dst)
		b, _ := os.ReadFile(dst)
		if fm, _ := formatOf(b[:min(len(b), sniffLen)]); fm.Name != tt.format {
			t.Errorf("%s: format %q, want %q", tt.src, fm.Name, tt.format)
		}
		ts, err := Load(dst)
		if err != nil {
			t.Errorf("%s as %s: %v", tt.src, tt.dst, err)
			continue
		}
		checkTiny(t, ts)
	}
	// A registered format is tried after the built-in ones, and Load strips
	// "module." from its names too.
	path := filepath.Join(dir, "test.safetensors")
	os.WriteFile(path, []byte("FWBTEST\nanything"), 0o644)
	ts, err := Load(path)
	if err != nil || len(ts) != 1 || ts[0].Name != "test.weight" {
		t.Errorf("registered format: got %v, %v; want one tensor test.weight", ts, err)
	}
}

func TestLoadUnknownFormat(t *testing.T) {
	registerTestFormat()
	dir := t.TempDir()
	// The list is the registry's: this package's three formats, then the test's.
	accepted := "accepted: safetensors, torch .pth (zip, PyTorch >= 1.6), torch .pth (legacy, PyTorch < 1.6), fwbench test format"
	hdf5 := "\x89HDF\r\n\x1a\n" + strings.Repeat("\x00", 56) // no HDF5 reader registered in this test binary
	for name, content := range map[string]string{
		"empty.pth":          "",
		"text.safetensors":   "hello, weights\n",
		"model.h5":           hdf5,
		"plain_pickle.pth":   "\x80\x02}q\x00.",                  // pickle.dump of a dict, not torch.save
		"short.safetensors":  "\x02\x00\x00\x00\x00\x00\x00\x00", // a header length, then nothing
		"gzipped.pth.gz":     "\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff",
		"tar_legacy_0.1.pth": "sys_info" + strings.Repeat("\x00", 100), // the pre-0.1.10 tar format
	} {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := Load(path)
		want := "weights: " + path + ": unknown weight-file format; " + accepted
		if err == nil || err.Error() != want {
			t.Errorf("%s: got %v, want %q", name, err, want)
		}
	}
}

func TestLoadStripsModulePrefix(t *testing.T) {
	dir := t.TempDir()
	base := []*Tensor{
		{Name: "features.0.weight", Shape: []int{2}, Data: []float32{1, 2}},
		{Name: "classifier.6.bias", Shape: []int{1}, Data: []float32{3}},
	}
	renamed := func(names ...string) []*Tensor {
		out := make([]*Tensor, len(base))
		for i, t := range base {
			out[i] = t.Clone()
			out[i].Name = names[i]
		}
		return out
	}
	tests := []struct {
		name string
		ts   []*Tensor
		want []string
	}{
		{"all prefixed", renamed("module.features.0.weight", "module.classifier.6.bias"), []string{"features.0.weight", "classifier.6.bias"}},
		{"one not prefixed", renamed("module.features.0.weight", "classifier.6.bias"), []string{"module.features.0.weight", "classifier.6.bias"}},
		{"prefix twice, removed once", renamed("module.module.features.0.weight", "module.classifier.6.bias"), []string{"module.features.0.weight", "classifier.6.bias"}},
		{"prefix elsewhere", renamed("features.module.0.weight", "classifier.6.bias"), []string{"features.module.0.weight", "classifier.6.bias"}},
		{"nothing after the prefix", renamed("module.", "module.x"), []string{"module.", "module.x"}},
	}
	for _, tt := range tests {
		for _, ext := range []string{".pth", ".safetensors"} {
			path := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "_")+ext)
			var err error
			if ext == ".pth" {
				err = WritePth(path, tt.ts)
			} else {
				err = WriteSafetensors(path, tt.ts, nil)
			}
			if err != nil {
				t.Fatal(err)
			}
			ts, err := Load(path)
			if err != nil {
				t.Fatalf("%s%s: %v", tt.name, ext, err)
			}
			var got []string
			for _, x := range ts {
				got = append(got, x.Name)
			}
			// safetensors sorts by name; the .pth keeps the order written.
			want := slices.Clone(tt.want)
			if ext == ".safetensors" {
				slices.Sort(want)
				slices.Sort(got)
			}
			if !slices.Equal(got, want) {
				t.Errorf("%s%s: got %v, want %v", tt.name, ext, got, want)
			}
		}
	}
}

// safetensorsBytes builds a safetensors file of the given tensors, their
// data laid out in order.
func safetensorsBytes(t *testing.T, entries []stEntryData) []byte {
	t.Helper()
	header := map[string]stEntry{}
	var data []byte
	for _, e := range entries {
		header[e.name] = stEntry{Dtype: e.dtype, Shape: e.shape, DataOffsets: []uint64{uint64(len(data)), uint64(len(data) + len(e.data))}}
		data = append(data, e.data...)
	}
	h, err := json.Marshal(header)
	if err != nil {
		t.Fatal(err)
	}
	return append(append(binary.LittleEndian.AppendUint64(nil, uint64(len(h))), h...), data...)
}

type stEntryData struct {
	name, dtype string
	shape       []int64
	data        []byte
}

func TestSafetensorsIntegerBuffers(t *testing.T) {
	w := stEntryData{"features.0.weight", "F32", []int64{2}, floats(1, 2)}
	i64 := binary.LittleEndian.AppendUint64(nil, 7)
	tests := []struct {
		name    string
		entries []stEntryData
		want    string // "" for success with only features.0.weight
	}{
		{"I64 num_batches_tracked skipped", []stEntryData{w, {"features.1.num_batches_tracked", "I64", []int64{}, i64}}, ""},
		{"other I64 tensor", []stEntryData{w, {"features.1.step", "I64", []int64{}, i64}}, `tensor "features.1.step": unsupported dtype I64`},
		{"I32 num_batches_tracked", []stEntryData{w, {"features.1.num_batches_tracked", "I32", []int64{}, i64[:4]}}, `tensor "features.1.num_batches_tracked": unsupported dtype I32`},
		{"a skipped tensor's size is still checked", []stEntryData{w, {"features.1.num_batches_tracked", "I64", []int64{}, nil}}, "needs 8 bytes"},
	}
	for _, tt := range tests {
		b := safetensorsBytes(t, tt.entries)
		ts, _, err := DecodeSafetensors(bytes.NewReader(b), int64(len(b)))
		if tt.want == "" {
			if err != nil || len(ts) != 1 || ts[0].Name != "features.0.weight" || !slices.Equal(ts[0].Data, []float32{1, 2}) {
				t.Errorf("%s: got %v, %v; want features.0.weight = [1 2] only", tt.name, ts, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: got %v, want an error containing %q", tt.name, err, tt.want)
		}
	}
}
