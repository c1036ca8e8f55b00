// Package chihaya_test holds repository-wide checks.
package chihaya_test

import (
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
)

// TestPackageDocs checks that every package has exactly one package
// comment (the place that states its contract), ignoring test files.
func TestPackageDocs(t *testing.T) {
	dirs := map[string][]string{} // dir -> files with a package comment
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if name := d.Name(); path != "." && (strings.HasPrefix(name, ".") || name == "testdata") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.PackageClauseOnly|parser.ParseComments)
		if err != nil {
			return err
		}
		dir := filepath.Dir(path)
		if _, ok := dirs[dir]; !ok {
			dirs[dir] = nil
		}
		if f.Doc != nil {
			dirs[dir] = append(dirs[dir], path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for dir, docs := range dirs {
		switch len(docs) {
		case 1:
		case 0:
			t.Errorf("package %s has no package comment; add one (in doc.go for a long one)", dir)
		default:
			t.Errorf("package %s has package comments in %d files %v; keep exactly one", dir, len(docs), docs)
		}
	}
}
