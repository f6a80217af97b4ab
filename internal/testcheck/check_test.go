package main

import (
	"bytes"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// header starts every example file.
const header = "package p\n\nimport (\n\t\"errors\"\n\t\"testing\"\n)\n\nvar _ = errors.New\n\n"

func TestCheckPackage(t *testing.T) {
	tests := []struct {
		name string
		src  string   // after header, in p_test.go
		lib  string   // after "package p\n\n", in p.go (not a test file)
		want []string // the tests reported
	}{
		{"asserts directly", `func TestA(t *testing.T) { if 1+1 != 2 { t.Errorf("got %d", 1+1) } }`, "", nil},
		{"fatal", `func TestA(t *testing.T) { t.Fatal("x") }`, "", nil},
		{"fail now", `func TestA(t *testing.T) { t.FailNow() }`, "", nil},
		{"skips for a missing GPU", `func TestA(t *testing.T) { t.Skip("no GPU") }`, "", nil},
		{"neither asserts nor skips", `func TestA(t *testing.T) { t.Log("hello") }`, "", []string{"TestA"}},
		{"empty", `func TestA(t *testing.T) {}`, "", []string{"TestA"}},
		{"err.Error is not t.Error", `func TestA(t *testing.T) { err := errors.New("x"); t.Log(err.Error()) }`, "", []string{"TestA"}},
		{"Error on a non-testing value", `type fake struct{}
func (fake) Errorf(string, ...any) {}
func TestA(t *testing.T) { var f fake; f.Errorf("x") }`, "", []string{"TestA"}},
		{"helper that takes t", `func check(t *testing.T, x int) { t.Helper(); if x != 1 { t.Errorf("got %d", x) } }
func TestA(t *testing.T) { check(t, 1) }`, "", nil},
		{"helper through testing.TB, two levels", `func inner(tb testing.TB) { tb.Fatalf("x") }
func outer(tb testing.TB) { inner(tb) }
func TestA(t *testing.T) { outer(t) }`, "", nil},
		{"helper that does not fail", `func show(t *testing.T, x int) { t.Logf("%d", x) }
func TestA(t *testing.T) { show(t, 1) }`, "", []string{"TestA"}},
		{"method helper", `type fixture struct{}
func (f *fixture) get(t *testing.T) int { t.Fatal("none"); return 0 }
func TestA(t *testing.T) { var f fixture; _ = f.get(t) }`, "", nil},
		{"struct holding t", `type checker struct{ t *testing.T }
func (c checker) eq(a, b int) { if a != b { c.t.Errorf("got %d, want %d", a, b) } }
func TestA(t *testing.T) { checker{t}.eq(1, 1) }`, "", nil},
		{"subtest that asserts", `func TestA(t *testing.T) { t.Run("x", func(t *testing.T) { t.Error("x") }) }`, "", nil},
		{"subtest that does not", `func TestA(t *testing.T) { t.Run("x", func(t *testing.T) { t.Log("x") }) }`, "", []string{"TestA"}},
		{"subtest given a named function", `func sub(t *testing.T) { t.Skip("no CUDA") }
func TestA(t *testing.T) { t.Run("x", sub) }`, "", nil},
		{"helper in the package's non-test file", `func TestA(t *testing.T) { mustOK(t) }`,
			`import "testing"

func mustOK(t testing.TB) { t.Fatal("x") }
`, nil},
		{"not tests", `func TestMain(m *testing.M) {}
func Testlower(t *testing.T) {}
func helper(t *testing.T) {}
func BenchmarkA(b *testing.B) {}`, "", nil},
		{"Test alone is a test", `func Test(t *testing.T) {}`, "", []string{"Test"}},
		{"only the bad one of two", `func TestGood(t *testing.T) { t.Error("x") }
func TestBad(t *testing.T) { _ = 1 }`, "", []string{"TestBad"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fset := token.NewFileSet()
			files := []*ast.File{mustParse(t, fset, "p_test.go", header+tc.src)}
			if tc.lib != "" {
				files = append(files, mustParse(t, fset, "p.go", "package p\n\n"+tc.lib))
			}
			var got []string
			for _, f := range checkPackage(fset, files) {
				got = append(got, f.Name)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func mustParse(t *testing.T, fset *token.FileSet, name, src string) *ast.File {
	t.Helper()
	f, err := parser.ParseFile(fset, name, src, parser.SkipObjectResolution)
	if err != nil {
		t.Fatalf("%s: %v\n%s", name, err, src)
	}
	return f
}

// TestRun runs the program on a folder tree with a good and a bad package, a testdata folder
// that must be skipped, and a file that does not parse.
func TestRun(t *testing.T) {
	root := t.TempDir()
	write := func(name, src string) {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("good/good_test.go", header+`func TestGood(t *testing.T) { t.Fatal("x") }`)
	write("bad/bad_test.go", header+"func TestFine(t *testing.T) { t.Skip(\"no GPU\") }\n\nfunc TestSilent(t *testing.T) {\n\tt.Log(1)\n}\n")
	write("bad/testdata/ignored_test.go", header+`func TestIgnored(t *testing.T) {}`)
	write(".hidden/h_test.go", header+`func TestHidden(t *testing.T) {}`)

	var stdout, stderr bytes.Buffer
	if code := run([]string{root}, &stdout, &stderr); code != 1 {
		t.Errorf("exit: got %d, want 1; stderr %q", code, stderr.String())
	}
	want := filepath.Join(root, "bad", "bad_test.go") + ":12: TestSilent can neither fail nor skip"
	if lines := strings.Split(strings.TrimSpace(stdout.String()), "\n"); len(lines) != 1 || !strings.HasPrefix(lines[0], want) {
		t.Errorf("output: got %q, want one line starting %q", stdout.String(), want)
	}

	stdout.Reset()
	if code := run([]string{filepath.Join(root, "good")}, &stdout, &stderr); code != 0 || stdout.Len() != 0 {
		t.Errorf("good package: got exit %d and %q, want 0 and nothing", code, stdout.String())
	}

	write("broken/broken_test.go", "package broken\n\nfunc TestX(t *testing.T) {")
	stderr.Reset()
	if code := run([]string{filepath.Join(root, "broken")}, &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), "broken_test.go") {
		t.Errorf("file that does not parse: got exit %d and %q, want 2 and the file named", code, stderr.String())
	}
}
