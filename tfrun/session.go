package tfrun

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"

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
	cpuJit = enableCPUGlobalJit()
}

// cpuJit says whether XLA may auto-cluster CPU ops, for a session that asks
// for it (see sessionConfig). TensorFlow fixes the CPU's autoclustering
// policy the first time any graph is optimized, from
// MarkForCompilationPassFlags.tf_xla_cpu_global_jit as it is then
// (XlaOpRegistry::GetCompilationDevice registers the CPU's JIT device
// lazily, once), so tfrun's init sets the flag before any session exists:
// the policy becomes "when the session enables XLA", and sessions without
// --xla set the jit level OFF, so they are not affected.
var cpuJit bool

// Version returns the version of the loaded TensorFlow library (TF_Version),
// e.g. "2.21.0".
func Version() string { return tf.Version() }

// sessionConfig serialises the ConfigProto of a Trainer's session:
// explicit intra- and inter-op thread counts in per-session pools, soft
// placement (ops without a kernel for the chosen GPU run on the CPU), GPU
// memory that grows on demand instead of being reserved whole, and, on the
// CPU, no GPU devices at all. With xla the graph is auto-clustered and
// compiled by XLA (global_jit_level ON_1, what tf.config.optimizer.set_jit
// and TF_XLA_FLAGS=--tf_xla_auto_jit=1 set; on the CPU it also needs
// enableCPUGlobalJit); without, the jit level is OFF explicitly.
func sessionConfig(intra, inter int, dev recipe.Device, soft, xla bool) ([]byte, error) {
	return proto.Marshal(sessionConfigProto(intra, inter, dev, soft, xla))
}

// sessionConfigProto is sessionConfig's ConfigProto.
func sessionConfigProto(intra, inter int, dev recipe.Device, soft, xla bool) *config.ConfigProto {
	jit := config.OptimizerOptions_OFF
	if xla {
		jit = config.OptimizerOptions_ON_1
	}
	c := &config.ConfigProto{
		IntraOpParallelismThreads: int32(intra),
		InterOpParallelismThreads: int32(inter),
		UsePerSessionThreads:      true,
		AllowSoftPlacement:        soft,
		GpuOptions:                &config.GPUOptions{AllowGrowth: true},
		GraphOptions:              &config.GraphOptions{OptimizerOptions: &config.OptimizerOptions{GlobalJitLevel: jit}},
	}
	if !dev.GPU {
		c.DeviceCount = map[string]int32{"GPU": 0}
	}
	return c
}

// listDevices returns the devices that the library offers to a session: full
// names such as "/job:localhost/replica:0/task:0/device:CPU:0", sorted.
func listDevices() ([]tf.Device, error) {
	cfg, err := sessionConfig(1, 1, recipe.Device{GPU: true}, true, false)
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
	cfg, err := sessionConfig(1, 1, dev, false, false)
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

// The process-wide switches. TensorFlow keeps op determinism, TF32
// execution and cuDNN autotuning per process, not per session: TF32 is read
// at every cuBLAS and cuDNN call, determinism by kernels as they are made
// and run, and TF_CUDNN_USE_AUTOTUNE by each convolution kernel when it is
// made. A Trainer sets them in New (before its session runs anything) and
// holds them until Close; a Trainer that asks for other values while
// another holds them is refused (ErrSwitches), since changing them would
// change the other Trainer's run. Once no Trainer lives they may change.
type switches struct {
	deterministic bool
	tf32          bool
	// autotune is TF_CUDNN_USE_AUTOTUNE's value, "1" or "0", for a GPU
	// Trainer; "" for a CPU one, which runs no cuDNN and does not care.
	autotune string
}

// ErrSwitches is wrapped by New's error when the recipe asks for
// process-wide settings (deterministic, TF32, cuDNN autotuning) other than
// those that a live Trainer of the same process holds.
var ErrSwitches = errors.New("process-wide settings differ from those a live Trainer holds")

// envAutotune is read by TensorFlow's GPU convolution kernels when they are
// made (tsl::CudnnUseAutotune); unset means on.
const envAutotune = "TF_CUDNN_USE_AUTOTUNE"

// process holds the switches in force and how many Trainers hold them.
var process struct {
	sync.Mutex
	holders int
	in      switches
}

// acquireSwitches sets want (when no Trainer holds switches) or checks it
// against those in force, and counts the caller as a holder; the caller
// calls releaseSwitches once when it no longer relies on them. It returns
// the values read back from the library.
func acquireSwitches(want switches) (switches, error) {
	process.Lock()
	defer process.Unlock()
	in := process.in
	if process.holders > 0 {
		var diff []string
		if want.deterministic != in.deterministic {
			diff = append(diff, fmt.Sprintf("deterministic %t (in force: %t)", want.deterministic, in.deterministic))
		}
		if want.tf32 != in.tf32 {
			diff = append(diff, fmt.Sprintf("tf32 %t (in force: %t)", want.tf32, in.tf32))
		}
		if want.autotune != "" && in.autotune != "" && want.autotune != in.autotune {
			diff = append(diff, fmt.Sprintf("cudnn autotune %s (in force: %s)", want.autotune, in.autotune))
		}
		if len(diff) > 0 {
			return switches{}, fmt.Errorf("%w: %s; close the other Trainers first", ErrSwitches, strings.Join(diff, ", "))
		}
	} else {
		in = switches{}
	}
	if process.holders == 0 || want.deterministic != opDeterminism() {
		setOpDeterminism(want.deterministic)
	}
	if process.holders == 0 || want.tf32 != tf32Enabled() {
		setTF32(want.tf32)
	}
	if want.autotune != "" && in.autotune == "" {
		if err := os.Setenv(envAutotune, want.autotune); err != nil {
			return switches{}, fmt.Errorf("set %s: %w", envAutotune, err)
		}
	}
	got := switches{deterministic: opDeterminism(), tf32: tf32Enabled(), autotune: in.autotune}
	if want.autotune != "" {
		got.autotune = map[bool]string{true: "1", false: "0"}[cudnnAutotune()]
	}
	if got.deterministic != want.deterministic || got.tf32 != want.tf32 || (want.autotune != "" && got.autotune != want.autotune) {
		return switches{}, fmt.Errorf("process-wide settings: asked for %+v, the library reads back %+v", want, got)
	}
	process.in = got
	process.holders++
	return got, nil
}

// releaseSwitches undoes one acquireSwitches.
func releaseSwitches() {
	process.Lock()
	defer process.Unlock()
	if process.holders > 0 {
		process.holders--
	}
}

// threads resolves 0 to runtime.NumCPU().
func threads(n int) int {
	if n <= 0 {
		return runtime.NumCPU()
	}
	return n
}
