package weights

import (
	"archive/zip"
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestReadPthTorch(t *testing.T) {
	// tiny_vgg.pth is torch.save(state_dict) by torch 2.11; the DEFLATE copy
	// is the same zip re-compressed; wrapped.pth holds {"epoch": 3,
	// "state_dict": ...}. num_batches_tracked (int64) is skipped.
	for _, f := range []string{"tiny_vgg.pth", "tiny_vgg_deflate.pth", "wrapped.pth"} {
		t.Run(f, func(t *testing.T) {
			ts, err := ReadPth(filepath.Join("testdata", f))
			if err != nil {
				t.Fatal(err)
			}
			checkTiny(t, ts)
			// State-dict order is kept.
			for i, want := range tinyTensors {
				if ts[i].Name != want.name {
					t.Errorf("tensor %d: got %s, want %s", i, ts[i].Name, want.name)
				}
			}
		})
	}
}

func TestReadPthMatchesSafetensors(t *testing.T) {
	// The same tensors, saved by torch.save and by Python safetensors, read
	// identically.
	pth, err := Load("testdata/tiny_vgg.pth")
	if err != nil {
		t.Fatal(err)
	}
	st, err := Load("testdata/tiny_vgg.safetensors")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range st {
		p := Lookup(pth, s.Name)
		if p == nil || !slices.Equal(p.Shape, s.Shape) || !slices.Equal(p.Data, s.Data) {
			t.Errorf("%s: pth and safetensors differ", s.Name)
		}
	}
}

func TestReadPthViews(t *testing.T) {
	// views.pth (make_pth_fixture.py): views of base = arange(24).reshape(4, 6)
	// at storage offsets 6 and 12, a saved nn.Parameter, and float16,
	// bfloat16, float64 tensors converted to float32.
	ts, err := ReadPth("testdata/views.pth")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		shape []int
		want  []float32
	}{
		{"features.0.bias", []int{6}, []float32{6, 7, 8, 9, 10, 11}},
		{"features.0.weight", []int{2, 6}, []float32{12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23}},
		{"classifier.0.weight", []int{2, 2}, []float32{0.5, -1.5, 2.25, 3}},
		{"half", []int{4}, []float32{1, -2.5, 65504, 1.0 / (1 << 14)}},
		{"bf16", []int{3}, []float32{1, -2.5, 3.140625}},
		{"f64", []int{2}, []float32{float32(0.1), -7}},
	}
	for _, tt := range tests {
		got := Lookup(ts, tt.name)
		if got == nil {
			t.Errorf("%s: missing", tt.name)
			continue
		}
		if !slices.Equal(got.Shape, tt.shape) || !slices.Equal(got.Data, tt.want) {
			t.Errorf("%s: got %v %v, want %v %v", tt.name, got.Shape, got.Data, tt.shape, tt.want)
		}
	}
}

// markerName is the file each evil fixture's payload would create in the
// working directory (make_pth_fixture.py checks that Python's unpickler does).
const markerName = "fwbench_pwned"

func TestReadPthRefusesGlobals(t *testing.T) {
	td, err := filepath.Abs("testdata")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	t.Chdir(dir) // where the payloads would create the marker
	tests := []struct {
		file   string
		global string
	}{
		{"evil_os_system.pth", "os.system"},
		{"evil_posix_system.pth", "posix.system"},
		{"evil_builtins_eval.pth", "builtins.eval"},
		{"evil_builtin_exec.pth", "__builtin__.exec"},
		{"evil_subprocess_popen.pth", "subprocess.Popen"},
		{"evil_stack_global.pth", "os.system"},
	}
	wd, _ := os.Getwd()
	for _, tt := range tests {
		_, err := ReadPth(filepath.Join(td, tt.file))
		want := `forbidden global "` + tt.global + `"`
		if err == nil || !strings.HasPrefix(err.Error(), "weights: pth: ") || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got error %v, want one containing %s", tt.file, err, want)
		}
		var fg *ForbiddenGlobalError
		if !errors.As(err, &fg) || fg.Module+"."+fg.Name != tt.global {
			t.Errorf("%s: got %v, want a *ForbiddenGlobalError for %s", tt.file, err, tt.global)
		}
		if _, err := os.Stat(filepath.Join(wd, markerName)); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s: marker file exists: the payload ran", tt.file)
		}
	}
}

func TestReadPthMalformed(t *testing.T) {
	tests := []struct {
		file string
		want string
	}{
		{"bad_truncated.pth", "truncated pickle"},
		{"bad_opcode.pth", "unknown pickle opcode 0xff"},
		{"bad_storage.pth", `storage "0": 108 elements of 4 bytes exceed its 8-byte entry`},
		{"noncontig.pth", "not contiguous"},
		{"int32.pth", "unsupported dtype int32"},
	}
	for _, tt := range tests {
		_, err := ReadPth(filepath.Join("testdata", tt.file))
		if err == nil || !strings.HasPrefix(err.Error(), "weights: pth: ") || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: got error %v, want one containing %q", tt.file, err, tt.want)
		}
	}
}

// torchZip wraps a pickle in torch.save's zip layout.
func torchZip(t testing.TB, pkl []byte, storages map[string][]byte) []byte {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	put := func(name string, b []byte) {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: "archive/" + name, Method: zip.Store})
		if err != nil {
			t.Fatal(err)
		}
		w.Write(b)
	}
	put("data.pkl", pkl)
	put("byteorder", []byte("little"))
	for k, b := range storages {
		put("data/"+k, b)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// Pickle building blocks (protocol 2), as torch.save writes them.
func pGlobalOp(m, n string) string { return "c" + m + "\n" + n + "\n" }
func pStr(s string) string {
	return "X" + string(binary.LittleEndian.AppendUint32(nil, uint32(len(s)))) + s
}

// pTensorOp is _rebuild_tensor_v2 of a float32 storage key with numel
// elements, at offset, with the given size and stride (each ≤ 255), as the zip
// format pickles it: a persistent id without view metadata.
func pTensorOp(key string, numel, offset int, size, stride []int) string {
	return legacyTensorOp(key, numel, offset, size, stride, "")
}

func floats(xs ...float32) []byte {
	var b []byte
	for _, x := range xs {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(x))
	}
	return b
}

func TestDecodePthPickles(t *testing.T) {
	store := map[string][]byte{"0": floats(1, 2, 3, 4)}
	tensor := pTensorOp("0", 4, 0, []int{2, 2}, []int{2, 1})
	ok := "\x80\x02}(" + pStr("w") + tensor + "u."
	tests := []struct {
		name string
		pkl  string
		want string // "" for success
	}{
		{"plain dict", ok, ""},
		{"ordered dict with BUILD", "\x80\x02" + pGlobalOp("collections", "OrderedDict") + ")R(" + pStr("w") + tensor + "u}b.", ""},
		{"memo and frame", "\x80\x04\x95\x00\x00\x00\x00\x00\x00\x00\x00}\x94(" + pStr("w") + tensor + "u.", ""},
		{"REDUCE on a storage class", "\x80\x02}(" + pStr("w") + pGlobalOp("torch", "FloatStorage") + ")Ru.", "cannot be called"},
		{"BUILD on a tensor", "\x80\x02}(" + pStr("w") + tensor + "}bu.", "BUILD on tensor"},
		{"memo key not set", "\x80\x02h\x05.", "memo key 5 not set"},
		{"stack underflow", "\x80\x02t.", "no MARK"},
		{"pop past mark", "\x80\x02N(0.", "stack underflow"},
		{"string longer than pickle", "\x80\x02X\xff\xff\xff\x7f.", "truncated pickle"},
		{"bytes8 longer than pickle", "\x80\x02\x8e\xff\xff\xff\xff\xff\xff\xff\xff.", "truncated pickle"},
		{"frame longer than pickle", "\x80\x04\x95\x00\x00\x00\x00\x00\x00\x01\x00.", "truncated pickle"},
		{"no STOP", "\x80\x02}", "no STOP"},
		{"protocol 0 opcode", "\x80\x02I1\n.", "unsupported or unknown pickle opcode 0x49"},
		{"INST", "\x80\x02(ios\nsystem\n.", "unsupported or unknown pickle opcode 0x69"},
		{"NEWOBJ", "\x80\x02" + pGlobalOp("collections", "OrderedDict") + ")\x81.", "opcode 0x81"},
		{"bad protocol", "\x80\x09.", "unsupported pickle protocol 9"},
		{"not a dict", "\x80\x02N.", "pickle holds None"},
		{"dict of ints", "\x80\x02}(" + pStr("w") + "K\x01u.", "not a state dict"},
		{"tuple key", "\x80\x02}()K\x01u.", "dict key of type tuple"},
		{"missing storage", "\x80\x02}(" + pStr("w") + pTensorOp("9", 4, 0, []int{4}, []int{1}) + "u.", "no data/9 entry"},
		{"storage larger than entry", "\x80\x02}(" + pStr("w") + pTensorOp("0", 5, 0, []int{5}, []int{1}) + "u.", "exceed its 16-byte entry"},
		{"view past storage", "\x80\x02}(" + pStr("w") + pTensorOp("0", 4, 2, []int{3}, []int{1}) + "u.", "overrun its storage"},
		{"transposed", "\x80\x02}(" + pStr("w") + pTensorOp("0", 4, 0, []int{2, 2}, []int{1, 2}) + "u.", "not contiguous"},
		{"persistent id not a tuple", "\x80\x02}(" + pStr("w") + "NQu.", "persistent id is None"},
		{"forbidden in persistent id", "\x80\x02((" + pStr("storage") + pGlobalOp("os", "system") + "tQ.", `forbidden global "os.system"`},
		{"forbidden via STACK_GLOBAL", "\x80\x04\x8c\x08builtins\x8c\x04eval\x93.", `forbidden global "builtins.eval"`},
		{"torch.load is forbidden", "\x80\x02" + pGlobalOp("torch", "load") + ".", `forbidden global "torch.load"`},
		{"model class is forbidden", "\x80\x02" + pGlobalOp("torchvision.models.vgg", "VGG") + ".", `forbidden global "torchvision.models.vgg.VGG"`},
		{"GLOBAL without newline", "\x80\x02cos\nsys", "truncated pickle"},
		{"long too large", "\x80\x02\x8a\x09\x01\x02\x03\x04\x05\x06\x07\x08\x09.", "does not fit in int64"},
		{"invalid UTF-8", "\x80\x02\x8c\x01\xff.", "not valid UTF-8"},
	}
	for _, tt := range tests {
		b := torchZip(t, []byte(tt.pkl), store)
		ts, err := DecodePth(bytes.NewReader(b), int64(len(b)))
		if tt.want == "" {
			if err != nil {
				t.Errorf("%s: %v", tt.name, err)
			} else if w := Lookup(ts, "w"); w == nil || !slices.Equal(w.Data, []float32{1, 2, 3, 4}) || !slices.Equal(w.Shape, []int{2, 2}) {
				t.Errorf("%s: got %v, want w = [[1 2] [3 4]]", tt.name, ts)
			}
			continue
		}
		if err == nil || !strings.HasPrefix(err.Error(), "weights: pth: ") || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: got error %v, want one containing %q", tt.name, err, tt.want)
		}
	}
}

func TestDecodePthContainer(t *testing.T) {
	tests := []struct {
		name string
		file []byte
		want string
	}{
		{"empty", nil, "not a torch.save zip"},
		{"legacy magic only", append([]byte{0x80, 2}, legacyMagic...), "legacy format: protocol version pickle: truncated pickle"},
		{"pickle without the legacy magic", []byte("\x80\x02\x8a\x0alw\xf9"), "not a torch.save zip"},
		{"zip without data.pkl", func() []byte {
			var buf bytes.Buffer
			zw := zip.NewWriter(&buf)
			w, _ := zw.Create("x/other")
			w.Write([]byte("hi"))
			zw.Close()
			return buf.Bytes()
		}(), "no <archive>/data.pkl"},
	}
	for _, tt := range tests {
		_, err := DecodePth(bytes.NewReader(tt.file), int64(len(tt.file)))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: got error %v, want one containing %q", tt.name, err, tt.want)
		}
	}
}

func TestDecodePthBigEndian(t *testing.T) {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, e := range []struct{ name, data string }{
		{"archive/data.pkl", "\x80\x02}(" + pStr("w") + pTensorOp("0", 2, 0, []int{2}, []int{1}) + "u."},
		{"archive/byteorder", "big"},
		{"archive/data/0", "\x3f\x80\x00\x00\xc0\x20\x00\x00"}, // 1, -2.5 big-endian
	} {
		w, _ := zw.Create(e.name)
		w.Write([]byte(e.data))
	}
	zw.Close()
	ts, err := DecodePth(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := ts[0].Data, []float32{1, -2.5}; !slices.Equal(got, want) {
		t.Errorf("got %v, want %v (IEEE 754 big-endian bytes)", got, want)
	}
}
