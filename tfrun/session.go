package tfrun

import (
	"fmt"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"

	tf "github.com/galeone/tensorflow/tensorflow/go"
	config "github.com/galeone/tensorflow/tensorflow/go/core/protobuf/for_core_protos_go_proto"
	"github.com/galeone/tensorflow/tensorflow/go/op"
	"google.golang.org/protobuf/proto"

	"github.com/fwbench/fwbench/recipe"
)

// envOwnPool is read once by TensorFlow, when the first CPU device is made.
// Unset, every session in the process shares one intra-op thread pool
// sized by the first session's intra_op_parallelism_threads (LocalDevice in
// tensorflow/core/common_runtime/local_device.cc), so Config.Threads of any
// later Trainer would be ignored. tfrun sets it to 1 unless the program
// already chose a value, so that each session owns a pool of the size it
// asks for.
const envOwnPool = "TF_OVERRIDE_GLOBAL_THREADPOOL"

func init() {
	if _, ok := os.LookupEnv(envOwnPool); !ok {
		os.Setenv(envOwnPool, "1")
	}
}

// Version returns the version of the loaded TensorFlow library (TF_Version),
// e.g. "2.21.0".
func Version() string { return tf.Version() }

// sessionConfig serialises the ConfigProto of a Trainer's session:
// explicit intra- and inter-op thread counts in per-session pools, soft
// placement (ops without a kernel for the chosen GPU run on the CPU), GPU
// memory that grows on demand instead of being reserved whole, and, on the
// CPU, no GPU devices at all.
func sessionConfig(intra, inter int, dev recipe.Device, soft bool) ([]byte, error) {
	c := &config.ConfigProto{
		IntraOpParallelismThreads: int32(intra),
		InterOpParallelismThreads: int32(inter),
		UsePerSessionThreads:      true,
		AllowSoftPlacement:        soft,
		GpuOptions:                &config.GPUOptions{AllowGrowth: true},
	}
	if !dev.GPU {
		c.DeviceCount = map[string]int32{"GPU": 0}
	}
	return proto.Marshal(c)
}

// listDevices returns the devices that the library offers to a session: full
// names such as "/job:localhost/replica:0/task:0/device:CPU:0", sorted.
func listDevices() ([]tf.Device, error) {
	cfg, err := sessionConfig(1, 1, recipe.Device{GPU: true}, true)
	if err != nil {
		return nil, err
	}
	g := tf.NewGraph()
	defer freeGraph(g)
	s, err := tf.NewSession(g, &tf.SessionOptions{Config: cfg})
	if err != nil {
		return nil, err
	}
	defer s.Close()
	ds, err := s.ListDevices()
	if err != nil {
		return nil, err
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i].Name < ds[j].Name })
	return ds, nil
}

// CUDADevices lists the GPUs that the loaded libtensorflow can use, as
// recipe.Config.Device values ("cuda:0", "cuda:1", ...). It returns an empty list
// and no error with a CPU-only library such as the tensorflow-cpu build.
func CUDADevices() (names []string, err error) {
	defer recoverTo(&err, "cuda devices")
	ds, err := listDevices()
	if err != nil {
		return nil, fmt.Errorf("tfrun: list devices: %w", err)
	}
	names = []string{}
	for _, d := range ds {
		if d.Type == "GPU" {
			i := strings.LastIndex(d.Name, ":")
			names = append(names, "cuda:"+d.Name[i+1:])
		}
	}
	return names, nil
}

// checkDevice makes sure the library really has dev before a Trainer relies
// on soft placement, which would otherwise move a whole model silently to
// the CPU. It places one constant on dev in a session without soft
// placement, so a missing device fails with TensorFlow's own message, and
// adds the list of devices the library has.
func checkDevice(dev recipe.Device) error {
	if !dev.GPU {
		return nil
	}
	cfg, err := sessionConfig(1, 1, dev, false)
	if err != nil {
		return err
	}
	s := op.NewScope().WithDevice(tfDevice(dev))
	c := op.Const(s.SubScope("probe"), float32(0))
	g, err := s.Finalize()
	if err != nil {
		return scopeError(err)
	}
	defer freeGraph(g)
	sess, err := tf.NewSession(g, &tf.SessionOptions{Config: cfg})
	if err != nil {
		return err
	}
	defer sess.Close()
	out, runErr := sess.Run(nil, []tf.Output{c}, nil)
	freeTensors(out)
	if runErr == nil {
		return nil
	}
	have := "unknown"
	if ds, err := sess.ListDevices(); err == nil {
		var names []string
		for _, d := range ds {
			names = append(names, d.Name)
		}
		sort.Strings(names)
		have = strings.Join(names, ", ")
	}
	return fmt.Errorf("%s is not available in this libtensorflow (devices: %s): %w", dev, have, runErr)
}

// tfDevice is the TensorFlow name of a device: "/device:CPU:0" or
// "/device:GPU:N".
func tfDevice(d recipe.Device) string {
	if !d.GPU {
		return "/device:CPU:0"
	}
	return "/device:GPU:" + strconv.Itoa(d.Index)
}

// threads resolves 0 to runtime.NumCPU().
func threads(n int) int {
	if n <= 0 {
		return runtime.NumCPU()
	}
	return n
}
