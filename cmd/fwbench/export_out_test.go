package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDatasetExportRefusesNonRegularOut: `dataset export --out` and `--order` go through the
// one output-file rule: a symlink at the path is refused (exit 2) before any decoding, and the
// link and its target are left as they were.
func TestDatasetExportRefusesNonRegularOut(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "target")
	if err := os.WriteFile(target, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "batch.npz")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	for _, flag := range []string{"--out", "--order"} {
		_, stderr, code := runCLI(t, "dataset", "export", flag, link, smallDS)
		if code != 2 || !strings.Contains(stderr, "symbolic link") && !strings.Contains(stderr, "symlink") {
			t.Errorf("export %s <symlink>: exit %d, stderr %q; want exit 2 refusing the symlink", flag, code, stderr)
		}
		if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
			t.Errorf("export %s: the symlink was replaced (%v)", flag, err)
		}
		if b, _ := os.ReadFile(target); string(b) != "keep" {
			t.Errorf("export %s: the link's target changed to %q", flag, b)
		}
	}
}
