package main

import (
	"go/ast"
	"go/token"
	"path"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// failMethods are the testing.TB methods that make a test fail or skip.
var failMethods = map[string]bool{
	"Error": true, "Errorf": true, "Fatal": true, "Fatalf": true, "Fail": true, "FailNow": true,
	"Skip": true, "Skipf": true, "SkipNow": true,
}

// testingTypes are the types (as written after "testing.") whose values have failMethods.
var testingTypes = map[string]bool{"T": true, "B": true, "F": true, "TB": true}

// finding is a test that can neither fail nor skip.
type finding struct {
	Pos  token.Position
	Name string
}

// checkPackage returns the tests (func TestXxx(*testing.T) in a _test.go file) among the files
// of one package that can neither fail nor skip: no call of a failMethods method on a testing
// value in their body (closures included, so t.Run subtests count), and no use of a function
// or method of the package that itself can, through any depth of helpers. Helpers are matched
// by name (a method by its name alone, whatever its receiver); calls into other packages are
// not followed.
func checkPackage(fset *token.FileSet, files []*ast.File) []finding {
	funcs := map[string][]*ast.FuncDecl{}   // package-level functions by name
	methods := map[string][]*ast.FuncDecl{} // methods by name
	fields := map[string]bool{}             // struct fields of a testing type
	imports := map[*ast.File]map[string]bool{}
	for _, f := range files {
		imports[f] = importNames(f)
		for _, d := range f.Decls {
			if fd, ok := d.(*ast.FuncDecl); ok && fd.Body != nil {
				if fd.Recv == nil {
					funcs[fd.Name.Name] = append(funcs[fd.Name.Name], fd)
				} else {
					methods[fd.Name.Name] = append(methods[fd.Name.Name], fd)
				}
			}
		}
		ast.Inspect(f, func(n ast.Node) bool {
			if st, ok := n.(*ast.StructType); ok {
				for _, fl := range st.Fields.List {
					if isTestingType(fl.Type) {
						for _, name := range fl.Names {
							fields[name.Name] = true
						}
					}
				}
			}
			return true
		})
	}
	fileOf := map[*ast.FuncDecl]*ast.File{}
	for _, f := range files {
		for _, d := range f.Decls {
			if fd, ok := d.(*ast.FuncDecl); ok {
				fileOf[fd] = f
			}
		}
	}

	// Grow the set of functions that can fail until it stops growing.
	failing := map[*ast.FuncDecl]bool{}
	anyFails := func(fds []*ast.FuncDecl) bool {
		for _, fd := range fds {
			if failing[fd] {
				return true
			}
		}
		return false
	}
	for changed := true; changed; {
		changed = false
		for _, fds := range [2]map[string][]*ast.FuncDecl{funcs, methods} {
			for _, list := range fds {
				for _, fd := range list {
					if !failing[fd] && canFail(fd, imports[fileOf[fd]], fields, func(name string) bool { return anyFails(funcs[name]) },
						func(name string) bool { return anyFails(methods[name]) }) {
						failing[fd] = true
						changed = true
					}
				}
			}
		}
	}

	var out []finding
	for _, f := range files {
		if !strings.HasSuffix(fset.Position(f.Package).Filename, "_test.go") {
			continue
		}
		for _, d := range f.Decls {
			fd, ok := d.(*ast.FuncDecl)
			if !ok || fd.Recv != nil || fd.Body == nil || !isTest(fd) || failing[fd] {
				continue
			}
			out = append(out, finding{Pos: fset.Position(fd.Pos()), Name: fd.Name.Name})
		}
	}
	return out
}

// canFail reports whether fd's body calls a failMethods method on a testing value, or uses a
// function (isFunc) or method (isMethod) of the package known to fail.
func canFail(fd *ast.FuncDecl, pkgs map[string]bool, fields map[string]bool, isFunc, isMethod func(string) bool) bool {
	tnames := testingNames(fd)
	sels := map[*ast.Ident]bool{} // the Name of every x.Name: never a package-level function
	ast.Inspect(fd.Body, func(n ast.Node) bool {
		if sel, ok := n.(*ast.SelectorExpr); ok {
			sels[sel.Sel] = true
		}
		return true
	})
	found := false
	ast.Inspect(fd.Body, func(n ast.Node) bool {
		switch x := n.(type) {
		case *ast.CallExpr:
			if sel, ok := x.Fun.(*ast.SelectorExpr); ok && failMethods[sel.Sel.Name] {
				switch recv := sel.X.(type) {
				case *ast.Ident: // t.Errorf
					found = found || tnames[recv.Name]
				case *ast.SelectorExpr: // c.t.Errorf
					found = found || fields[recv.Sel.Name]
				}
			}
		case *ast.SelectorExpr:
			if id, ok := x.X.(*ast.Ident); ok && pkgs[id.Name] {
				return false // pkg.Name: another package's
			}
			found = found || isMethod(x.Sel.Name)
		case *ast.Ident:
			found = found || (!sels[x] && isFunc(x.Name))
		}
		return !found
	})
	return found
}

// testingNames are the names of fd's parameters, and of the parameters and variables declared
// anywhere in its body, whose type is a testing type.
func testingNames(fd *ast.FuncDecl) map[string]bool {
	names := map[string]bool{}
	addFields := func(fl *ast.FieldList) {
		if fl == nil {
			return
		}
		for _, f := range fl.List {
			if isTestingType(f.Type) {
				for _, n := range f.Names {
					names[n.Name] = true
				}
			}
		}
	}
	addFields(fd.Type.Params)
	ast.Inspect(fd.Body, func(n ast.Node) bool {
		switch x := n.(type) {
		case *ast.FuncLit:
			addFields(x.Type.Params)
		case *ast.ValueSpec:
			if isTestingType(x.Type) {
				for _, n := range x.Names {
					names[n.Name] = true
				}
			}
		}
		return true
	})
	return names
}

// isTestingType reports whether e is testing.T, B, F or TB, or a pointer to one.
func isTestingType(e ast.Expr) bool {
	if st, ok := e.(*ast.StarExpr); ok {
		e = st.X
	}
	sel, ok := e.(*ast.SelectorExpr)
	if !ok {
		return false
	}
	pkg, ok := sel.X.(*ast.Ident)
	return ok && pkg.Name == "testing" && testingTypes[sel.Sel.Name]
}

// isTest reports whether fd is a test the go tool runs: func TestXxx(t *testing.T), where
// Xxx does not start with a lower-case letter.
func isTest(fd *ast.FuncDecl) bool {
	name := fd.Name.Name
	if !strings.HasPrefix(name, "Test") {
		return false
	}
	if r, _ := utf8.DecodeRuneInString(name[len("Test"):]); len(name) > len("Test") && unicode.IsLower(r) {
		return false
	}
	ps := fd.Type.Params.List
	if len(ps) != 1 || len(ps[0].Names) > 1 {
		return false
	}
	st, ok := ps[0].Type.(*ast.StarExpr)
	if !ok {
		return false
	}
	sel, ok := st.X.(*ast.SelectorExpr)
	if !ok {
		return false
	}
	pkg, ok := sel.X.(*ast.Ident)
	return ok && pkg.Name == "testing" && sel.Sel.Name == "T"
}

// importNames are the names under which f refers to its imports.
func importNames(f *ast.File) map[string]bool {
	names := map[string]bool{}
	for _, im := range f.Imports {
		p, err := strconv.Unquote(im.Path.Value)
		if err != nil {
			continue
		}
		name := path.Base(p)
		if im.Name != nil {
			name = im.Name.Name
		} else if strings.HasPrefix(name, "v") && strings.Count(p, "/") > 0 {
			// A major-version suffix (github.com/x/y/v3) is not the package name.
			if _, err := strconv.Atoi(name[1:]); err == nil {
				name = path.Base(path.Dir(p))
			}
		}
		names[name] = true
	}
	return names
}
