package sysext_test

// The dependency rules of the team's standards (style.md), checked on
// every test run: the domain core (extension, and delta's chunking and
// chunk index rules) imports only the standard library,
// nothing imports the command, builder does no network I/O (not even
// transitively), only oci/ imports the registry client and only verify/
// imports sigstore, test helpers are for tests, only a verify.Policy
// makes a verify.Verified, and the sysext binary links no man page
// generator.

import (
	"bytes"
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
)

const module = "github.com/sysext/sysext"

// sourceImports maps each package directory (relative, slash-separated)
// to the imports of its files; tests selects _test.go files or the others.
func sourceImports(t *testing.T, tests bool) map[string]map[string]bool {
	t.Helper()
	out := map[string]map[string]bool{}
	fset := token.NewFileSet()
	err := filepath.WalkDir(".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if p != "." && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata" || d.Name() == "vendor" || d.Name() == "bin") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") != tests {
			return nil
		}
		f, err := parser.ParseFile(fset, p, nil, parser.ImportsOnly)
		if err != nil {
			return nil // a half-written file is its owner's build error, not ours
		}
		dir := filepath.ToSlash(filepath.Dir(p))
		if out[dir] == nil {
			out[dir] = map[string]bool{}
		}
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			out[dir][path] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func under(dir, top string) bool { return dir == top || strings.HasPrefix(dir, top+"/") }

func isStd(path string) bool { return !strings.Contains(strings.SplitN(path, "/", 2)[0], ".") }

func TestDependencyRules(t *testing.T) {
	for _, tests := range []bool{false, true} {
		for dir, imps := range sourceImports(t, tests) {
			for imp := range imps {
				if strings.HasPrefix(imp, module+"/cmd") && !under(dir, "cmd") {
					t.Errorf("%s imports %s: no package may import the command", dir, imp)
				}
				// (An external test package, extension_test, imports the
				// package it tests; that is no dependency.)
				if (under(dir, "extension") || under(dir, "delta")) && !isStd(imp) && imp != module+"/"+dir {
					t.Errorf("%s imports %s: the domain core imports only the standard library", dir, imp)
				}
				if tests {
					continue
				}
				// The registry client; oras.land/oras-go/v2/registry itself
				// holds only interfaces and reference parsing.
				if strings.HasPrefix(imp, "oras.land/oras-go/v2/registry/remote") && !under(dir, "oci") {
					t.Errorf("%s imports %s: only oci/ talks to registries", dir, imp)
				}
				if strings.HasPrefix(imp, "github.com/sigstore/") && !under(dir, "verify") {
					t.Errorf("%s imports %s: only verify/ imports sigstore", dir, imp)
				}
				// verifytest mints an unsigned verify.Verified, ocitest
				// starts registries: in a binary they would be a way
				// around the trust policy, or dead weight.
				if strings.HasPrefix(imp, module+"/") && isTestHelper(imp) && !isTestHelper(module+"/"+dir) {
					t.Errorf("%s imports %s: test helpers are imported only by tests and other test helpers", dir, imp)
				}
			}
		}
	}
}

// isTestHelper reports whether the package at path exists for tests:
// its last element ends in "test" (ocitest, verifytest, tartest,
// sigstoretest) or is testenv.
func isTestHelper(path string) bool {
	last := path[strings.LastIndex(path, "/")+1:]
	return strings.HasSuffix(last, "test") || last == "testenv"
}

// mintsVerified are the only functions of verify that return a Verified:
// the policy's decisions. An exported constructor (as AcceptUnsigned was)
// would let any package install an image nobody verified.
var mintsVerified = map[string]bool{"Policy.Verify": true, "Policy.VerifyEntry": true}

// TestOnlyPolicyMintsVerified: in verify's own code, every exported
// function or method that returns a Verified is one of mintsVerified, and
// no other package makes one but the zero value (its fields are
// unexported, so the compiler sees to that).
func TestOnlyPolicyMintsVerified(t *testing.T) {
	fset := token.NewFileSet()
	paths, err := filepath.Glob("verify/*.go")
	if err != nil {
		t.Fatal(err)
	}
	found := map[string]bool{}
	for _, p := range paths {
		if strings.HasSuffix(p, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, p, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, decl := range f.Decls {
			fn, ok := decl.(*ast.FuncDecl)
			name, exported := exportedName(fn, ok)
			if !exported || !returns(fn, "Verified") {
				continue
			}
			found[name] = true
			if !mintsVerified[name] {
				t.Errorf("%s: verify.%s returns a Verified: only %v may make one (verifytest.AcceptUnsigned serves tests)", fset.Position(fn.Pos()), name, keys(mintsVerified))
			}
		}
	}
	for name := range mintsVerified {
		if !found[name] {
			t.Errorf("verify.%s returning a Verified was not found: the check reads the wrong code", name)
		}
	}
}

// exportedName is fn's name, "Type.Method" for a method, and whether other
// packages can call it.
func exportedName(fn *ast.FuncDecl, ok bool) (string, bool) {
	if !ok || !fn.Name.IsExported() {
		return "", false
	}
	if fn.Recv == nil || len(fn.Recv.List) != 1 {
		return fn.Name.Name, true
	}
	recv := fn.Recv.List[0].Type
	if star, ok := recv.(*ast.StarExpr); ok {
		recv = star.X
	}
	id, ok := recv.(*ast.Ident)
	if !ok || !id.IsExported() {
		return "", false
	}
	return id.Name + "." + fn.Name.Name, true
}

// returns reports whether one of fn's results is the named type (or a
// pointer to it).
func returns(fn *ast.FuncDecl, typeName string) bool {
	if fn.Type.Results == nil {
		return false
	}
	for _, r := range fn.Type.Results.List {
		typ := r.Type
		if star, ok := typ.(*ast.StarExpr); ok {
			typ = star.X
		}
		if id, ok := typ.(*ast.Ident); ok && id.Name == typeName {
			return true
		}
	}
	return false
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// goListDeps returns the transitive imports of pkg, as the go command sees
// them.
func goListDeps(t *testing.T, pkg string) []string {
	t.Helper()
	cmd := exec.Command("go", "list", "-e", "-deps", "-json=ImportPath,Standard", pkg)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list %s: %v\n%s", pkg, err, stderr.String())
	}
	var deps []string
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p struct {
			ImportPath string
			Standard   bool
		}
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		deps = append(deps, p.ImportPath)
	}
	return deps
}

func TestTransitiveDependencies(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go command")
	}
	if _, err := os.Stat("go.mod"); err != nil {
		t.Skip("not run from the module root")
	}
	for _, pkg := range []string{"extension", "delta"} {
		for _, dep := range goListDeps(t, "./"+pkg) {
			if !isStd(dep) && dep != module+"/"+pkg {
				t.Errorf("%s depends on %s: the domain core uses only the standard library", pkg, dep)
			}
		}
	}
	// activate drives systemd-sysext; the node's state is node's business,
	// so activate never pulls in the store (and with it sigstore).
	for _, dep := range goListDeps(t, "./activate") {
		if dep == module+"/store" || strings.HasPrefix(dep, "github.com/sigstore/") {
			t.Errorf("activate depends on %s: it reads no node state (node does)", dep)
		}
	}
	for _, dep := range goListDeps(t, "./builder") {
		switch {
		case dep == "net/http", strings.HasPrefix(dep, "net/http/"),
			strings.HasPrefix(dep, "oras.land/oras-go/v2/registry"),
			strings.HasPrefix(dep, "github.com/sigstore/"),
			dep == module+"/oci", strings.HasPrefix(dep, module+"/oci/"),
			dep == module+"/verify", strings.HasPrefix(dep, module+"/cmd"):
			t.Errorf("builder depends on %s: builder does no network I/O", dep)
		}
	}
	// Every linked package's initialisation runs at every start of sysext
	// (issue 15's fetch and push ratios pay for it), so the man page
	// generator's markdown stack is built only with -tags man.
	for _, dep := range goListDeps(t, "./cmd/sysext") {
		if strings.HasPrefix(dep, "github.com/spf13/cobra/doc") ||
			strings.HasPrefix(dep, "github.com/cpuguy83/go-md2man/") ||
			strings.HasPrefix(dep, "github.com/russross/blackfriday/") {
			t.Errorf("cmd/sysext depends on %s without -tags man: only the man page generator needs it", dep)
		}
	}
}
