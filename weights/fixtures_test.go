package weights

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/fwbench/fwbench/internal/testfixture"
	"github.com/fwbench/fwbench/model"
)

var update = flag.Bool("update", false, "rewrite testdata/"+goldenPth+".gz.gz with WritePth's output "+
	"(then check it with scripts/reference/make_weights_fixtures.py --check-golden)")

// goldenPth is the WritePth output that make_weights_fixtures.py checked with torch.
const goldenPth = "vgg16_bn_go.pth"

// fixtureMeta is testdata/vgg16_fixtures.json, written by
// scripts/reference/make_weights_fixtures.py with torch 2.11.
type fixtureMeta struct {
	TorchVersion string `json:"torch_version"`
	Models       map[string]struct {
		FloatTensors    int    `json:"float_tensors"`
		CanonicalSHA256 string `json:"canonical_sha256"`
		Logits          string `json:"logits"`
	} `json:"models"`
	Fixtures map[string]struct {
		Model           string   `json:"model"`
		Format          string   `json:"format"`
		Tensors         int      `json:"tensors"`
		CanonicalSHA256 string   `json:"canonical_sha256"`
		Missing         []string `json:"missing"`
	} `json:"fixtures"`
	Golden struct {
		File   string `json:"file"`
		Bytes  int64  `json:"bytes"`
		SHA256 string `json:"sha256"`
		Check  string `json:"check"`
	} `json:"golden"`
}

func readFixtureMeta(t testing.TB) fixtureMeta {
	t.Helper()
	b, err := os.ReadFile("testdata/vgg16_fixtures.json")
	if err != nil {
		t.Fatal(err)
	}
	var m fixtureMeta
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// torchvisionParams returns the tensors of make_weights_fixtures.py's models:
// torchvision VGG (AdaptiveAvgPool2d((7, 7)) head), hidden 16, 1000 classes.
func torchvisionParams(t testing.TB, name string) []model.Param {
	t.Helper()
	return build(t, model.Spec{Name: name, Head: model.HeadTorchvision, ImageSize: 32, Classes: 1000, Hidden: 16}).Params
}

func TestTorchvisionFixtures(t *testing.T) {
	meta := readFixtureMeta(t)
	ps16, ps16bn := torchvisionParams(t, "vgg16"), torchvisionParams(t, "vgg16_bn")
	// vgg16 has 13 convolutions and 3 linear layers, a weight and a bias each:
	// 32 tensors. vgg16_bn adds 13 BatchNorms of 4 float tensors (weight, bias,
	// running_mean, running_var; num_batches_tracked is skipped): 84.
	tests := []struct {
		file    string // in testdata, without .gz.gz
		format  string
		model   string
		params  []model.Param // nil for the partial file
		ordered bool          // the reader keeps state-dict order (pth); safetensors sorts by name
		want    int           // tensors Load returns
		rawName string        // the first name as ReadPth returns it, before Load strips "module."
	}{
		{"vgg16.pth", FormatPthZip, "vgg16", ps16, true, 32, "features.0.weight"},
		{"vgg16_legacy.pth", FormatPthLegacy, "vgg16", ps16, true, 32, "features.0.weight"},
		{"vgg16_module.pth", FormatPthZip, "vgg16", ps16, true, 32, "module.features.0.weight"},
		{"vgg16_checkpoint.pth", FormatPthZip, "vgg16", ps16, true, 32, "features.0.weight"},
		{"vgg16_bn.pth", FormatPthZip, "vgg16_bn", ps16bn, true, 84, "features.0.weight"},
		{"vgg16_bn_legacy.pth", FormatPthLegacy, "vgg16_bn", ps16bn, true, 84, "features.0.weight"},
		{"vgg16_bn.safetensors", FormatSafetensors, "vgg16_bn", ps16bn, false, 84, ""},
		// 26 base tensors less the 16 of features.12 to features.28, and the 6 classifier tensors.
		{"vgg16_partial.safetensors", FormatSafetensors, "vgg16", nil, false, 26 - 16 + 6, ""},
		{goldenPth, FormatPthZip, "vgg16_bn", ps16bn, true, 84, "features.0.weight"},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			path := testfixture.Path(t, "testdata/"+tt.file+".gz.gz")
			head := make([]byte, sniffLen)
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			n, _ := io.ReadFull(f, head)
			f.Close()
			if fm, _ := formatOf(head[:n]); fm.Name != tt.format {
				t.Errorf("format: got %q, want %q", fm.Name, tt.format)
			}
			ts, err := Load(path)
			if err != nil {
				t.Fatal(err)
			}
			if len(ts) != tt.want {
				t.Errorf("got %d tensors, want %d", len(ts), tt.want)
			}
			// Python's CanonicalSHA256 of the state dict make_weights_fixtures.py saved.
			want := meta.Models[tt.model].CanonicalSHA256
			if tt.params == nil {
				want = meta.Fixtures[tt.file+".gz.gz"].CanonicalSHA256
			} else if fx, ok := meta.Fixtures[tt.file+".gz.gz"]; ok && fx.CanonicalSHA256 != want {
				t.Errorf("vgg16_fixtures.json: the fixture's hash %s differs from its model's %s", fx.CanonicalSHA256, want)
			}
			if got := CanonicalSHA256(ts); want == "" || got != want {
				t.Errorf("CanonicalSHA256: got %s, want %s (Python, vgg16_fixtures.json)", got, want)
			}
			if tt.params != nil {
				if err := CheckShapes(ts, tt.params, false); err != nil {
					t.Error(err)
				}
				if tt.ordered {
					for i := range min(len(ts), len(tt.params)) {
						if ts[i].Name != tt.params[i].Name {
							t.Errorf("tensor %d: got %s, want %s (state-dict order)", i, ts[i].Name, tt.params[i].Name)
							break
						}
					}
				}
			} else {
				missing := meta.Fixtures[tt.file+".gz.gz"].Missing
				if len(missing) != 16 {
					t.Errorf("vgg16_fixtures.json lists %d missing tensors, want 16", len(missing))
				}
				for _, name := range missing {
					if Lookup(ts, name) != nil {
						t.Errorf("%s: present, want missing", name)
					}
				}
				if err := CheckShapes(ts, ps16, false); err == nil || !strings.Contains(err.Error(), "16 tensor(s) do not match") {
					t.Errorf("CheckShapes: got %v, want 16 missing tensors", err)
				}
			}
			if tt.rawName != "" {
				raw, err := ReadPth(path)
				if err != nil {
					t.Fatal(err)
				}
				if raw[0].Name != tt.rawName {
					t.Errorf("ReadPth: first name %q, want %q", raw[0].Name, tt.rawName)
				}
			}
		})
	}
}

func TestTorchvisionLogitsSidecar(t *testing.T) {
	// The eval-mode logits that the driver tests compare with: [4, 1000] per model.
	meta := readFixtureMeta(t)
	ts, md, err := ReadSafetensors("testdata/vgg16_tv_logits.safetensors")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"vgg16", "vgg16_bn"} {
		if got, want := meta.Models[name].Logits, "vgg16_tv_logits.safetensors:"+name; got != want {
			t.Errorf("%s: vgg16_fixtures.json names logits %q, want %q", name, got, want)
		}
		l := Lookup(ts, name)
		if l == nil || !slices.Equal(l.Shape, []int{4, 1000}) {
			t.Errorf("%s: got %v, want logits of shape [4 1000]", name, l)
		}
	}
	if !strings.HasPrefix(md["torch_version"], "2.11.0") {
		t.Errorf("torch_version: got %q, want 2.11.0", md["torch_version"])
	}
}

func TestWritePthGolden(t *testing.T) {
	// WritePth must keep writing the very bytes that make_weights_fixtures.py
	// checked with torch (torch.load(weights_only=True), strict
	// load_state_dict, equal logits). If a change to the writer is intended,
	// re-make the file with -update and check it again with the script.
	ts, err := ReadPth(testfixture.Path(t, "testdata/vgg16_bn.pth.gz.gz"))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), goldenPth)
	if err := WritePth(path, ts); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := EncodePth(&buf, ts); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), got) {
		t.Errorf("EncodePth and WritePth wrote different bytes")
	}
	if *update {
		gz := func(b []byte) []byte {
			var buf bytes.Buffer
			zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
			zw.Write(b)
			if err := zw.Close(); err != nil {
				t.Fatal(err)
			}
			return buf.Bytes()
		}
		outer := gz(gz(got))
		if err := os.WriteFile(filepath.Join("testdata", goldenPth+".gz.gz"), outer, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote testdata/%s.gz.gz (%d bytes, %d decompressed); now run make_weights_fixtures.py --check-golden", goldenPth, len(outer), len(got))
		return
	}
	want, err := os.ReadFile(testfixture.Path(t, "testdata/"+goldenPth+".gz.gz"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("WritePth wrote %d bytes that differ from the %d of testdata/%s.gz.gz, which torch checked; "+
			"re-make it with -update and re-check it with scripts/reference/make_weights_fixtures.py --check-golden",
			len(got), len(want), goldenPth)
	}
	sum := sha256.Sum256(want)
	meta := readFixtureMeta(t)
	if h := hex.EncodeToString(sum[:]); h != meta.Golden.SHA256 || !strings.Contains(meta.Golden.Check, "load_state_dict(strict=True) ok") {
		t.Errorf("vgg16_fixtures.json: golden sha256 %s and check %q, want sha256 %s and a passed check (re-run the script with --check-golden)",
			meta.Golden.SHA256, meta.Golden.Check, h)
	}
}
