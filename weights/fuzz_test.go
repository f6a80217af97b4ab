package weights

import (
	"archive/zip"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// Seed corpora live in testdata/fuzz/<FuzzName>/ (made from the fixtures);
// the fixtures themselves are added below too.

func FuzzReadSafetensors(f *testing.F) {
	for _, name := range []string{"tiny_vgg.safetensors", "dtypes.safetensors", "int32.safetensors"} {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		ts, meta, err := DecodeSafetensors(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			if !strings.HasPrefix(err.Error(), "weights: safetensors: ") {
				t.Fatalf("error without prefix: %v", err)
			}
			return
		}
		// Whatever reads must write and read back the same.
		var buf bytes.Buffer
		if err := EncodeSafetensors(&buf, ts, meta); err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		back, meta2, err := DecodeSafetensors(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
		if err != nil {
			t.Fatalf("read back: %v", err)
		}
		if len(back) != len(ts) || len(meta2) != len(meta) {
			t.Fatalf("read back %d tensors %d metadata, want %d %d", len(back), len(meta2), len(ts), len(meta))
		}
		for i := range ts {
			if back[i].Name != ts[i].Name || !slices.Equal(back[i].Shape, ts[i].Shape) || !slices.Equal(bits(back[i].Data), bits(ts[i].Data)) {
				t.Fatalf("tensor %q changed in the round trip", ts[i].Name)
			}
		}
	})
}

// fuzzStorages are the storages of tiny_vgg.pth, served to fuzzed pickles so
// that mutations of its data.pkl reach tensor building.
func fuzzStorages(f *testing.F) (pkl []byte, storages map[string][]byte) {
	zr, err := zip.OpenReader("testdata/tiny_vgg.pth")
	if err != nil {
		f.Fatal(err)
	}
	defer zr.Close()
	storages = map[string][]byte{}
	for _, e := range zr.File {
		rc, err := e.Open()
		if err != nil {
			f.Fatal(err)
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			f.Fatal(err)
		}
		_, rest, _ := strings.Cut(e.Name, "/")
		if key, ok := strings.CutPrefix(rest, "data/"); ok {
			storages[key] = b
		} else if rest == "data.pkl" {
			pkl = b
		}
	}
	return pkl, storages
}

// FuzzReadPth fuzzes the restricted pickle reader. With raw false the input
// is a pickle, wrapped in a torch.save zip that holds tiny_vgg's storages;
// with raw true it is a whole file (zip or legacy format).
func FuzzReadPth(f *testing.F) {
	pkl, storages := fuzzStorages(f)
	f.Add(pkl, false)
	for _, name := range []string{"tiny_vgg.pth", "views.pth", "evil_os_system.pth", "tiny_vgg_legacy.pth"} {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, true)
	}
	f.Fuzz(func(t *testing.T, data []byte, raw bool) {
		file := data
		if !raw {
			file = torchZip(t, data, storages)
		}
		ts, err := DecodePth(bytes.NewReader(file), int64(len(file)))
		if err != nil {
			if !strings.HasPrefix(err.Error(), "weights: pth: ") {
				t.Fatalf("error without prefix: %v", err)
			}
			return
		}
		var total int64
		for _, x := range ts {
			if err := x.check(); err != nil {
				t.Fatalf("bad tensor: %v", err)
			}
			total += 4 * int64(len(x.Data))
		}
		if total > 4*int64(len(file)) {
			t.Fatalf("returned %d bytes of tensors from a %d-byte file", total, len(file))
		}
	})
}
