package tfrun

import (
	"bytes"
	"strings"
	"testing"

	graphpb "github.com/galeone/tensorflow/tensorflow/go/core/framework/graph_go_proto"
	nodepb "github.com/galeone/tensorflow/tensorflow/go/core/framework/node_def_go_proto"
	"google.golang.org/protobuf/proto"

	"github.com/fwbench/fwbench/recipe"
)

// TestGraphShapeForSpeed checks the two properties of the training graph that
// scripts/bench/tfgap found missing against Keras (docs/benchmarks.md): every ReluGrad reads
// its Relu's output, so that the pre-activation has one reader and grappler can fuse the Relu
// into the convolution, and the updates wait only for the readers of their own variable, so
// that they overlap the rest of the backward pass instead of running after all of it.
func TestGraphShapeForSpeed(t *testing.T) {
	cfg := tinyConfig()
	cfg.Dropout, cfg.Optimizer, cfg.Momentum = 0, recipe.SGD, 0.9
	tr := mustNew(t, cfg, nil)
	var buf bytes.Buffer
	if _, err := tr.m.graph.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	var g graphpb.GraphDef
	if err := proto.Unmarshal(buf.Bytes(), &g); err != nil {
		t.Fatal(err)
	}
	byName := map[string]*nodepb.NodeDef{}
	for _, n := range g.Node {
		byName[n.Name] = n
	}
	src := func(in string) *nodepb.NodeDef {
		name, _, _ := strings.Cut(strings.TrimPrefix(in, "^"), ":")
		return byName[name]
	}
	var reluGrads, updates int
	for _, n := range g.Node {
		switch n.Op {
		case "ReluGrad":
			reluGrads++
			if f := src(n.Input[1]); f == nil || f.Op != "Relu" {
				t.Errorf("%s reads %s (%s), want a Relu's output", n.Name, n.Input[1], f.GetOp())
			}
		case "ResourceApplyMomentum":
			updates++
		}
	}
	// vgg11: 8 convolutions and 2 hidden linear layers, each followed by a ReLU; 8 + 3
	// weights and as many biases.
	if reluGrads != 10 || updates != 22 {
		t.Fatalf("got %d ReluGrad and %d updates, want 10 and 22 (vgg11)", reluGrads, updates)
	}
	// The last layer's weight update must not wait for the first convolution's filter
	// gradient: nothing but its own value's readers orders it.
	var last *nodepb.NodeDef
	for _, n := range g.Node {
		if n.Op == "ResourceApplyMomentum" && strings.Contains(n.Name, "classifier.6.weight") {
			last = n
		}
	}
	if last == nil {
		t.Fatal("no update of classifier.6.weight")
	}
	for _, in := range last.Input {
		if n := src(in); strings.HasPrefix(in, "^") && n != nil && n.Op == "Conv2DBackpropFilter" {
			t.Errorf("the last layer's update waits for %s, a convolution's filter gradient", n.Name)
		}
	}
	var control int
	for _, in := range last.Input {
		if strings.HasPrefix(in, "^") {
			control++
		}
	}
	if control == 0 {
		t.Errorf("the last layer's update waits for no reader of its value: copy-on-write would come back")
	}
}
