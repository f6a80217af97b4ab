package smoke

import (
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	tf "github.com/galeone/tensorflow/tensorflow/go"
	"github.com/galeone/tensorflow/tensorflow/go/op"
	torch "github.com/wangkuiyi/gotorch"
)

// torchGradient runs y = sum(a*a) backward through libtorch for a = [begin, begin+1, ...)
// (n values, a leaf tensor that requires grad) and returns dy/da. Hand-computed: dy/da = 2a.
func torchGradient(t *testing.T, begin float32, n int) []float32 {
	t.Helper()
	x := torch.Arange(begin, begin+float32(n), 1, true)
	y := torch.Sum(torch.Mul(x, x))
	y.Backward()
	g := x.Grad()
	out := make([]float32, n)
	for i := range out {
		out[i] = g.Index(int64(i)).Item().(float32)
	}
	return out
}

func TestTorchBackward(t *testing.T) {
	got := torchGradient(t, -1.5, 4) // a = [-1.5, -0.5, 0.5, 1.5]
	for i, a := range []float32{-1.5, -0.5, 0.5, 1.5} {
		if want := 2 * a; got[i] != want { // d/da sum(a²) = 2a, exact in float32
			t.Errorf("grad[%d]: got %v, want %v", i, got[i], want)
		}
	}
}

// tfSGDStep builds w (a resource variable), loss = sum(w*w), takes the gradient with
// Graph.AddGradients (TF's C++ gradient registry), applies one ResourceApplyGradientDescent
// step with rate lr through Session.Run and returns the updated w.
func tfSGDStep(t *testing.T, w0 []float32, lr float32) []float32 {
	t.Helper()
	// Every op in a Scope needs a unique name: constants go in sub-scopes.
	s := op.NewScope()
	v := op.VarHandleOp(s, tf.Float, tf.MakeShape(int64(len(w0))), op.VarHandleOpSharedName("smoke_w"))
	init := op.AssignVariableOp(s, v, op.Const(s.SubScope("w0"), w0))
	read := op.ReadVariableOp(s, v, tf.Float)
	loss := op.Sum(s, op.Mul(s, read, read), op.Const(s.SubScope("axis"), []int32{0}))
	graph, err := s.Finalize()
	if err != nil {
		t.Fatalf("building the graph: %v", err)
	}
	grads, err := graph.AddGradients("grad", []tf.Output{loss}, []tf.Output{read}, nil)
	if err != nil {
		t.Fatalf("AddGradients: %v", err)
	}
	lrConst, err := graph.AddOperation(tf.OpSpec{Type: "Const", Name: "lr", Attrs: map[string]interface{}{"dtype": tf.Float, "value": mustTensor(t, lr)}})
	if err != nil {
		t.Fatal(err)
	}
	apply, err := graph.AddOperation(tf.OpSpec{
		Type:  "ResourceApplyGradientDescent",
		Name:  "apply",
		Input: []tf.Input{v, lrConst.Output(0), grads[0]},
	})
	if err != nil {
		t.Fatalf("ResourceApplyGradientDescent: %v", err)
	}
	sess, err := tf.NewSession(graph, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	if _, err := sess.Run(nil, nil, []*tf.Operation{init}); err != nil {
		t.Fatalf("init: %v", err)
	}
	if _, err := sess.Run(nil, nil, []*tf.Operation{apply}); err != nil {
		t.Fatalf("sgd step: %v", err)
	}
	out, err := sess.Run(nil, []tf.Output{read}, nil)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return out[0].Value().([]float32)
}

func mustTensor(t *testing.T, v interface{}) *tf.Tensor {
	t.Helper()
	x, err := tf.NewTensor(v)
	if err != nil {
		t.Fatal(err)
	}
	return x
}

func TestTensorFlowSGDStep(t *testing.T) {
	w0 := []float32{1, 2, -4}
	const lr = 0.25
	got := tfSGDStep(t, w0, lr)
	for i := range w0 {
		// w1 = w0 - lr * d/dw sum(w²) = w0 - lr*2*w0 = 0.5*w0 (exact in float32 for lr = 0.25)
		if want := w0[i] - lr*2*w0[i]; got[i] != want {
			t.Errorf("w[%d] after one step: got %v, want %v", i, got[i], want)
		}
	}
}

func TestVersionsFromLoadedLibraries(t *testing.T) {
	if v := tf.Version(); !strings.HasPrefix(v, "2.") {
		t.Errorf("TF_Version: got %q, want a 2.x version", v)
	}
}

// TestCoexistence runs one op in each framework in one process, in both orders. Each order
// runs in a fresh child process (this test binary re-executed), so neither runtime has been
// initialised before the order under test starts.
func TestCoexistence(t *testing.T) {
	if order := os.Getenv("FWBENCH_SMOKE_ORDER"); order != "" {
		runOrder(t, order)
		return
	}
	for _, order := range []string{"torch,tensorflow", "tensorflow,torch"} {
		t.Run(order, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestCoexistence$", "-test.v")
			cmd.Env = append(os.Environ(), "FWBENCH_SMOKE_ORDER="+order)
			out, err := cmd.CombinedOutput()
			if err != nil || !strings.Contains(string(out), "coexistence ok") {
				t.Fatalf("order %s in one process failed: %v\n%s", order, err, out)
			}
		})
	}
}

func runOrder(t *testing.T, order string) {
	runtime.LockOSThread()
	for _, fw := range strings.Split(order, ",") {
		switch fw {
		case "torch":
			if g := torchGradient(t, 3, 1); g[0] != 6 {
				t.Fatalf("torch grad: got %v, want 6", g[0])
			}
		case "tensorflow":
			if w := tfSGDStep(t, []float32{2}, 0.25); w[0] != 1 {
				t.Fatalf("tf step: got %v, want 1", w[0])
			}
		}
	}
	t.Log("coexistence ok")
}
