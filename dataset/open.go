package dataset

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
)

// Layouts reported by Dataset.Layout and Report.Layout.
const (
	LayoutFolder   = "folder"   // ROOT/<class>/..., split by ValSplit
	LayoutPreSplit = "presplit" // ROOT/train/<class>/..., ROOT/val/<class>/..., ROOT/test/<class>/...
	LayoutIDX      = "idx"      // MNIST / Fashion-MNIST IDX files
)

// imageExts are the file extensions Open reads. The decoder is chosen from
// the content, not the extension.
var imageExts = map[string]bool{
	".jpg": true, ".jpeg": true, ".jpe": true, ".png": true,
	".gif": true, ".bmp": true, ".webp": true,
}

// OpenOptions tunes Open and Inspect.
type OpenOptions struct {
	// ValSplit is the fraction of every class sent to validation when the
	// tree is not pre-split: 0 means the default 0.2, a negative value means
	// no validation set. It must be below 1.
	ValSplit float64
	// Seed drives the stratified split.
	Seed int64
	// Strict fails on the first unusable file instead of skipping it.
	Strict bool
	// MaxPixels limits declared width*height (default DefaultMaxPixels).
	MaxPixels int64
	// MaxBytes limits the size of one file (default DefaultMaxBytes).
	MaxBytes int64
	// Workers is the number of files decoded at once (default runtime.NumCPU()).
	Workers int
}

func (o OpenOptions) withDefaults() (OpenOptions, error) {
	switch {
	case o.ValSplit == 0:
		o.ValSplit = 0.2
	case o.ValSplit < 0:
		o.ValSplit = 0
	case o.ValSplit >= 1 || math.IsNaN(o.ValSplit):
		return o, fmt.Errorf("dataset: validation split %v must be below 1", o.ValSplit)
	}
	if o.MaxPixels <= 0 {
		o.MaxPixels = DefaultMaxPixels
	}
	if o.MaxBytes <= 0 {
		o.MaxBytes = DefaultMaxBytes
	}
	if o.Workers <= 0 {
		o.Workers = runtime.NumCPU()
	}
	return o, nil
}

// Dataset is an opened data set: its classes and its train, validation and
// test subsets. It is immutable and safe for concurrent use.
type Dataset struct {
	path             string
	layout           string
	classes          []string
	train, val, test *Subset
	skipped          []Skipped
	valIsTest        bool // IDX: the t10k set serves as both
}

// Classes returns the class names; label i is Classes()[i]. The caller may
// not modify the slice.
func (d *Dataset) Classes() []string { return d.classes }

// Train returns the training subset.
func (d *Dataset) Train() *Subset { return d.train }

// Val returns the validation subset.
func (d *Dataset) Val() *Subset { return d.val }

// Test returns the test subset; it may be empty (Len() == 0).
func (d *Dataset) Test() *Subset { return d.test }

// Skipped returns the files left out, sorted by path.
func (d *Dataset) Skipped() []Skipped { return d.skipped }

// Path returns the path given to Open.
func (d *Dataset) Path() string { return d.path }

// Layout returns LayoutFolder, LayoutPreSplit or LayoutIDX.
func (d *Dataset) Layout() string { return d.layout }

// Subset is an ordered list of labelled images. It is immutable and safe
// for concurrent use.
type Subset struct {
	name      string
	classes   []string
	items     []item
	maxPixels int64
	maxBytes  int64
}

// item is one image: a file, or image pos of an in-memory IDX array.
type item struct {
	path   string // file path; for IDX the images file
	label  int32
	size   int64 // file size at Open (cache key)
	mtime  int64 // file modification time at Open, ns (cache key)
	w, h   int   // displayed size
	format string
	idx    *idxImages
	pos    int
}

// Len returns the number of images.
func (s *Subset) Len() int {
	if s == nil {
		return 0
	}
	return len(s.items)
}

// Name returns "train", "val" or "test".
func (s *Subset) Name() string { return s.name }

// Classes returns the class names of the data set.
func (s *Subset) Classes() []string { return s.classes }

// Label returns the label of image i.
func (s *Subset) Label(i int) int32 { return s.items[i].label }

// Path returns the file of image i; for IDX it is "FILE#N".
func (s *Subset) Path(i int) string {
	it := s.items[i]
	if it.idx != nil {
		return fmt.Sprintf("%s#%d", it.path, it.pos)
	}
	return it.path
}

// Counts returns the number of images of every class.
func (s *Subset) Counts() []int {
	c := make([]int, len(s.classes))
	for _, it := range s.items {
		c[it.label]++
	}
	return c
}

// decode decodes image i.
func (s *Subset) decode(i int) (decoded, error) {
	it := s.items[i]
	if it.idx != nil {
		return it.idx.image(it.pos), nil
	}
	return decodeFile(it.path, s.maxPixels, s.maxBytes)
}

// layoutError is a data-set-level problem; it matches ErrLayout.
type layoutError struct{ msg string }

func (e *layoutError) Error() string { return "dataset: " + e.msg }
func (e *layoutError) Unwrap() error { return ErrLayout }

func layoutErrorf(format string, args ...any) error {
	return &layoutError{msg: fmt.Sprintf(format, args...)}
}

// Open reads a class-folder tree (pre-split or not) or a folder of IDX
// files. Every image file is decoded once to check it; unusable files are
// listed by Skipped, or fail the call when opt.Strict is set. A tree with
// fewer than two classes or a class without a usable training image is an
// error matching ErrLayout.
func Open(ctx context.Context, path string, opt OpenOptions) (*Dataset, error) {
	d, problems, err := scan(ctx, path, opt)
	if err != nil {
		return nil, err
	}
	if len(problems) > 0 {
		return nil, problems[0]
	}
	return d, nil
}

// scan opens the data set and reports layout problems separately, so that
// Inspect can describe a data set that Open would refuse.
func scan(ctx context.Context, path string, opt OpenOptions) (*Dataset, []error, error) {
	opt, err := opt.withDefaults()
	if err != nil {
		return nil, nil, err
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil, nil, fmt.Errorf("dataset: open: %w", err)
	}
	if !st.IsDir() {
		return nil, nil, fmt.Errorf("dataset: open %s: not a directory", path)
	}
	if files, ok, err := findIDX(path); err != nil {
		return nil, nil, err
	} else if ok {
		return openIDX(ctx, path, files, opt)
	}
	return openTree(ctx, path, opt)
}

// splitDirs maps the names of pre-split folders to a split.
var splitDirs = map[string]int{"train": splitTrain, "val": splitVal, "valid": splitVal, "validation": splitVal, "test": splitTest}

const (
	splitTrain = iota
	splitVal
	splitTest
)

var splitNames = [3]string{"train", "val", "test"}

type candidate struct {
	path  string
	class int
	split int
	// filled by verification
	info item
	err  error
}

func openTree(ctx context.Context, root string, opt OpenOptions) (*Dataset, []error, error) {
	d := &Dataset{path: root, layout: LayoutFolder}
	top, err := subdirs(root)
	if err != nil {
		return nil, nil, err
	}
	var problems []error
	// splitRoots[k] is the folder holding the classes of split k ("" if none).
	var splitRoots [3]string
	if slices.Contains(top, "train") {
		d.layout = LayoutPreSplit
		for _, name := range top {
			k, ok := splitDirs[name]
			if !ok {
				continue
			}
			if splitRoots[k] != "" {
				return nil, nil, layoutErrorf("%s: both %s and %s hold the %s split", root,
					filepath.Base(splitRoots[k]), name, splitNames[k])
			}
			splitRoots[k] = filepath.Join(root, name)
		}
	} else {
		splitRoots[splitTrain] = root
	}

	classes, err := subdirs(splitRoots[splitTrain])
	if err != nil {
		return nil, nil, err
	}
	d.classes = classes
	classIndex := make(map[string]int, len(classes))
	for i, c := range classes {
		classIndex[c] = i
	}

	var cands []*candidate
	var skipped []Skipped
	// A class folder may be a link (ImageFolder follows them), but not to the data set
	// itself or a folder above it: that class would hold every other class's images, and
	// would loop. Two classes that are one folder are refused too.
	rootReal, err := filepath.EvalSymlinks(root)
	if err != nil {
		return nil, nil, fmt.Errorf("dataset: open: %w", err)
	}
	seen := map[string]string{} // real class folder -> class folder
	for k, sr := range splitRoots {
		if sr == "" {
			continue
		}
		names, err := subdirs(sr)
		if err != nil {
			return nil, nil, err
		}
		srReal, err := filepath.EvalSymlinks(sr)
		if err != nil {
			return nil, nil, fmt.Errorf("dataset: open: %w", err)
		}
		for _, name := range names {
			ci, ok := classIndex[name]
			if !ok {
				problems = append(problems, layoutErrorf("%s: class %q is not in the training classes %v", sr, name, classes))
				continue
			}
			dir := filepath.Join(sr, name)
			real, err := filepath.EvalSymlinks(dir)
			if err != nil {
				return nil, nil, fmt.Errorf("dataset: open: %w", err)
			}
			if holds(real, rootReal) || holds(real, srReal) {
				problems = append(problems, layoutErrorf("%s: class folder %q is a link to %s, which holds the data set itself; refused", sr, name, real))
				continue
			}
			if other, dup := seen[real]; dup {
				problems = append(problems, layoutErrorf("%s and %s are the same folder (%s); refused", other, dir, real))
				continue
			}
			seen[real] = dir
			// The trailing separator makes WalkDir follow a linked class folder. Links
			// below it are not followed (a link to a folder is skipped), so there is no
			// cycle to walk into.
			err = filepath.WalkDir(dir+string(filepath.Separator), func(p string, e fs.DirEntry, err error) error {
				if cerr := ctx.Err(); cerr != nil {
					return cerr
				}
				if err != nil {
					cands = append(cands, &candidate{path: p, class: ci, split: k, err: unreadable(p, err)})
					if e != nil && e.IsDir() {
						return fs.SkipDir
					}
					return nil
				}
				if strings.HasPrefix(e.Name(), ".") {
					if e.IsDir() {
						return fs.SkipDir
					}
					return nil
				}
				if e.IsDir() {
					return nil
				}
				c := &candidate{path: p, class: ci, split: k}
				if !e.Type().IsRegular() {
					// Only regular files are ever opened: a named pipe called x.png would
					// block the open forever. A link is judged by its target.
					st, err := os.Stat(p)
					switch {
					case err != nil:
						c.err = unreadable(p, err) // dangling, or a cycle of links (ELOOP)
					case !st.Mode().IsRegular():
						c.err = notRegular(p, st.Mode())
					}
					if c.err != nil {
						cands = append(cands, c)
						return nil
					}
				}
				if !imageExts[strings.ToLower(filepath.Ext(p))] {
					c.err = &ImageError{Path: p, Reason: "not an image (unsupported extension)", Kind: ErrNotImage}
				}
				cands = append(cands, c)
				return nil
			})
			if err != nil {
				return nil, nil, fmt.Errorf("dataset: open %s: %w", root, err)
			}
		}
	}
	slices.SortFunc(cands, func(a, b *candidate) int { return strings.Compare(a.path, b.path) })

	if err := verify(ctx, cands, opt); err != nil {
		return nil, nil, err
	}
	var ok [3][][]item // [split][class]
	for k := range ok {
		ok[k] = make([][]item, len(classes))
	}
	skippedPerClass := make([]int, len(classes))
	for _, c := range cands {
		if c.err != nil {
			skipped = append(skipped, Skipped{Path: c.path, Reason: reasonOf(c.err)})
			skippedPerClass[c.class]++
			continue
		}
		ok[c.split][c.class] = append(ok[c.split][c.class], c.info)
	}
	slices.SortFunc(skipped, func(a, b Skipped) int { return strings.Compare(a.Path, b.Path) })
	d.skipped = skipped

	if len(classes) < 2 {
		problems = append([]error{layoutErrorf("%s: found %d class folder(s) %v, need at least 2", splitRoots[splitTrain], len(classes), classes)}, problems...)
	}
	if splitRoots[splitVal] == "" {
		// Not pre-split (or pre-split without val/): stratified seeded split.
		for ci := range classes {
			ok[splitTrain][ci], ok[splitVal][ci] = stratify(ok[splitTrain][ci], opt.ValSplit, opt.Seed, ci)
		}
	}
	for ci, name := range classes {
		if len(ok[splitTrain][ci]) == 0 {
			problems = append(problems, layoutErrorf("%s: class %q has no usable image (%d file(s) skipped)",
				splitRoots[splitTrain], name, skippedPerClass[ci]))
		}
	}
	newSubset := func(k int) *Subset {
		s := &Subset{name: splitNames[k], classes: classes, maxPixels: opt.MaxPixels, maxBytes: opt.MaxBytes}
		for _, items := range ok[k] {
			s.items = append(s.items, items...)
		}
		return s
	}
	d.train, d.val, d.test = newSubset(splitTrain), newSubset(splitVal), newSubset(splitTest)
	return d, problems, nil
}

// stratify sends round(frac*n) images of one class to validation, chosen
// by a Fisher–Yates shuffle of stream (tagSplit, seed, class); both parts
// keep the sorted file order. At least one image stays in training.
func stratify(items []item, frac float64, seed int64, class int) (train, val []item) {
	n := len(items)
	nv := int(math.Round(frac * float64(n)))
	if nv >= n {
		nv = n - 1
	}
	if nv <= 0 {
		return items, nil
	}
	perm := make([]int, n)
	for i := range perm {
		perm[i] = i
	}
	newRNG(tagSplit, seed, int64(class)).shuffle(perm)
	isVal := make([]bool, n)
	for _, i := range perm[:nv] {
		isVal[i] = true
	}
	for i, it := range items {
		if isVal[i] {
			val = append(val, it)
		} else {
			train = append(train, it)
		}
	}
	return train, val
}

// verify decodes every candidate that has no error yet, with opt.Workers
// goroutines. Under Strict it returns the error of the first failing file
// in path order: candidates (sorted by path) are handed out in order and
// every handed-out one is finished, so all files before the first failure
// have been checked.
func verify(parent context.Context, cands []*candidate, opt OpenOptions) error {
	ctx, cancel := context.WithCancel(parent)
	defer cancel()
	jobs := make(chan *candidate)
	var wg sync.WaitGroup
	for w := 0; w < opt.Workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c := range jobs {
				c.info, c.err = check(c.path, int32(c.class), opt)
				if c.err != nil && opt.Strict {
					cancel()
				}
			}
		}()
	}
feed:
	for _, c := range cands {
		if c.err != nil {
			if opt.Strict {
				break
			}
			continue
		}
		select {
		case jobs <- c:
		case <-ctx.Done():
			break feed
		}
	}
	close(jobs)
	wg.Wait()
	if err := parent.Err(); err != nil {
		return fmt.Errorf("dataset: open: %w", err)
	}
	if opt.Strict {
		for _, c := range cands {
			if c.err != nil {
				return c.err
			}
		}
	}
	return nil
}

// check decodes one file and records what the loader and Inspect need.
func check(path string, label int32, opt OpenOptions) (item, error) {
	st, err := os.Stat(path)
	if err != nil {
		return item{}, unreadable(path, err)
	}
	d, err := decodeFile(path, opt.MaxPixels, opt.MaxBytes)
	if err != nil {
		return item{}, err
	}
	w, h := d.displaySize()
	return item{path: path, label: label, size: st.Size(), mtime: st.ModTime().UnixNano(), w: w, h: h, format: d.format}, nil
}

// reasonOf returns the short reason of an error for Skipped.
func reasonOf(err error) string {
	var ie *ImageError
	if errors.As(err, &ie) {
		return ie.Reason
	}
	return err.Error()
}

func pathErrText(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

// holds reports whether dir is root or a folder above it (both real paths).
func holds(dir, root string) bool {
	if dir == root {
		return true
	}
	rel, err := filepath.Rel(dir, root)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) && !filepath.IsAbs(rel)
}

// subdirs lists the non-hidden sub-folders of dir, sorted byte-wise as
// Keras and torchvision sort class names.
func subdirs(dir string) ([]string, error) {
	es, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("dataset: open: %w", err)
	}
	var out []string
	for _, e := range es {
		if strings.HasPrefix(e.Name(), ".") {
			continue
		}
		isDir := e.IsDir()
		if e.Type()&fs.ModeSymlink != 0 { // follow links to folders, as ImageFolder does
			if st, err := os.Stat(filepath.Join(dir, e.Name())); err == nil && st.IsDir() {
				isDir = true
			}
		}
		if isDir {
			out = append(out, e.Name())
		}
	}
	slices.Sort(out)
	return out, nil
}
