package recipe

import (
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"sort"
	"strings"
	"sync"
)

//go:embed catalog/*.yaml
var catalogFS embed.FS

// ErrUnknown is returned for a name that is neither a catalog recipe nor a file.
var ErrUnknown = errors.New("unknown recipe")

var (
	catalogOnce sync.Once
	catalog     map[string]*Recipe
	catalogErr  error
)

func loadCatalog() (map[string]*Recipe, error) {
	catalogOnce.Do(func() {
		catalog = map[string]*Recipe{}
		entries, err := fs.ReadDir(catalogFS, "catalog")
		if err != nil {
			catalogErr = err
			return
		}
		for _, e := range entries {
			data, err := fs.ReadFile(catalogFS, path.Join("catalog", e.Name()))
			if err != nil {
				catalogErr = err
				return
			}
			r, err := Parse(data, "catalog:"+e.Name())
			if err != nil {
				catalogErr = err
				return
			}
			if r.Name+".yaml" != e.Name() {
				catalogErr = fmt.Errorf("catalog:%s names the recipe %q: the file name must be NAME.yaml", e.Name(), r.Name)
				return
			}
			catalog[r.Name] = r
		}
	})
	return catalog, catalogErr
}

// Catalog returns the embedded recipes, sorted by name.
func Catalog() ([]*Recipe, error) {
	c, err := loadCatalog()
	if err != nil {
		return nil, err
	}
	out := make([]*Recipe, 0, len(c))
	for _, r := range c {
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Lookup returns the catalog recipe NAME.
func Lookup(name string) (*Recipe, error) {
	c, err := loadCatalog()
	if err != nil {
		return nil, err
	}
	if r, ok := c[name]; ok {
		return r, nil
	}
	return nil, fmt.Errorf("%w %q: 'sysext recipes list' shows the catalog; a recipe file is given by its path (./%s.yaml)", ErrUnknown, name, name)
}

// Load returns the catalog recipe NAME, or parses the file at a path (an
// argument with a '/' or ending in .yaml/.yml).
func Load(nameOrFile string) (*Recipe, error) {
	if !strings.Contains(nameOrFile, "/") && !strings.HasSuffix(nameOrFile, ".yaml") && !strings.HasSuffix(nameOrFile, ".yml") {
		return Lookup(nameOrFile)
	}
	f, err := os.Open(nameOrFile)
	if err != nil {
		return nil, fmt.Errorf("recipe file: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("recipe file: %w", err)
	}
	if st.Size() > MaxRecipeSize {
		return nil, &Error{Source: nameOrFile, Msg: fmt.Sprintf("recipe is %d bytes, more than the %d allowed", st.Size(), MaxRecipeSize)}
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxRecipeSize+1))
	if err != nil {
		return nil, fmt.Errorf("recipe file %s: %w", nameOrFile, err)
	}
	return Parse(data, nameOrFile)
}
