//go:build !nohdf5

package keras

// The package's only cgo file: a thin layer over the HDF5 C library (libhdf5,
// found through pkg-config; Debian's libhdf5-dev). Every call runs inside an
// h5 session (see begin), on one locked OS thread, because HDF5 keeps its
// error stack per thread.

/*
#cgo pkg-config: hdf5
#include <stdlib.h>
#include <string.h>
#include <hdf5.h>

// fwb_begin silences HDF5's automatic error printing on the calling thread
// and turns off dynamically loaded filter plugins: a weight file must never
// make the library load code.
static void fwb_begin(void) {
	H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
	H5PLset_loading_state(0);
}

typedef struct {
	const char *first, *last;
} fwb_msgs;

static herr_t fwb_walk(unsigned n, const H5E_error2_t *e, void *data) {
	fwb_msgs *m = data;
	if (e->desc == NULL || e->desc[0] == 0) {
		return 0;
	}
	if (m->first == NULL) {
		m->first = e->desc;
	}
	m->last = e->desc;
	return 0;
}

// fwb_error writes the outermost and the innermost description on the calling
// thread's error stack ("outer: inner") into buf and clears the stack.
static void fwb_error(char *buf, size_t cap) {
	fwb_msgs m = {NULL, NULL};
	buf[0] = 0;
	H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, fwb_walk, &m);
	if (m.first != NULL) {
		if (m.last != NULL && strncmp(m.last, m.first, strlen(m.first)) != 0) {
			snprintf(buf, cap, "%s: %s", m.first, m.last);
		} else {
			snprintf(buf, cap, "%s", m.last != NULL ? m.last : m.first);
		}
	}
	H5Eclear2(H5E_DEFAULT);
}

// fwb_keep and fwb_restore keep the error stack of a failed call across the
// clean-up calls after it (every HDF5 API call clears the stack on entry).
static hid_t fwb_keep(int failed) {
	return failed ? H5Eget_current_stack() : -1;
}

static void fwb_restore(hid_t stack) {
	if (stack >= 0) {
		H5Eset_current_stack(stack);
	}
}

static hid_t fwb_open(const char *path) {
	hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
	if (fapl < 0) {
		return -1;
	}
	H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG);
	hid_t f = H5Fopen(path, H5F_ACC_RDONLY, fapl);
	hid_t es = fwb_keep(f < 0);
	H5Pclose(fapl);
	fwb_restore(es);
	return f;
}

// fwb_create_mem creates an HDF5 file in memory (the core driver without a
// backing store); fwb_image copies its bytes out.
static hid_t fwb_create_mem(void) {
	hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
	if (fapl < 0) {
		return -1;
	}
	hid_t f = -1;
	if (H5Pset_fapl_core(fapl, 1 << 20, 0) >= 0 && H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG) >= 0) {
		f = H5Fcreate("fwbench-keras-export.h5", H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
	}
	hid_t es = fwb_keep(f < 0);
	H5Pclose(fapl);
	fwb_restore(es);
	return f;
}

static ssize_t fwb_image(hid_t f, void *buf, size_t n) {
	if (H5Fflush(f, H5F_SCOPE_GLOBAL) < 0) {
		return -1;
	}
	return H5Fget_file_image(f, buf, n);
}

static ssize_t fwb_filesize(hid_t f) {
	hsize_t n = 0;
	if (H5Fget_filesize(f, &n) < 0) {
		return -1;
	}
	return (ssize_t)n;
}

// fwb_link returns 0 when loc has a hard link called name, 1 for a link of
// another kind (soft, external), 2 when there is none, -1 on error.
static int fwb_link(hid_t loc, const char *name) {
	htri_t ok = H5Lexists(loc, name, H5P_DEFAULT);
	if (ok < 0) {
		return -1;
	}
	if (ok == 0) {
		return 2;
	}
	H5L_info_t info;
	if (H5Lget_info(loc, name, &info, H5P_DEFAULT) < 0) {
		return -1;
	}
	return info.type == H5L_TYPE_HARD ? 0 : 1;
}

// fwb_kind returns 1 for a group, 2 for a dataset, 0 for anything else.
static int fwb_kind(hid_t id) {
	switch (H5Iget_type(id)) {
	case H5I_GROUP:
		return 1;
	case H5I_DATASET:
		return 2;
	default:
		return 0;
	}
}

static long long fwb_nlinks(hid_t g) {
	H5G_info_t info;
	if (H5Gget_info(g, &info) < 0) {
		return -1;
	}
	return (long long)info.nlinks;
}

static ssize_t fwb_link_name(hid_t g, hsize_t i, char *buf, size_t n) {
	return H5Lget_name_by_idx(g, ".", H5_INDEX_NAME, H5_ITER_INC, i, buf, n, H5P_DEFAULT);
}

// fwb_attr_strings reads attribute name of obj as strings: *out receives a
// malloc'd buffer holding them one after another, each NUL-terminated, and
// the count is returned. An attribute without elements (Keras writes an empty
// float64 array for a layer without weights) gives 0 strings. Returns -1 on an
// HDF5 error, -2 when the attribute holds something other than strings, -3
// when it is larger than maxbytes.
static long long fwb_attr_strings(hid_t obj, const char *name, size_t maxbytes, char **out) {
	long long ret = -1;
	hid_t attr = -1, space = -1, ftype = -1, mtype = -1;
	char **vl = NULL;
	char *fixed = NULL;
	*out = NULL;
	attr = H5Aopen(obj, name, H5P_DEFAULT);
	if (attr < 0) goto done;
	space = H5Aget_space(attr);
	if (space < 0) goto done;
	hssize_t n = H5Sget_simple_extent_npoints(space);
	if (n < 0) goto done;
	if (n == 0) {
		ret = 0;
		goto done;
	}
	ftype = H5Aget_type(attr);
	if (ftype < 0) goto done;
	if (H5Tget_class(ftype) != H5T_STRING) {
		ret = -2;
		goto done;
	}
	H5T_cset_t cset = H5Tget_cset(ftype);
	htri_t variable = H5Tis_variable_str(ftype);
	if (variable < 0) goto done;
	if ((size_t)n > maxbytes / sizeof(char *)) {
		ret = -3;
		goto done;
	}
	size_t total = 0;
	if (variable) {
		mtype = H5Tcopy(H5T_C_S1);
		if (mtype < 0 || H5Tset_size(mtype, H5T_VARIABLE) < 0 || H5Tset_cset(mtype, cset) < 0) goto done;
		vl = calloc((size_t)n, sizeof(char *));
		if (vl == NULL) goto done;
		if (H5Aread(attr, mtype, vl) < 0) {
			free(vl);
			vl = NULL;
			goto done;
		}
		for (hssize_t i = 0; i < n; i++) {
			total += (vl[i] ? strlen(vl[i]) : 0) + 1;
		}
		if (total > maxbytes) {
			ret = -3;
			goto done;
		}
		char *buf = malloc(total ? total : 1), *p = buf;
		if (buf == NULL) goto done;
		for (hssize_t i = 0; i < n; i++) {
			size_t l = vl[i] ? strlen(vl[i]) : 0;
			memcpy(p, vl[i] ? vl[i] : "", l);
			p[l] = 0;
			p += l + 1;
		}
		*out = buf;
		ret = n;
	} else {
		size_t size = H5Tget_size(ftype);
		if (size == 0 || size > maxbytes || (size_t)n > maxbytes / size) {
			ret = size == 0 ? -1 : -3;
			goto done;
		}
		mtype = H5Tcopy(H5T_C_S1);
		if (mtype < 0 || H5Tset_size(mtype, size) < 0 || H5Tset_strpad(mtype, H5T_STR_NULLPAD) < 0 ||
		    H5Tset_cset(mtype, cset) < 0) goto done;
		fixed = calloc((size_t)n, size);
		if (fixed == NULL) goto done;
		if (H5Aread(attr, mtype, fixed) < 0) goto done;
		char *buf = malloc((size_t)n * (size + 1)), *p = buf;
		if (buf == NULL) goto done;
		for (hssize_t i = 0; i < n; i++) {
			const char *s = fixed + (size_t)i * size;
			size_t l = strnlen(s, size);
			while (l > 0 && s[l - 1] == ' ') {
				l--; // space-padded strings
			}
			memcpy(p, s, l);
			p[l] = 0;
			p += l + 1;
		}
		*out = buf;
		ret = n;
	}
done:;
	hid_t es = fwb_keep(ret == -1);
	if (vl != NULL) {
#if H5_VERSION_GE(1, 12, 0)
		H5Treclaim(mtype, space, H5P_DEFAULT, vl);
#else
		H5Dvlen_reclaim(mtype, space, H5P_DEFAULT, vl);
#endif
		free(vl);
	}
	free(fixed);
	if (mtype >= 0) H5Tclose(mtype);
	if (ftype >= 0) H5Tclose(ftype);
	if (space >= 0) H5Sclose(space);
	if (attr >= 0) H5Aclose(attr);
	fwb_restore(es);
	return ret;
}

// fwb_dataset_info fills the rank (-1 for a scalar or null dataspace), up to
// 8 dimensions, whether the element type is a floating-point number, the
// storage layout (H5D_layout_t) and the number of external files, and the
// bytes allocated in the file. Returns 0, or -1 on an HDF5 error.
static int fwb_dataset_info(hid_t ds, int *rank, hsize_t *dims, int *isfloat, int *layout, int *external,
                            unsigned long long *storage) {
	int ret = -1;
	hid_t space = -1, type = -1, dcpl = -1;
	space = H5Dget_space(ds);
	if (space < 0) goto done;
	H5S_class_t cls = H5Sget_simple_extent_type(space);
	if (cls == H5S_SIMPLE) {
		int r = H5Sget_simple_extent_ndims(space);
		if (r < 0) goto done;
		*rank = r;
		if (r <= 8 && H5Sget_simple_extent_dims(space, dims, NULL) < 0) goto done;
	} else {
		*rank = -1;
	}
	type = H5Dget_type(ds);
	if (type < 0) goto done;
	*isfloat = H5Tget_class(type) == H5T_FLOAT;
	dcpl = H5Dget_create_plist(ds);
	if (dcpl < 0) goto done;
	*layout = (int)H5Pget_layout(dcpl);
	*external = H5Pget_external_count(dcpl);
	*storage = (unsigned long long)H5Dget_storage_size(ds);
	ret = 0;
done:;
	hid_t es = fwb_keep(ret < 0);
	if (dcpl >= 0) H5Pclose(dcpl);
	if (type >= 0) H5Tclose(type);
	if (space >= 0) H5Sclose(space);
	fwb_restore(es);
	return ret;
}

static herr_t fwb_read_float(hid_t ds, float *buf) {
	return H5Dread(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf);
}

// fwb_create_group creates a group without modification times, so that the
// same tensors always give the same bytes (h5py's default too).
static hid_t fwb_create_group(hid_t loc, const char *name) {
	hid_t gcpl = H5Pcreate(H5P_GROUP_CREATE);
	if (gcpl < 0) {
		return -1;
	}
	hid_t g = -1;
	if (H5Pset_obj_track_times(gcpl, 0) >= 0) {
		g = H5Gcreate2(loc, name, H5P_DEFAULT, gcpl, H5P_DEFAULT);
	}
	hid_t es = fwb_keep(g < 0);
	H5Pclose(gcpl);
	fwb_restore(es);
	return g;
}

// fwb_write_string_attr writes a scalar variable-length UTF-8 string
// attribute, as h5py writes a Python str.
static herr_t fwb_write_string_attr(hid_t obj, const char *name, const char *value) {
	herr_t ret = -1;
	hid_t type = -1, space = -1, attr = -1;
	type = H5Tcopy(H5T_C_S1);
	if (type < 0 || H5Tset_size(type, H5T_VARIABLE) < 0 || H5Tset_cset(type, H5T_CSET_UTF8) < 0) goto done;
	space = H5Screate(H5S_SCALAR);
	if (space < 0) goto done;
	attr = H5Acreate2(obj, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
	if (attr < 0) goto done;
	ret = H5Awrite(attr, type, &value);
done:;
	hid_t es = fwb_keep(ret < 0);
	if (attr >= 0) H5Aclose(attr);
	if (space >= 0) H5Sclose(space);
	if (type >= 0) H5Tclose(type);
	fwb_restore(es);
	return ret;
}

// fwb_write_dataset writes a contiguous little-endian float32 dataset without
// modification times.
static herr_t fwb_write_dataset(hid_t loc, const char *name, int rank, const hsize_t *dims, const float *data) {
	herr_t ret = -1;
	hid_t space = -1, dcpl = -1, ds = -1;
	space = H5Screate_simple(rank, dims, NULL);
	if (space < 0) goto done;
	dcpl = H5Pcreate(H5P_DATASET_CREATE);
	if (dcpl < 0 || H5Pset_obj_track_times(dcpl, 0) < 0) goto done;
	ds = H5Dcreate2(loc, name, H5T_IEEE_F32LE, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
	if (ds < 0) goto done;
	ret = H5Dwrite(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, data);
done:;
	hid_t es = fwb_keep(ret < 0);
	if (ds >= 0) H5Dclose(ds);
	if (dcpl >= 0) H5Pclose(dcpl);
	if (space >= 0) H5Sclose(space);
	fwb_restore(es);
	return ret;
}

static const char *fwb_version(void) {
	return H5_VERS_INFO;
}
*/
import "C"

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"unsafe"
)

// h5mu serialises all HDF5 calls: Debian builds libhdf5 thread-safe, but
// other builds are not, and the calls are cheap next to the I/O they do.
var h5mu sync.Mutex

// begin starts an h5 session: the calling goroutine keeps its OS thread (HDF5's
// error stack is per thread) and holds h5mu until the returned func is called.
func begin() (end func()) {
	runtime.LockOSThread()
	h5mu.Lock()
	C.fwb_begin()
	return func() {
		h5mu.Unlock()
		runtime.UnlockOSThread()
	}
}

// h5error returns an error for a failed HDF5 call: what, then HDF5's own words.
func h5error(what string) error {
	var buf [1024]C.char
	C.fwb_error(&buf[0], C.size_t(len(buf)))
	if msg := C.GoString(&buf[0]); msg != "" {
		return fmt.Errorf("%s: %s", what, msg)
	}
	return errors.New(what)
}

// libraryVersion returns the version line of the HDF5 headers the package was
// compiled against, e.g. "HDF5 library version: 1.10.8".
func libraryVersion() string { return C.GoString(C.fwb_version()) }

// h5obj is an open HDF5 file, group or dataset. Close it; closing a file
// (H5F_CLOSE_STRONG) also closes everything still open in it.
type h5obj struct {
	id   C.hid_t
	path string // for messages: "/" for a file, else the object's path
}

func (o h5obj) close() {
	if o.id < 0 {
		return
	}
	switch o.path {
	case "/":
		C.H5Fclose(o.id)
	default:
		C.H5Oclose(o.id)
	}
}

// openFile opens path read-only.
func openFile(path string) (h5obj, error) {
	cs := C.CString(path)
	defer C.free(unsafe.Pointer(cs))
	id := C.fwb_open(cs)
	if id < 0 {
		return h5obj{id: -1}, h5error("not a readable HDF5 file")
	}
	return h5obj{id: id, path: "/"}, nil
}

// fileSize returns the size of the open file in bytes.
func (o h5obj) fileSize() (int64, error) {
	n := C.fwb_filesize(o.id)
	if n < 0 {
		return 0, h5error("file size")
	}
	return int64(n), nil
}

// join returns the path of child name in o.
func (o h5obj) join(name string) string {
	if o.path == "/" {
		return "/" + name
	}
	return o.path + "/" + name
}

// has reports whether o holds a hard link called name (a single path
// component).
func (o h5obj) has(name string) (bool, error) {
	cs := C.CString(name)
	defer C.free(unsafe.Pointer(cs))
	switch C.fwb_link(o.id, cs) {
	case 0:
		return true, nil
	case 2:
		return false, nil
	case 1:
		return false, fmt.Errorf("%s is a soft or external link, which a Keras weight file never holds", o.join(name))
	default:
		return false, h5error(o.join(name))
	}
}

// objKind is what an HDF5 object is.
type objKind int

const (
	kindOther objKind = iota
	kindGroup
	kindDataset
)

// open opens the object at name, a path relative to o whose components must
// all be hard links (a weight file that points elsewhere is refused).
func (o h5obj) open(name string) (h5obj, objKind, error) {
	cur := o
	parts := strings.Split(name, "/")
	for i, part := range parts {
		if part == "" || part == "." || part == ".." {
			if cur != o {
				cur.close()
			}
			return h5obj{id: -1}, kindOther, fmt.Errorf("%s: bad path component %q", o.join(name), part)
		}
		ok, err := cur.has(part)
		if err == nil && !ok {
			err = fmt.Errorf("%s: not found", cur.join(part))
		}
		if err != nil { // the message is built: closing may clear HDF5's error stack now
			if cur != o {
				cur.close()
			}
			return h5obj{id: -1}, kindOther, err
		}
		cs := C.CString(part)
		id := C.H5Oopen(cur.id, cs, C.H5P_DEFAULT)
		C.free(unsafe.Pointer(cs))
		next := h5obj{id: id, path: cur.join(part)}
		if id < 0 {
			err := h5error(next.path)
			if cur != o {
				cur.close()
			}
			return h5obj{id: -1}, kindOther, err
		}
		if cur != o {
			cur.close()
		}
		kind := objKind(C.fwb_kind(id))
		if i < len(parts)-1 && kind != kindGroup {
			next.close()
			return h5obj{id: -1}, kindOther, fmt.Errorf("%s: not a group", next.path)
		}
		cur = next
		if i == len(parts)-1 {
			return cur, kind, nil
		}
	}
	return h5obj{id: -1}, kindOther, fmt.Errorf("%s: empty path", o.path)
}

// group opens the group at name (see open).
func (o h5obj) group(name string) (h5obj, error) {
	g, kind, err := o.open(name)
	if err != nil {
		return h5obj{id: -1}, err
	}
	if kind != kindGroup {
		g.close()
		return h5obj{id: -1}, fmt.Errorf("%s: not a group", g.path)
	}
	return g, nil
}

// maxLinks bounds the members of one group: a VGG weight file has a few dozen.
const maxLinks = 1 << 16

// children returns the names of the links in group o, sorted by name.
func (o h5obj) children() ([]string, error) {
	n := C.fwb_nlinks(o.id)
	if n < 0 {
		return nil, h5error(o.path)
	}
	if n > maxLinks {
		return nil, fmt.Errorf("%s: %d members, more than a weight file has (%d)", o.path, n, maxLinks)
	}
	names := make([]string, 0, n)
	var buf [256]C.char
	for i := range C.hsize_t(n) {
		l := C.fwb_link_name(o.id, i, &buf[0], C.size_t(len(buf)))
		if l < 0 {
			return nil, h5error(o.path)
		}
		if int(l) < len(buf) {
			names = append(names, C.GoString(&buf[0]))
			continue
		}
		long := make([]C.char, l+1)
		if C.fwb_link_name(o.id, i, &long[0], C.size_t(len(long))) < 0 {
			return nil, h5error(o.path)
		}
		names = append(names, C.GoString(&long[0]))
	}
	return names, nil
}

// hasAttr reports whether o has an attribute called name.
func (o h5obj) hasAttr(name string) (bool, error) {
	cs := C.CString(name)
	defer C.free(unsafe.Pointer(cs))
	ok := C.H5Aexists(o.id, cs)
	if ok < 0 {
		return false, h5error(fmt.Sprintf("%s: attribute %s", o.path, name))
	}
	return ok > 0, nil
}

// maxAttrBytes bounds one string attribute (Keras splits its lists at 64 KiB).
const maxAttrBytes = 16 << 20

// stringsAttr reads attribute name of o, a string or an array of strings
// (fixed or variable length); an attribute without elements gives none.
func (o h5obj) stringsAttr(name string) ([]string, error) {
	cs := C.CString(name)
	defer C.free(unsafe.Pointer(cs))
	var out *C.char
	n := C.fwb_attr_strings(o.id, cs, maxAttrBytes, &out)
	switch {
	case n == -2:
		return nil, fmt.Errorf("%s: attribute %s does not hold strings", o.path, name)
	case n == -3:
		return nil, fmt.Errorf("%s: attribute %s is larger than %d bytes", o.path, name, maxAttrBytes)
	case n < 0:
		return nil, h5error(fmt.Sprintf("%s: attribute %s", o.path, name))
	}
	defer C.free(unsafe.Pointer(out))
	ss := make([]string, n)
	p := out
	for i := range ss {
		ss[i] = C.GoString(p)
		p = (*C.char)(unsafe.Add(unsafe.Pointer(p), len(ss[i])+1))
	}
	return ss, nil
}

// info returns what a dataset holds.
func (o h5obj) info() (datasetInfo, error) {
	var rank, isFloat, layout, external C.int
	var storage C.ulonglong
	var dims [8]C.hsize_t
	if C.fwb_dataset_info(o.id, &rank, &dims[0], &isFloat, &layout, &external, &storage) < 0 {
		return datasetInfo{}, h5error(o.path)
	}
	if int(rank) > len(dims) {
		return datasetInfo{}, fmt.Errorf("%s: %d dimensions", o.path, rank)
	}
	d := datasetInfo{isFloat: isFloat != 0, layout: int(layout), external: int(external), storage: int64(storage)}
	for i := 0; i < int(rank); i++ {
		if uint64(dims[i]) > 1<<40 {
			return datasetInfo{}, fmt.Errorf("%s: dimension %d is %d", o.path, i, uint64(dims[i]))
		}
		d.shape = append(d.shape, int(dims[i]))
	}
	return d, nil
}

// The storage layouts (H5D_layout_t) a weight dataset may use.
const (
	layoutCompact    = C.H5D_COMPACT
	layoutContiguous = C.H5D_CONTIGUOUS
	layoutChunked    = C.H5D_CHUNKED
)

// readFloat32 reads the whole dataset, converted by HDF5 to float32, into
// dst, which must hold exactly its elements.
func (o h5obj) readFloat32(dst []float32) error {
	if len(dst) == 0 {
		return nil
	}
	if C.fwb_read_float(o.id, (*C.float)(unsafe.Pointer(&dst[0]))) < 0 {
		return h5error(o.path)
	}
	return nil
}

// createMemFile creates an empty HDF5 file in memory.
func createMemFile() (h5obj, error) {
	id := C.fwb_create_mem()
	if id < 0 {
		return h5obj{id: -1}, h5error("create an in-memory HDF5 file")
	}
	return h5obj{id: id, path: "/"}, nil
}

// image returns the bytes of a file made by createMemFile.
func (o h5obj) image() ([]byte, error) {
	n := C.fwb_image(o.id, nil, 0)
	if n < 0 {
		return nil, h5error("file image")
	}
	buf := make([]byte, int(n))
	if len(buf) == 0 {
		return nil, errors.New("file image: empty")
	}
	if m := C.fwb_image(o.id, unsafe.Pointer(&buf[0]), C.size_t(len(buf))); m != n {
		return nil, h5error("file image")
	}
	return buf, nil
}

// createGroup creates group name (one path component) in o.
func (o h5obj) createGroup(name string) (h5obj, error) {
	cs := C.CString(name)
	defer C.free(unsafe.Pointer(cs))
	id := C.fwb_create_group(o.id, cs)
	if id < 0 {
		return h5obj{id: -1}, h5error("create group " + o.join(name))
	}
	return h5obj{id: id, path: o.join(name)}, nil
}

// setStringAttr writes a scalar UTF-8 string attribute on o.
func (o h5obj) setStringAttr(name, value string) error {
	cn, cv := C.CString(name), C.CString(value)
	defer C.free(unsafe.Pointer(cn))
	defer C.free(unsafe.Pointer(cv))
	if C.fwb_write_string_attr(o.id, cn, cv) < 0 {
		return h5error(fmt.Sprintf("%s: write attribute %s", o.path, name))
	}
	return nil
}

// writeFloat32 writes dataset name in o: shape and row-major data.
func (o h5obj) writeFloat32(name string, shape []int, data []float32) error {
	if len(shape) == 0 || len(shape) > 8 || len(data) == 0 {
		return fmt.Errorf("%s: cannot write shape %v with %d values", o.join(name), shape, len(data))
	}
	var dims [8]C.hsize_t
	for i, d := range shape {
		dims[i] = C.hsize_t(d)
	}
	cs := C.CString(name)
	defer C.free(unsafe.Pointer(cs))
	if C.fwb_write_dataset(o.id, cs, C.int(len(shape)), &dims[0], (*C.float)(unsafe.Pointer(&data[0]))) < 0 {
		return h5error("write " + o.join(name))
	}
	return nil
}
