//go:build cgo

package nvml

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>

// NVML's entry points, resolved with dlsym: no NVML header is needed, and
// the library is never linked. nvmlReturn_t is an enum (int); nvmlDevice_t
// an opaque pointer.
typedef void *fwb_dev;
typedef struct {
	void *h;
	void *init, *shutdown, *errstr, *count, *handle, *procs;
	int stride;            // the struct size procs is documented to fill
	const char *procs_name;
} fwb_nvml;

static char *fwb_dlerror(const char *what) {
	const char *e = dlerror();
	size_t n = strlen(what) + (e ? strlen(e) : 0) + 3;
	char *m = malloc(n);
	if (m) {
		strcpy(m, what);
		if (e) {
			strcat(m, ": ");
			strcat(m, e);
		}
	}
	return m;
}

// fwb_load dlopens name into a new fwb_nvml (*out); on failure it returns a
// malloc'd message and *out is NULL.
static char *fwb_load(const char *name, fwb_nvml **out) {
	*out = NULL;
	dlerror();
	void *h = dlopen(name, RTLD_NOW | RTLD_LOCAL);
	if (!h) return fwb_dlerror("dlopen");
	fwb_nvml *l = calloc(1, sizeof *l);
	if (!l) {
		dlclose(h);
		return NULL;
	}
	l->h = h;
	const char *need[] = {"nvmlInit_v2", "nvmlShutdown", "nvmlErrorString", "nvmlDeviceGetCount_v2", "nvmlDeviceGetHandleByIndex_v2"};
	void **dst[] = {&l->init, &l->shutdown, &l->errstr, &l->count, &l->handle};
	for (int i = 0; i < 5; i++) {
		*dst[i] = dlsym(h, need[i]);
		if (!*dst[i]) {
			char *m = fwb_dlerror(need[i]);
			dlclose(h);
			free(l);
			return m;
		}
	}
	// The newest process query first; each fills a larger struct.
	const char *procs[] = {"nvmlDeviceGetComputeRunningProcesses_v3", "nvmlDeviceGetComputeRunningProcesses_v2", "nvmlDeviceGetComputeRunningProcesses"};
	const int stride[] = {24, 24, 16};
	for (int i = 0; i < 3 && !l->procs; i++) {
		l->procs = dlsym(h, procs[i]);
		l->stride = stride[i];
		l->procs_name = procs[i];
	}
	if (!l->procs) {
		char *m = fwb_dlerror("nvmlDeviceGetComputeRunningProcesses");
		dlclose(h);
		free(l);
		return m;
	}
	*out = l;
	return NULL;
}

static int fwb_init(fwb_nvml *l) { return ((int (*)(void))l->init)(); }
static int fwb_shutdown(fwb_nvml *l) { return ((int (*)(void))l->shutdown)(); }
static const char *fwb_errstr(fwb_nvml *l, int r) { return ((const char *(*)(int))l->errstr)(r); }
static int fwb_count(fwb_nvml *l, unsigned int *n) { return ((int (*)(unsigned int *))l->count)(n); }
static int fwb_handle(fwb_nvml *l, unsigned int i, fwb_dev *d) { return ((int (*)(unsigned int, fwb_dev *))l->handle)(i, d); }
static int fwb_procs(fwb_nvml *l, fwb_dev d, unsigned int *n, void *buf) {
	return ((int (*)(fwb_dev, unsigned int *, void *))l->procs)(d, n, buf);
}

static void fwb_unload(fwb_nvml *l) {
	if (!l) return;
	dlclose(l->h);
	free(l);
}
*/
import "C"

import (
	"fmt"
	"runtime"
	"sync"
	"unsafe"
)

// NVML's return codes that this package tells apart (nvml.h, nvmlReturn_t).
const (
	nvmlSuccess          = 0
	nvmlInsufficientSize = 7
)

// Lib is an initialised NVML. It is safe for concurrent use.
type Lib struct {
	mu      sync.Mutex
	c       *C.fwb_nvml // nil after Close
	cleanup runtime.Cleanup
}

// Open loads libnvidia-ml.so.1 and initialises NVML (nvmlInit_v2). Where the
// library or one of its entry points is missing, or NVML cannot start (no
// driver loaded, no permission), the error wraps ErrUnavailable. The caller
// closes the Lib.
func Open() (*Lib, error) {
	name := C.CString(libName)
	defer C.free(unsafe.Pointer(name))
	var c *C.fwb_nvml
	if msg := C.fwb_load(name, &c); msg != nil || c == nil {
		why := "out of memory"
		if msg != nil {
			why = C.GoString(msg)
			C.free(unsafe.Pointer(msg))
		}
		return nil, fmt.Errorf("nvml: %w: %s", ErrUnavailable, why)
	}
	if r := C.fwb_init(c); r != nvmlSuccess {
		err := fmt.Errorf("nvml: %w: nvmlInit_v2: %s (code %d)", ErrUnavailable, C.GoString(C.fwb_errstr(c, r)), int(r))
		C.fwb_unload(c)
		return nil, err
	}
	l := &Lib{c: c}
	// A safety net only: Close is the plan.
	l.cleanup = runtime.AddCleanup(l, func(c *C.fwb_nvml) {
		C.fwb_shutdown(c)
		C.fwb_unload(c)
	}, c)
	return l, nil
}

// errorf turns an NVML return code into an error: "nvml: <op>: <NVML's message> (code N)".
func (l *Lib) errorf(r C.int, format string, args ...any) error {
	return fmt.Errorf("nvml: %s: %s (code %d)", fmt.Sprintf(format, args...), C.GoString(C.fwb_errstr(l.c, r)), int(r))
}

// DeviceCount is the number of GPUs NVML sees (nvmlDeviceGetCount_v2), in
// NVML's order, which CUDA_VISIBLE_DEVICES does not change.
func (l *Lib) DeviceCount() (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.c == nil {
		return 0, ErrClosed
	}
	return l.deviceCount()
}

func (l *Lib) deviceCount() (int, error) {
	var n C.uint
	if r := C.fwb_count(l.c, &n); r != nvmlSuccess {
		return 0, l.errorf(r, "device count")
	}
	return int(n), nil
}

// ProcessUsedBytes is the GPU memory that process pid holds on device (NVML's
// index; AllDevices sums over every GPU), as NVML reports it: its CUDA
// context included (see the package doc). A process that holds none there
// (no CUDA context yet, or a pid that NVML names otherwise) gives an error
// wrapping ErrNotListed. Where the driver reports no per-process figure the
// error wraps ErrUnavailable.
func (l *Lib) ProcessUsedBytes(device, pid int) (int64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.c == nil {
		return 0, ErrClosed
	}
	devs := []int{device}
	if device == AllDevices {
		n, err := l.deviceCount()
		if err != nil {
			return 0, err
		}
		devs = devs[:0]
		for i := range n {
			devs = append(devs, i)
		}
	} else if device < 0 {
		return 0, fmt.Errorf("nvml: device %d: want an index >= 0 or AllDevices", device)
	}
	var sum int64
	listed := false
	for _, d := range devs {
		ps, err := l.procs(d)
		if err != nil {
			return 0, err
		}
		n, ok, err := usedBy(ps, pid)
		if err != nil {
			return 0, fmt.Errorf("nvml: device %d: %w", d, err)
		}
		sum += n
		listed = listed || ok
	}
	if !listed {
		return 0, fmt.Errorf("nvml: %s: process %d %w", deviceName(device), pid, ErrNotListed)
	}
	return sum, nil
}

// procs lists the compute processes on device d.
func (l *Lib) procs(d int) ([]proc, error) {
	var h C.fwb_dev
	if r := C.fwb_handle(l.c, C.uint(d), &h); r != nvmlSuccess {
		return nil, l.errorf(r, "device %d", d)
	}
	capacity := 32
	for range 4 { // the list may grow between the calls
		size := capacity * maxStride
		buf := C.malloc(C.size_t(size))
		if buf == nil {
			return nil, fmt.Errorf("nvml: device %d: out of memory for %d process entries", d, capacity)
		}
		b := unsafe.Slice((*byte)(buf), size)
		for i := range b {
			b[i] = sentinel
		}
		n := C.uint(capacity)
		r := C.fwb_procs(l.c, h, &n, buf)
		if r == nvmlSuccess {
			var ps []proc
			if int(n) <= capacity {
				ps = parseProcs(b, int(n), int(l.c.stride))
			}
			C.free(buf)
			if int(n) > capacity {
				return nil, fmt.Errorf("nvml: device %d: %s reported %d processes for room for %d", d, C.GoString(l.c.procs_name), int(n), capacity)
			}
			return ps, nil
		}
		C.free(buf)
		if r != nvmlInsufficientSize {
			return nil, l.errorf(r, "device %d: %s", d, C.GoString(l.c.procs_name))
		}
		capacity = int(n) + 16
	}
	return nil, fmt.Errorf("nvml: device %d: the process list kept growing", d)
}

// Close shuts NVML down (nvmlShutdown) and unloads the library. It is safe to
// call more than once; later calls on l return ErrClosed.
func (l *Lib) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.c == nil {
		return nil
	}
	l.cleanup.Stop()
	r := C.fwb_shutdown(l.c)
	var err error
	if r != nvmlSuccess {
		err = l.errorf(r, "shutdown")
	}
	C.fwb_unload(l.c)
	l.c = nil
	return err
}
