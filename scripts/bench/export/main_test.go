package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/fwbench/fwbench/model"
)

// TestWriteNet checks net.json against the model.Net it describes: every layer's fields,
// the ops spelled as model.Op.String(), and the returned SHA-256 of the file's bytes.
func TestWriteNet(t *testing.T) {
	for _, tc := range []struct {
		spec model.Spec
		// One layer and what net.json must say of it (torchvision's module at 32 px).
		layer int
		want  LayerDesc
	}{
		// resnet18's conv1: Conv2d(3, 64, 7, stride 2, padding 3, bias=False); 32 px → (32+6−7)/2+1 = 16.
		{model.Spec{Name: "resnet18", ImageSize: 32, Classes: 3}, 0,
			LayerDesc{Op: "conv", Name: "conv1", Inputs: []int{model.Image}, Out: 64, Kernel: 7, Stride: 2, Pad: 3, Groups: 1,
				In: [3]int{3, 32, 32}, Shape: [3]int{64, 16, 16}}},
		// resnet18's maxpool: MaxPool2d(3, 2, padding 1) after conv1, bn1, relu; 16 → (16+2−3)/2+1 = 8.
		{model.Spec{Name: "resnet18", ImageSize: 32, Classes: 3}, 3,
			LayerDesc{Op: "max_pool", Name: "maxpool", Inputs: []int{2}, Kernel: 3, Stride: 2, Pad: 1,
				In: [3]int{64, 16, 16}, Shape: [3]int{64, 8, 8}}},
		// mobilenet_v2's features.1.conv.0.0: the 3×3 depthwise conv over 32 channels at 16×16.
		{model.Spec{Name: "mobilenet_v2", ImageSize: 32, Classes: 3}, 3,
			LayerDesc{Op: "conv", Name: "features.1.conv.0.0", Inputs: []int{2}, Out: 32, Kernel: 3, Stride: 1, Pad: 1, Groups: 32,
				In: [3]int{32, 16, 16}, Shape: [3]int{32, 16, 16}}},
		// vgg16's flatten head at 64 px: classifier.2, the first dropout (mask 0), over hidden 16.
		{model.Spec{Name: "vgg16", ImageSize: 64, Classes: 3, Hidden: 16}, 34,
			LayerDesc{Op: "dropout", Name: "classifier.2", Inputs: []int{33}, Head: true,
				In: [3]int{16, 1, 1}, Shape: [3]int{16, 1, 1}}},
	} {
		net, err := model.Build(tc.spec)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), "net.json")
		sum, err := writeNet(path, net)
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if h := sha256.Sum256(b); hex.EncodeToString(h[:]) != sum {
			t.Errorf("%s: writeNet returned sha256 %s, the file's is %x", tc.spec.Name, sum, h)
		}
		var d NetDesc
		if err := json.Unmarshal(b, &d); err != nil {
			t.Fatalf("%s: %v", tc.spec.Name, err)
		}
		if d.Name != net.Name || d.Head != net.Head || d.ImageSize != net.ImageSize || d.Classes != net.Classes ||
			d.Hidden != net.Hidden || len(d.Layers) != len(net.Layers) {
			t.Fatalf("%s: got %s/%s %d px %d classes hidden %d, %d layers, want %s/%s %d px %d classes hidden %d, %d layers",
				tc.spec.Name, d.Name, d.Head, d.ImageSize, d.Classes, d.Hidden, len(d.Layers),
				net.Name, net.Head, net.ImageSize, net.Classes, net.Hidden, len(net.Layers))
		}
		for i, l := range net.Layers {
			g := d.Layers[i]
			if g.Op != l.Op.String() || g.Name != l.Name || !reflect.DeepEqual(g.Inputs, l.Inputs) || g.Out != l.Out ||
				g.Kernel != l.Kernel || g.Stride != l.Stride || g.Pad != l.Pad || g.Groups != l.Groups || g.Bias != l.Bias ||
				g.Size != l.Size || g.Mask != l.Mask || g.Head != l.Head ||
				g.In != [3]int{l.In.C, l.In.H, l.In.W} || g.Shape != [3]int{l.Shape.C, l.Shape.H, l.Shape.W} {
				t.Errorf("%s layer %d: got %+v, want %+v", tc.spec.Name, i, g, l)
			}
		}
		if got := d.Layers[tc.layer]; !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s layer %d: got %+v, want %+v", tc.spec.Name, tc.layer, got, tc.want)
		}
	}
}

// runExport runs the command with args on a fresh flag set and returns its manifest.
func runExport(t *testing.T, args ...string) Manifest {
	t.Helper()
	oldArgs, oldFlags := os.Args, flag.CommandLine
	defer func() { os.Args, flag.CommandLine = oldArgs, oldFlags }()
	os.Args = append([]string{"export"}, args...)
	flag.CommandLine = flag.NewFlagSet("export", flag.ContinueOnError)
	if err := run(); err != nil {
		t.Fatalf("export %v: %v", args, err)
	}
	var out string
	for i, a := range args {
		if a == "--out" {
			out = args[i+1]
		}
	}
	b, err := os.ReadFile(filepath.Join(out, "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestExportWarm: --warm exports the very batches of a plain export (same hashes) and
// records Warm's stats: all 3 × 4 training images decoded and cached, 12 × 32 × 32 × 3
// bytes, within the default budget; without --warm there is no "warm" entry.
func TestExportWarm(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	if err := makeData(data, 4, 40, 1); err != nil {
		t.Fatal(err)
	}
	common := []string{"--data", data, "--model", "vgg16", "--image-size", "32", "--batch-size", "4", "--steps", "3",
		"--hidden", "4", "--dropout", "0"}
	plain := runExport(t, append(common, "--out", filepath.Join(dir, "plain"))...)
	warm := runExport(t, append(common, "--out", filepath.Join(dir, "warm"), "--warm")...)
	if plain.Warm != nil {
		t.Errorf("without --warm: got warm %+v, want none", *plain.Warm)
	}
	if !reflect.DeepEqual(warm.BatchSHA256, plain.BatchSHA256) || len(plain.BatchSHA256) != 3 {
		t.Errorf("got hashes %v with --warm, want %v (without), 3 of them", warm.BatchSHA256, plain.BatchSHA256)
	}
	if warm.Warm == nil {
		t.Fatal("with --warm: got no warm entry")
	}
	if w := *warm.Warm; w.Images != 12 || w.Cached != 12 || w.Bytes != 12*32*32*3 || w.CacheBytes <= w.Bytes {
		t.Errorf("with --warm: got %+v, want 12 images, 12 cached, %d bytes, a larger budget", w, 12*32*32*3)
	}
	if warm.LoaderCPUSecondsPerBatch < 0 || warm.LoaderWallSecondsPerBatch <= 0 {
		t.Errorf("with --warm: got loader CPU %g s, wall %g s per batch, want >= 0 and > 0",
			warm.LoaderCPUSecondsPerBatch, warm.LoaderWallSecondsPerBatch)
	}
}
