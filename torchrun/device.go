package torchrun

import (
	"strconv"
	"sync"
)

var version = sync.OnceValue(func() string {
	v, err := nativeVersion()
	if err != nil {
		return "unknown (" + err.Error() + ")"
	}
	return v
})

// Version returns the version of the libtorch the process loaded, such as
// "2.11.0". It is read at run time from the library's build configuration
// (at::show_config(), the TORCH_VERSION build setting); if that ever lacks it,
// the version of the headers torchrun was compiled against is returned with
// " (headers)" appended.
func Version() string { return version() }

// cudaCount caches the first answer: loading libtorch_cuda.so is a one-time,
// process-wide event.
var cudaCount = sync.OnceValues(nativeCUDACount)

// CUDADevices returns the names ("cuda:0", ...) of the CUDA devices libtorch
// can use. libtorch_cuda.so is looked up by name, through the dynamic loader's
// search path (LD_LIBRARY_PATH, the binary's run path); when that library is
// absent (a CPU-only libtorch) or no GPU is usable, the result is empty with a
// nil error.
func CUDADevices() ([]string, error) {
	n, err := cudaCount()
	if err != nil || n == 0 {
		return nil, nil
	}
	names := make([]string, n)
	for i := range names {
		names[i] = "cuda:" + strconv.Itoa(i)
	}
	return names, nil
}

// CUDAUnavailable says why CUDADevices is empty, in libtorch's or the loader's words ("" when
// it is not).
func CUDAUnavailable() string {
	n, err := cudaCount()
	switch {
	case err != nil:
		return err.Error()
	case n == 0:
		return "libtorch reports 0 CUDA devices"
	}
	return ""
}
