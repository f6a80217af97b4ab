package dataset

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeTree writes files (slash paths relative to dir) and returns dir.
func writeTree(t testing.TB, files map[string][]byte) string {
	t.Helper()
	dir := t.TempDir()
	for name, data := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// smallPNGs returns n distinct 8×8 PNGs named prefix/<i>.png.
func smallPNGs(prefix string, class, n int, files map[string][]byte) map[string][]byte {
	if files == nil {
		files = map[string][]byte{}
	}
	for i := 0; i < n; i++ {
		files[prefix+"/"+string(rune('a'+i/26))+string(rune('a'+i%26))+".png"] = encPNG(SynthImage(class, i, 8, 1))
	}
	return files
}

func TestOpenFolderSplit(t *testing.T) {
	files := smallPNGs("cat", 0, 10, nil)
	smallPNGs("lion", 1, 10, files)
	smallPNGs("tiger", 2, 5, files)
	files["tiger/.DS_Store"] = []byte("junk") // hidden: ignored silently
	dir := writeTree(t, files)

	tests := []struct {
		valSplit         float64
		wantTrain        []int // per class
		wantVal          []int
		wantSkippedCount int
	}{
		// round(0.2*10) = 2, round(0.2*5) = 1.
		{0, []int{8, 8, 4}, []int{2, 2, 1}, 0},
		// round(0.5*5) = round(2.5) = 3 (half away from zero).
		{0.5, []int{5, 5, 2}, []int{5, 5, 3}, 0},
		{-1, []int{10, 10, 5}, []int{0, 0, 0}, 0},
		// 0.99*10 rounds to 10, capped so one image stays in training.
		{0.99, []int{1, 1, 1}, []int{9, 9, 4}, 0},
	}
	for _, tc := range tests {
		d, err := Open(context.Background(), dir, OpenOptions{ValSplit: tc.valSplit, Seed: 3})
		if err != nil {
			t.Fatalf("split %v: %v", tc.valSplit, err)
		}
		if got := strings.Join(d.Classes(), ","); got != "cat,lion,tiger" {
			t.Errorf("got classes %s, want cat,lion,tiger", got)
		}
		if d.Layout() != LayoutFolder {
			t.Errorf("got layout %s, want %s", d.Layout(), LayoutFolder)
		}
		if got := d.Train().Counts(); !equalInts(got, tc.wantTrain) {
			t.Errorf("split %v: got train counts %v, want %v", tc.valSplit, got, tc.wantTrain)
		}
		if got := d.Val().Counts(); !equalInts(got, tc.wantVal) {
			t.Errorf("split %v: got val counts %v, want %v", tc.valSplit, got, tc.wantVal)
		}
		if d.Test().Len() != 0 {
			t.Errorf("got test len %d, want 0", d.Test().Len())
		}
		if len(d.Skipped()) != tc.wantSkippedCount {
			t.Errorf("got skipped %v, want %d", d.Skipped(), tc.wantSkippedCount)
		}
	}

	// The split depends on the seed only.
	valPaths := func(seed int64) string {
		d, err := Open(context.Background(), dir, OpenOptions{Seed: seed})
		if err != nil {
			t.Fatal(err)
		}
		var ps []string
		for i := 0; i < d.Val().Len(); i++ {
			ps = append(ps, d.Val().Path(i))
		}
		return strings.Join(ps, "|")
	}
	if a, b := valPaths(1), valPaths(1); a != b {
		t.Errorf("same seed: got different splits %s and %s", a, b)
	}
	if a, b := valPaths(1), valPaths(2); a == b {
		t.Errorf("seeds 1 and 2: got the same split %s", a)
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestOpenPreSplit(t *testing.T) {
	files := smallPNGs("train/a", 0, 4, nil)
	smallPNGs("train/b", 1, 3, files)
	smallPNGs("validation/a", 0, 2, files)
	smallPNGs("validation/b", 1, 1, files)
	smallPNGs("test/b", 1, 2, files) // a class may be missing from test
	dir := writeTree(t, files)
	d, err := Open(context.Background(), dir, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if d.Layout() != LayoutPreSplit {
		t.Errorf("got layout %s, want %s", d.Layout(), LayoutPreSplit)
	}
	for _, c := range []struct {
		s    *Subset
		want []int
	}{{d.Train(), []int{4, 3}}, {d.Val(), []int{2, 1}}, {d.Test(), []int{0, 2}}} {
		if got := c.s.Counts(); !equalInts(got, c.want) {
			t.Errorf("%s: got counts %v, want %v", c.s.Name(), got, c.want)
		}
	}

	// Without val/, validation is split from train/.
	files = smallPNGs("train/a", 0, 5, nil)
	smallPNGs("train/b", 1, 5, files)
	d, err = Open(context.Background(), writeTree(t, files), OpenOptions{ValSplit: 0.4})
	if err != nil {
		t.Fatal(err)
	}
	if got := d.Val().Counts(); !equalInts(got, []int{2, 2}) {
		t.Errorf("got val counts %v, want [2 2] (round(0.4*5))", got)
	}
}

func TestOpenErrors(t *testing.T) {
	oneClass := writeTree(t, smallPNGs("only", 0, 3, nil))
	emptyClass := writeTree(t, smallPNGs("a", 0, 3, map[string][]byte{"b/bad.jpg": []byte("not an image")}))
	files := smallPNGs("train/a", 0, 2, nil)
	smallPNGs("train/b", 1, 2, files)
	smallPNGs("val/zebra", 1, 1, files)
	unknownVal := writeTree(t, files)
	twoSplits := writeTree(t, smallPNGs("val/a", 0, 1, smallPNGs("validation/a", 0, 1, smallPNGs("train/a", 0, 1, nil))))
	aFile := filepath.Join(oneClass, "only", "aa.png")

	tests := []struct {
		name    string
		path    string
		opt     OpenOptions
		want    error
		wantMsg string
	}{
		{"missing path", filepath.Join(oneClass, "nope"), OpenOptions{}, fs.ErrNotExist, "no such file"},
		{"a file", aFile, OpenOptions{}, nil, "not a directory"},
		{"one class", oneClass, OpenOptions{}, ErrLayout, "found 1 class folder(s) [only], need at least 2"},
		{"class without usable image", emptyClass, OpenOptions{}, ErrLayout, `class "b" has no usable image (1 file(s) skipped)`},
		{"strict", emptyClass, OpenOptions{Strict: true}, ErrNotImage, "bad.jpg: not an image"},
		{"unknown val class", unknownVal, OpenOptions{}, ErrLayout, `class "zebra" is not in the training classes`},
		{"two val folders", twoSplits, OpenOptions{}, ErrLayout, "hold the val split"},
		{"split of 1", oneClass, OpenOptions{ValSplit: 1}, nil, "must be below 1"},
	}
	for _, tc := range tests {
		_, err := Open(context.Background(), tc.path, tc.opt)
		if err == nil {
			t.Errorf("%s: got nil error, want %q", tc.name, tc.wantMsg)
			continue
		}
		if tc.want != nil && !errors.Is(err, tc.want) {
			t.Errorf("%s: got %v, want errors.Is %v", tc.name, err, tc.want)
		}
		if !strings.Contains(err.Error(), tc.wantMsg) || !strings.HasPrefix(err.Error(), "dataset: ") {
			t.Errorf("%s: got %q, want it to start with \"dataset: \" and contain %q", tc.name, err, tc.wantMsg)
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Open(ctx, emptyClass, OpenOptions{}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: got %v, want context.Canceled", err)
	}
}

// TestOpenBrokenCorpus puts the committed broken files into a class and
// checks each one's outcome: kept, or skipped with its reason.
func TestOpenBrokenCorpus(t *testing.T) {
	files := smallPNGs("a", 0, 2, nil)
	smallPNGs("b", 1, 2, files)
	es, err := os.ReadDir(filepath.Join("testdata", "broken"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range es {
		data, err := os.ReadFile(filepath.Join("testdata", "broken", e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		files["a/"+e.Name()] = data
	}
	files["a/locked.png"] = encPNG(quadrants(8, 8))
	dir := writeTree(t, files)
	locked := filepath.Join(dir, "a", "locked.png")
	if err := os.Chmod(locked, 0); err != nil {
		t.Fatal(err)
	}
	lockedReadable := true
	if f, err := os.Open(locked); err != nil {
		lockedReadable = false // an ordinary user
	} else {
		f.Close() // root reads through chmod 000
	}

	want := map[string]string{ // file -> reason prefix ("" = kept)
		"animated.gif":  "",
		"badheader.png": "corrupt png header",
		"cmyk.jpg":      "",
		"gray16.png":    "",
		"huge.png":      "png declares 100000x100000 pixels, over the limit of 50000000",
		"notes.txt":     "not an image (unsupported extension)",
		"rgba16.png":    "",
		"text.jpg":      "not an image (unrecognised format)",
		"truncated.jpg": "corrupt or truncated jpeg",
		"truncated.png": "corrupt or truncated png",
		"zero.jpg":      "empty file",
		"locked.png":    "cannot read: permission denied",
	}
	if lockedReadable {
		want["locked.png"] = ""
	}
	d, err := Open(context.Background(), dir, OpenOptions{ValSplit: -1})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, s := range d.Skipped() {
		got[filepath.Base(s.Path)] = s.Reason
	}
	kept := 0
	for name, reason := range want {
		if reason == "" {
			kept++
			if r, ok := got[name]; ok {
				t.Errorf("%s: got skipped (%s), want kept", name, r)
			}
			continue
		}
		if r, ok := got[name]; !ok || !strings.HasPrefix(r, reason) {
			t.Errorf("%s: got reason %q, want prefix %q", name, r, reason)
		}
	}
	if n := d.Train().Counts()[0]; n != 2+kept {
		t.Errorf("class a: got %d usable images, want %d", n, 2+kept)
	}

	// Strict fails on the first bad file in path order: a/badheader.png.
	_, err = Open(context.Background(), dir, OpenOptions{Strict: true})
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "badheader.png") {
		t.Errorf("strict: got %v, want the ErrCorrupt of badheader.png", err)
	}
}
