package weights

import (
	"bytes"
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// tinyValue is the value make_pth_fixture.py puts at flat index i of the k-th
// float tensor of tiny_vgg: k + i/1024 (exact in float32).
func tinyValue(k, i int) float32 { return float32(k) + float32(i)/1024 }

// tinyTensors lists tiny_vgg's float tensors in state-dict order with their
// shapes, from make_pth_fixture.py's module definition.
var tinyTensors = []struct {
	name  string
	shape []int
}{
	{"features.0.weight", []int{4, 3, 3, 3}},
	{"features.0.bias", []int{4}},
	{"features.1.weight", []int{4}},
	{"features.1.bias", []int{4}},
	{"features.1.running_mean", []int{4}},
	{"features.1.running_var", []int{4}},
	{"features.4.weight", []int{8, 4, 3, 3}},
	{"features.4.bias", []int{8}},
	{"classifier.0.weight", []int{6, 8}},
	{"classifier.0.bias", []int{6}},
	{"classifier.3.weight", []int{6, 6}},
	{"classifier.3.bias", []int{6}},
	{"classifier.6.weight", []int{3, 6}},
	{"classifier.6.bias", []int{3}},
}

// checkTiny checks ts against tinyTensors and tinyValue.
func checkTiny(t *testing.T, ts []*Tensor) {
	t.Helper()
	if len(ts) != len(tinyTensors) {
		t.Fatalf("got %d tensors, want %d", len(ts), len(tinyTensors))
	}
	for k, want := range tinyTensors {
		got := Lookup(ts, want.name)
		if got == nil {
			t.Errorf("%s: missing", want.name)
			continue
		}
		if !slices.Equal(got.Shape, want.shape) {
			t.Errorf("%s: got shape %v, want %v", want.name, got.Shape, want.shape)
		}
		if len(got.Data) != got.NumElements() {
			t.Errorf("%s: got %d values, want %d", want.name, len(got.Data), got.NumElements())
			continue
		}
		for i, v := range got.Data {
			if v != tinyValue(k, i) {
				t.Errorf("%s[%d]: got %v, want %v", want.name, i, v, tinyValue(k, i))
				break
			}
		}
	}
}

func TestReadSafetensorsPython(t *testing.T) {
	ts, meta, err := ReadSafetensors("testdata/tiny_vgg.safetensors")
	if err != nil {
		t.Fatal(err)
	}
	checkTiny(t, ts)
	if got, want := meta["source"], "make_pth_fixture.py"; got != want {
		t.Errorf("metadata source: got %q, want %q", got, want)
	}
}

func TestReadSafetensorsDtypes(t *testing.T) {
	ts, _, err := ReadSafetensors("testdata/dtypes.safetensors")
	if err != nil {
		t.Fatal(err)
	}
	negZero := float32(math.Copysign(0, -1))
	// Values are those make_pth_fixture.py writes; float16 65504 is the
	// largest half, 2^-14 the smallest normal, 2^-24 the smallest subnormal.
	// bfloat16(1e30) is bits 0x714a, printed by torch as 1.0002555517425873e+30.
	tests := []struct {
		name  string
		shape []int
		want  []float32
	}{
		{"f32", []int{2, 3}, []float32{1, -2, 0.1, 3.5, 1e-20, negZero}},
		{"f16", []int{5}, []float32{1, -2.5, 65504, 1.0 / (1 << 14), 1.0 / (1 << 24)}},
		{"bf16", []int{4}, []float32{1, -2.5, 3.140625, math.Float32frombits(0x714a0000)}},
		{"f64", []int{2}, []float32{float32(0.1), -7}},
		{"scalar", []int{}, []float32{42}},
		{"empty", []int{0, 3}, []float32{}},
	}
	for _, tt := range tests {
		got := Lookup(ts, tt.name)
		if got == nil {
			t.Errorf("%s: missing", tt.name)
			continue
		}
		if !slices.Equal(got.Shape, tt.shape) {
			t.Errorf("%s: got shape %v, want %v", tt.name, got.Shape, tt.shape)
		}
		if len(got.Data) != len(tt.want) {
			t.Errorf("%s: got %d values, want %d", tt.name, len(got.Data), len(tt.want))
			continue
		}
		for i := range tt.want {
			if math.Float32bits(got.Data[i]) != math.Float32bits(tt.want[i]) {
				t.Errorf("%s[%d]: got %v, want %v", tt.name, i, got.Data[i], tt.want[i])
			}
		}
	}
}

func TestWriteSafetensorsMatchesPython(t *testing.T) {
	// Writing what Python's safetensors wrote (same tensors, one metadata key)
	// gives the very same bytes: same sorted order, same JSON, same padding.
	want, err := os.ReadFile("testdata/tiny_vgg.safetensors")
	if err != nil {
		t.Fatal(err)
	}
	ts, meta, err := ReadSafetensors("testdata/tiny_vgg.safetensors")
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := EncodeSafetensors(&buf, ts, meta); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), want) {
		t.Errorf("got %d bytes, want the %d bytes Python wrote; header got %q", buf.Len(), len(want), headerOf(buf.Bytes()))
	}
}

func headerOf(b []byte) string {
	if len(b) < 8 {
		return ""
	}
	n := binary.LittleEndian.Uint64(b)
	if n > uint64(len(b)-8) {
		return ""
	}
	return string(b[8 : 8+n])
}

func TestSafetensorsRoundTrip(t *testing.T) {
	ts := []*Tensor{
		{Name: "b", Shape: []int{2, 3}, Data: []float32{1, 2, 3, 4, 5, float32(math.Inf(-1))}},
		{Name: "a", Shape: []int{3}, Data: []float32{-0.5, 1e-30, math.MaxFloat32}},
		{Name: "scalar", Shape: nil, Data: []float32{7}},
		{Name: "empty", Shape: []int{0}, Data: []float32{}},
	}
	meta := map[string]string{"framework": "torch", "note": "π ≠ 3"}
	path := filepath.Join(t.TempDir(), "w.safetensors")
	if err := WriteSafetensors(path, ts, meta); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(path)
	if n := binary.LittleEndian.Uint64(raw); (8+n)%8 != 0 {
		t.Errorf("header length %d: data start got %d, want a multiple of 8", n, 8+n)
	}
	got, gotMeta, err := ReadSafetensors(path)
	if err != nil {
		t.Fatal(err)
	}
	// Read back sorted by name.
	wantOrder := []string{"a", "b", "empty", "scalar"}
	for i, g := range got {
		if g.Name != wantOrder[i] {
			t.Errorf("tensor %d: got %s, want %s", i, g.Name, wantOrder[i])
		}
		w := Lookup(ts, g.Name)
		if len(g.Shape) != len(w.Shape) || !slices.Equal(g.Shape, w.Shape) && len(w.Shape) != 0 {
			t.Errorf("%s: got shape %v, want %v", g.Name, g.Shape, w.Shape)
		}
		if !slices.Equal(g.Data, w.Data) {
			t.Errorf("%s: got %v, want %v", g.Name, g.Data, w.Data)
		}
	}
	if len(gotMeta) != 2 || gotMeta["note"] != meta["note"] {
		t.Errorf("metadata: got %v, want %v", gotMeta, meta)
	}
}

func TestWriteSafetensorsErrors(t *testing.T) {
	tests := []struct {
		name string
		ts   []*Tensor
		want string
	}{
		{"duplicate", []*Tensor{{Name: "a", Data: []float32{1}}, {Name: "a", Data: []float32{2}}}, "duplicate"},
		{"shape mismatch", []*Tensor{{Name: "a", Shape: []int{3}, Data: []float32{1}}}, "holds 3 elements but data has 1"},
		{"reserved name", []*Tensor{{Name: "__metadata__", Data: []float32{1}}}, "reserved"},
		{"empty name", []*Tensor{{Shape: []int{1}, Data: []float32{1}}}, "empty name"},
		{"nil", []*Tensor{nil}, "nil tensor"},
	}
	for _, tt := range tests {
		path := filepath.Join(t.TempDir(), "w.safetensors")
		err := WriteSafetensors(path, tt.ts, nil)
		if err == nil || !strings.HasPrefix(err.Error(), "weights: ") || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: got error %v, want one containing %q", tt.name, err, tt.want)
		}
		if _, err := os.Stat(path); err == nil {
			t.Errorf("%s: file written despite the error", tt.name)
		}
	}
}

// stFile assembles a safetensors file from a header and a data buffer.
func stFile(header string, data []byte) []byte {
	b := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
	return append(append(b, header...), data...)
}

func TestReadSafetensorsCorrupt(t *testing.T) {
	eight := make([]byte, 8)
	valid := stFile(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, eight)
	lying := binary.LittleEndian.AppendUint64(nil, 1000) // says 1000, has 2
	lying = append(lying, "{}"...)
	tests := []struct {
		name string
		file []byte
		want string
	}{
		{"empty file", nil, "shorter than the 8-byte header length"},
		{"header longer than file", lying, "header length 1000 exceeds the 2 bytes after it"},
		{"truncated data", valid[:len(valid)-1], "out of the 7-byte data buffer"},
		{"truncated header", valid[:20], "exceeds"},
		{"offsets out of file", stFile(`{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}`, eight), "out of the 8-byte data buffer"},
		{"begin after end", stFile(`{"a":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}}`, eight), "out of"},
		{"overlapping offsets", stFile(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, eight), "overlap"},
		{"unknown dtype", stFile(`{"a":{"dtype":"F7","shape":[2],"data_offsets":[0,8]}}`, eight), `unknown dtype "F7"`},
		{"unsupported dtype", stFile(`{"a":{"dtype":"I32","shape":[2],"data_offsets":[0,8]}}`, eight), "unsupported dtype I32"},
		{"shape/size mismatch", stFile(`{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}`, eight), "needs 12 bytes, data_offsets give 8"},
		{"negative dimension", stFile(`{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}`, eight), "negative dimension"},
		{"huge shape", stFile(`{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}}`, eight), "too large"},
		{"three offsets", stFile(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4,8]}}`, eight), "has 3 values, want 2"},
		{"not an object", stFile(`[1,2]`, nil), "not a JSON object"},
		{"bad JSON", stFile(`{"a":`, nil), "header"},
		{"duplicate key", stFile(`{"a":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},"a":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}`, nil), `duplicate key "a"`},
		{"metadata not strings", stFile(`{"__metadata__":{"k":1}}`, nil), "__metadata__ is not an object of strings"},
		{"garbage after header", stFile(`{}x`, nil), "data after the JSON object"},
		{"empty name", stFile(`{"":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}`, nil), "empty name"},
	}
	for _, tt := range tests {
		_, _, err := DecodeSafetensors(bytes.NewReader(tt.file), int64(len(tt.file)))
		if err == nil || !strings.HasPrefix(err.Error(), "weights: safetensors: ") || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: got error %v, want one containing %q", tt.name, err, tt.want)
		}
	}
	// The Python-written I32 file is refused the same way.
	if _, _, err := ReadSafetensors("testdata/int32.safetensors"); err == nil || !strings.Contains(err.Error(), "unsupported dtype I32") {
		t.Errorf("int32.safetensors: got error %v, want unsupported dtype I32", err)
	}
	// Sanity: the valid base case reads.
	if _, _, err := DecodeSafetensors(bytes.NewReader(valid), int64(len(valid))); err != nil {
		t.Errorf("valid file: %v", err)
	}
}

func TestHalfToFloat32(t *testing.T) {
	// Expected values: IEEE 754 binary16 definitions.
	tests := []struct {
		bits uint16
		want float32
	}{
		{0x3c00, 1},
		{0xc000, -2},
		{0x7bff, 65504},
		{0x0400, 1.0 / (1 << 14)},
		{0x0001, 1.0 / (1 << 24)},
		{0x8001, -1.0 / (1 << 24)},
		{0x03ff, 1023.0 / (1 << 24)},
		{0x7c00, float32(math.Inf(1))},
		{0xfc00, float32(math.Inf(-1))},
		{0x8000, float32(math.Copysign(0, -1))},
	}
	for _, tt := range tests {
		if got := halfToFloat32(tt.bits); math.Float32bits(got) != math.Float32bits(tt.want) {
			t.Errorf("half 0x%04x: got %v, want %v", tt.bits, got, tt.want)
		}
	}
	if got := halfToFloat32(0x7e00); !math.IsNaN(float64(got)) {
		t.Errorf("half 0x7e00: got %v, want NaN", got)
	}
}
