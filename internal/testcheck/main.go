// Command testcheck fails on a test that can neither fail nor skip. scripts/test.sh runs it
// over the repository:
//
//	go run ./internal/testcheck [DIR...]      (default: .)
//
// Every func TestXxx(t *testing.T) in a _test.go file must call one of t.Error, Errorf,
// Fatal, Fatalf, Fail, FailNow, Skip, Skipf or SkipNow, directly, in a closure (a t.Run
// subtest), or through a function or method of its package that does (any depth of
// helpers). It prints each offending test as file:line and exits 1; it exits 2 when a file
// does not parse. Like the go tool, it skips testdata, vendor and folders whose names start
// with "." or "_". It reads source only (go/parser, go/ast): no build, no type checking, so a
// helper is matched by name and calls into other packages are not followed.
package main

import (
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		args = []string{"."}
	}
	var all []finding
	for _, root := range args {
		found, err := checkTree(root)
		if err != nil {
			fmt.Fprintf(stderr, "testcheck: %v\n", err)
			return 2
		}
		all = append(all, found...)
	}
	sort.Slice(all, func(i, j int) bool {
		a, b := all[i].Pos, all[j].Pos
		if a.Filename != b.Filename {
			return a.Filename < b.Filename
		}
		return a.Line < b.Line
	})
	for _, f := range all {
		fmt.Fprintf(stdout, "%s:%d: %s can neither fail nor skip: it calls no t.Error/Errorf/Fatal/Fatalf/Fail/FailNow/Skip/Skipf/SkipNow, directly or through a helper of its package\n",
			f.Pos.Filename, f.Pos.Line, f.Name)
	}
	if len(all) > 0 {
		fmt.Fprintf(stderr, "testcheck: %d test(s) that cannot fail\n", len(all))
		return 1
	}
	return 0
}

// checkTree checks every package folder under root that has tests.
func checkTree(root string) ([]finding, error) {
	var dirs []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			if strings.HasSuffix(p, "_test.go") {
				if dir := filepath.Dir(p); !slices.Contains(dirs, dir) {
					dirs = append(dirs, dir)
				}
			}
			return nil
		}
		name := d.Name()
		if p != root && (name == "testdata" || name == "vendor" || strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_")) {
			return filepath.SkipDir
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	var out []finding
	for _, dir := range dirs {
		found, err := checkDir(dir)
		if err != nil {
			return nil, err
		}
		out = append(out, found...)
	}
	return out, nil
}

// checkDir parses the Go files of one folder and checks each package in it (a folder may hold
// package p and its external test package p_test).
func checkDir(dir string) ([]finding, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	fset := token.NewFileSet()
	pkgs := map[string][]*ast.File{}
	var errs []error
	for _, e := range entries {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".go") {
			continue
		}
		f, err := parser.ParseFile(fset, filepath.Join(dir, e.Name()), nil, parser.SkipObjectResolution)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		pkgs[f.Name.Name] = append(pkgs[f.Name.Name], f)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	var out []finding
	for _, files := range pkgs {
		out = append(out, checkPackage(fset, files)...)
	}
	return out, nil
}
