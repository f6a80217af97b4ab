package weights

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// keepRegistry restores the registered formats when the test ends, so that the
// formats this test registers do not reach the other tests' lists.
func keepRegistry(t *testing.T) {
	t.Helper()
	saved := registeredFormats()
	t.Cleanup(func() {
		formatsMu.Lock()
		defer formatsMu.Unlock()
		formats = saved
	})
}

// constFormat is a format that sniffs magic and reads one tensor holding v.
func constFormat(name, magic string, v float32) Format {
	return Format{
		Name:  name,
		Sniff: func(head []byte) bool { return bytes.HasPrefix(head, []byte(magic)) },
		Read: func(string) ([]*Tensor, error) {
			return []*Tensor{{Name: "w", Shape: []int{1}, Data: []float32{v}}}, nil
		},
	}
}

func TestRegisterFormatReplacesByName(t *testing.T) {
	keepRegistry(t)
	builtin := formatNames()
	RegisterFormat(constFormat("replace test A", "FWBREPA\n", 1))
	RegisterFormat(constFormat("replace test B", "FWBREPB\n", 2))
	dir := t.TempDir()
	fileA := filepath.Join(dir, "a")
	if err := os.WriteFile(fileA, []byte("FWBREPA\nrest"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		register  Format
		wantNames []string // after the built-in formats
		wantValue float32  // what Load reads from fileA: the Read of the entry named "replace test A"
	}{
		{"A registered", Format{}, []string{"replace test A", "replace test B"}, 1},
		{"A replaced in place", constFormat("replace test A", "FWBREPA\n", 3), []string{"replace test A", "replace test B"}, 3},
		{"A replaced again", constFormat("replace test A", "FWBREPA\n", 4), []string{"replace test A", "replace test B"}, 4},
		// A new name is appended after the others.
		{"C added", constFormat("replace test C", "FWBREPC\n", 5), []string{"replace test A", "replace test B", "replace test C"}, 4},
	}
	for _, tt := range tests {
		if tt.register.Name != "" {
			RegisterFormat(tt.register)
		}
		if got, want := formatNames(), append(slices.Clone(builtin), tt.wantNames...); !slices.Equal(got, want) {
			t.Errorf("%s: formats %q, want %q", tt.name, got, want)
		}
		ts, err := Load(fileA)
		if err != nil || len(ts) != 1 || ts[0].Data[0] != tt.wantValue {
			t.Errorf("%s: Load got %v, %v; want one tensor holding %v", tt.name, ts, err, tt.wantValue)
		}
		f, ok := LookupFormat("replace test A")
		if !ok {
			t.Fatalf("%s: LookupFormat(%q): got not found, want the registered format", tt.name, "replace test A")
		}
		if ts, err := f.Read(fileA); err != nil || ts[0].Data[0] != tt.wantValue {
			t.Errorf("%s: LookupFormat's Read got %v, %v; want one tensor holding %v", tt.name, ts, err, tt.wantValue)
		}
	}
	if _, ok := LookupFormat("no such format"); ok {
		t.Errorf("LookupFormat(%q): got found, want not found", "no such format")
	}
}
