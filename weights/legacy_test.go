package weights

import (
	"bytes"
	"encoding/binary"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"
)

func TestReadPthLegacyTiny(t *testing.T) {
	// tiny_vgg_legacy.pth is make_pth_fixture.py's tiny_vgg state dict saved by
	// torch 2.11 with _use_new_zipfile_serialization=False
	// (make_weights_fixtures.py); num_batches_tracked (int64) is skipped.
	for _, read := range []func(string) ([]*Tensor, error){ReadPth, Load} {
		ts, err := read("testdata/tiny_vgg_legacy.pth")
		if err != nil {
			t.Fatal(err)
		}
		checkTiny(t, ts)
		for i, want := range tinyTensors {
			if ts[i].Name != want.name {
				t.Errorf("tensor %d: got %s, want %s (state-dict order)", i, ts[i].Name, want.name)
			}
		}
	}
}

// Legacy-file building blocks, as torch 2.11's _legacy_save writes them.
const (
	legacyProto   = "\x80\x02M\xe9\x03." // 1001
	legacySysInfo = "\x80\x02}(X\x10\x00\x00\x00protocol_versionM\xe9\x03X\r\x00\x00\x00little_endian\x88X\n\x00\x00\x00type_sizes}(X\x05\x00\x00\x00shortK\x02X\x03\x00\x00\x00intK\x04X\x04\x00\x00\x00longK\x04uu."
)

// legacyTensorOp (also pTensorOp's body, with view "") is _rebuild_tensor_v2 of the float32 storage key with numel
// elements (each number ≤ 255) and view metadata view ("N" for None, or a
// pickled tuple).
func legacyTensorOp(key string, numel, offset int, size, stride []int, view string) string {
	tup := func(xs []int) string {
		s := "("
		for _, x := range xs {
			s += "K" + string(rune(x))
		}
		return s + "t"
	}
	return pGlobalOp("torch._utils", "_rebuild_tensor_v2") +
		"((" + pStr("storage") + pGlobalOp("torch", "FloatStorage") + pStr(key) + pStr("cpu") + "K" + string(rune(numel)) + view + "tQ" +
		"K" + string(rune(offset)) + tup(size) + tup(stride) + "\x89" +
		pGlobalOp("collections", "OrderedDict") + ")R" + "tR"
}

// legacyKeys pickles a list of storage keys.
func legacyKeys(keys ...string) string {
	s := "\x80\x02]("
	for _, k := range keys {
		s += pStr(k)
	}
	return s + "e."
}

// legacyData is one storage record: the int64 element count, then the bytes.
func legacyData(count uint64, data []byte) string {
	return string(binary.LittleEndian.AppendUint64(nil, count)) + string(data)
}

func legacyFileBytes(parts ...string) []byte {
	return []byte("\x80\x02" + string(legacyMagic) + strings.Join(parts, ""))
}

func TestDecodePthLegacy(t *testing.T) {
	w := legacyTensorOp("k", 4, 0, []int{2, 2}, []int{2, 1}, "N")
	obj := "\x80\x02}(" + pStr("w") + w + "u."
	data := legacyData(4, floats(1, 2, 3, 4))
	ok := func(o string) []byte { return legacyFileBytes(legacyProto, legacySysInfo, o, legacyKeys("k"), data) }
	// A 3 MB string before the state dict: the pickles outgrow the first 1 MiB read.
	long := "\x80\x02}(" + pStr("pad") + pStr(strings.Repeat("x", 3<<20)) + pStr("state_dict") + "}(" + pStr("w") + w + "uu."
	tests := []struct {
		name string
		file []byte
		want string // "" for w = [[1 2] [3 4]]
	}{
		{"state dict", ok(obj), ""},
		{"protocol 4 framed magic", []byte("\x80\x04\x95\x0e\x00\x00\x00\x00\x00\x00\x00" + string(legacyMagic) + legacyProto + legacySysInfo + obj + legacyKeys("k") + data), ""},
		{"PyTorch 0.3 _rebuild_tensor", ok("\x80\x02}(" + pStr("w") + pGlobalOp("torch._utils", "_rebuild_tensor") +
			"((" + pStr("storage") + pGlobalOp("torch", "FloatStorage") + pStr("k") + pStr("cpu") + "K\x04NtQK\x00(K\x02K\x02t(K\x02K\x01ttRu."), ""},
		{"view of a root storage", legacyFileBytes(legacyProto, legacySysInfo,
			"\x80\x02}("+pStr("w")+legacyTensorOp("k", 6, 0, []int{2, 2}, []int{2, 1}, "("+pStr("v")+"K\x01K\x04t")+"u.",
			legacyKeys("k"), legacyData(6, floats(0, 1, 2, 3, 4, 9))), ""},
		{"pickles longer than the first read", ok(long), ""},
		{"saved from a GPU", ok(strings.Replace(obj, "torch\nFloatStorage", "torch.cuda\nFloatStorage", 1)), ""},

		{"wrong protocol version", legacyFileBytes("\x80\x02M\xe8\x03.", legacySysInfo, obj, legacyKeys("k"), data), "protocol version 1000 (int), want 1001"},
		{"sys_info not a dict", legacyFileBytes(legacyProto, "\x80\x02N.", obj, legacyKeys("k"), data), "sys_info is None, want dict"},
		{"keys not a list", legacyFileBytes(legacyProto, legacySysInfo, obj, "\x80\x02N.", data), "storage keys are None, want list"},
		{"key not a string", legacyFileBytes(legacyProto, legacySysInfo, obj, "\x80\x02](K\x01e.", data), "storage key 0 is int"},
		{"zip-style 5-tuple id", ok("\x80\x02}(" + pStr("w") + pTensorOp("k", 4, 0, []int{4}, []int{1}) + "u."), "want a 6-tuple"},
		{"module persistent id", ok("\x80\x02((" + pStr("module") + "NNNNNtQ."), `persistent id of kind "module"`},
		{"forbidden global", ok("\x80\x02" + pGlobalOp("os", "system") + "."), `forbidden global "os.system"`},
		{"listed key unused", legacyFileBytes(legacyProto, legacySysInfo, obj, legacyKeys("k", "z"), data, legacyData(0, nil)), `storage key "z" is listed but no tensor uses it`},
		{"key listed twice", legacyFileBytes(legacyProto, legacySysInfo, obj, legacyKeys("k", "k"), data, data), `storage key "k" is listed twice`},
		{"used key not listed", legacyFileBytes(legacyProto, legacySysInfo, obj, legacyKeys(), data), `storage "k" has no data`},
		{"count differs from the pickle", legacyFileBytes(legacyProto, legacySysInfo, obj, legacyKeys("k"), legacyData(3, floats(1, 2, 3, 4))), `storage "k": 3 elements in the data, 4 in the pickle`},
		{"count larger than the bytes left", legacyFileBytes(legacyProto, legacySysInfo, obj, legacyKeys("k"), legacyData(1<<40, floats(1, 2, 3, 4))), `storage "k": 1099511627776 elements of 4 bytes exceed the 16 bytes left`},
		{"negative count", legacyFileBytes(legacyProto, legacySysInfo, obj, legacyKeys("k"), legacyData(1<<63, floats(1, 2, 3, 4))), `storage "k": 9223372036854775808 elements of 4 bytes exceed`},
		{"pickle size larger than the file", ok("\x80\x02}(" + pStr("w") + strings.Replace(w, "K\x04N", "J\x00\x00\x00\x40N", 1) + "u."), `storage "k": 1073741824 elements of 4 bytes exceed the`},
		{"sizes disagree", ok("\x80\x02}(" + pStr("w") + w + pStr("b") + legacyTensorOp("k", 5, 0, []int{5}, []int{1}, "N") + "u."), `storage "k": declared as FloatStorage of 4 elements and as FloatStorage of 5`},
		{"view past its root", ok("\x80\x02}(" + pStr("w") + legacyTensorOp("k", 4, 0, []int{2}, []int{1}, "("+pStr("v")+"K\x03K\x02t") + "u."), "does not lie in its 4 elements"},
		{"view metadata not a tuple", ok("\x80\x02}(" + pStr("w") + legacyTensorOp("k", 4, 0, []int{2}, []int{1}, "K\x01") + "u."), "view metadata is int"},
		{"tensor past its view", ok("\x80\x02}(" + pStr("w") + legacyTensorOp("k", 4, 1, []int{2}, []int{1}, "("+pStr("v")+"K\x02K\x02t") + "u."), "overrun its storage of 2"},
		{"no count after the keys", legacyFileBytes(legacyProto, legacySysInfo, obj, legacyKeys("k"), "\x04\x00\x00"), `storage "k": the file ends`},
	}
	for _, tt := range tests {
		ts, err := DecodePth(bytes.NewReader(tt.file), int64(len(tt.file)))
		if tt.want == "" {
			// (For the view: elements 1 to 4 of the root [0 1 2 3 4 9].)
			w := Lookup(ts, "w")
			if err != nil || w == nil || !slices.Equal(w.Shape, []int{2, 2}) || !slices.Equal(w.Data, []float32{1, 2, 3, 4}) {
				t.Errorf("%s: got %v, %v; want w = [[1 2] [3 4]]", tt.name, ts, err)
			}
			continue
		}
		if err == nil || !strings.HasPrefix(err.Error(), "weights: pth: legacy format: ") || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: got error %v, want one containing %q", tt.name, err, tt.want)
		}
	}
}

func TestDecodePthLegacyTruncated(t *testing.T) {
	// Every proper prefix of a valid legacy file is refused, never read past
	// its end.
	w := legacyTensorOp("k", 4, 0, []int{4}, []int{1}, "N")
	file := legacyFileBytes(legacyProto, legacySysInfo, "\x80\x02}("+pStr("w")+w+"u.", legacyKeys("k"), legacyData(4, floats(1, 2, 3, 4)))
	if _, err := DecodePth(bytes.NewReader(file), int64(len(file))); err != nil {
		t.Fatalf("whole file: %v", err)
	}
	for n := range len(file) {
		if _, err := DecodePth(bytes.NewReader(file[:n]), int64(n)); err == nil {
			t.Errorf("first %d of %d bytes: got no error", n, len(file))
		}
	}
	// The committed torch file, cut in its data section.
	b, err := os.ReadFile("testdata/tiny_vgg_legacy.pth")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := DecodePth(bytes.NewReader(b[:len(b)-10]), int64(len(b)-10)); err == nil || !strings.Contains(err.Error(), "exceed the") {
		t.Errorf("tiny_vgg_legacy.pth less 10 bytes: got %v, want a storage that exceeds the bytes left", err)
	}
}

func TestDecodePthLegacyAllocations(t *testing.T) {
	// Files that claim 2^30 float32 elements (4 GiB) in a few hundred bytes are
	// refused before anything of that size is allocated.
	w := legacyTensorOp("k", 4, 0, []int{4}, []int{1}, "N")
	big := "J\x00\x00\x00\x40N" // a numel of 2^30 in the persistent id
	files := map[string][]byte{
		"count": legacyFileBytes(legacyProto, legacySysInfo, "\x80\x02}("+pStr("w")+w+"u.", legacyKeys("k"), legacyData(1<<30, floats(1, 2, 3, 4))),
		"numel": legacyFileBytes(legacyProto, legacySysInfo, "\x80\x02}("+pStr("w")+strings.Replace(w, "K\x04N", big, 1)+"u.", legacyKeys("k"), legacyData(1<<30, nil)),
	}
	for name, file := range files {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		_, err := DecodePth(bytes.NewReader(file), int64(len(file)))
		runtime.ReadMemStats(&after)
		if err == nil {
			t.Errorf("%s: got no error", name)
		}
		if got := after.TotalAlloc - before.TotalAlloc; got > 1<<20 {
			t.Errorf("%s: allocated %d bytes for a %d-byte file, want under 1 MiB", name, got, len(file))
		}
	}
}

func TestLegacyMagicEnd(t *testing.T) {
	magic := string(legacyMagic)
	tests := []struct {
		head string
		want int
	}{
		{"\x80\x02" + magic + "\x80\x02", 2 + len(magic)},
		{"\x80\x05\x95\x0e\x00\x00\x00\x00\x00\x00\x00" + magic, 11 + len(magic)},
		{"\x80\x02" + magic[:len(magic)-1], -1},                           // no STOP
		{"\x80\x01" + magic, -1},                                          // protocol 1
		{"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x18.", -1}, // another number
		{"PK\x03\x04", -1},
		{"", -1},
	}
	for _, tt := range tests {
		if got := legacyMagicEnd([]byte(tt.head)); got != tt.want {
			t.Errorf("%q: got %d, want %d", tt.head, got, tt.want)
		}
	}
}
