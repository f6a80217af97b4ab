// Command export writes what a Python reference run needs to train on exactly what
// `fwbench train` trains on: the first N training batches of epoch 0, as the loader of
// `fwbench train` yields them (dataset.ExportBatch, one .npz per batch), the initial
// weights (weights.InitParams over the model's parameters, safetensors in torchvision's
// canonical layout) and a manifest with every batch's dataset.Batch.Hash, the weights
// file's SHA-256 and the analytic training FLOPs of one step (model.Net.TrainFLOPs).
//
// It also writes the dropout masks both Go drivers draw for those steps
// (model.DropoutMask(seed, step, layer.Mask, dropout) for each Dropout layer of the model,
// model.Net.Dropouts), one dropout-NNNN.npy per step: float32 little-endian, shape
// [layers, batch, width] (the dropout layers in order, each [batch, width] row-major, the
// value the layer's input is multiplied by; VGG's flatten head: [2, batch, hidden]),
// listed with each file's SHA-256, the layers' names in dropout_layers. A model without
// dropout layers (resnet) gets none. The Python references multiply these in instead of
// drawing their own. At 224 px × 32 with hidden 4096 a file is 1 MiB.
//
// And it writes the model description the run uses, net.json (its SHA-256 in the
// manifest): the model.Net of --model and --head as JSON (NetDesc), the layer graph that
// both Go drivers interpret and that the Python references build their models from. With
// --describe FILE it writes only that description, for --classes classes, and exits.
//
//	go run ./scripts/bench/export --data DIR --model vgg16 --image-size 64 --batch-size 8 --steps 10 --dropout 0.5 --out DIR
//	go run ./scripts/bench/export --describe net.json --model resnet18 --image-size 32 --classes 3
//
// The loader is configured as compare's openData configures it (shuffle, drop last,
// in-memory cache, the same seed and normalisation), so `fwbench train --data DIR --seed K
// --weights OUT/init.safetensors` sees the same batches in the same order: its run record's
// first_batch_sha256 equals the manifest's first hash.
//
// The manifest's loader_cpu_seconds_per_batch is the CPU the loader spends on each exported
// batch. With --warm, dataset.Loader.Warm first decodes and resizes the training set into
// the memory cache (its stats under "warm"), so the timed batches cost only normalisation:
// what a training run that warms its loader pays per step. The batches, and their hashes,
// are the same with and without --warm.
//
// Synthetic data for the benchmarks is made with --synth: a pre-split tree (train/ with
// --per-class images of each of 3 classes, val/ with one image of each class, so that the
// end-of-epoch validation of `fwbench train` costs little).
package main

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/fwbench/fwbench/compare"
	"github.com/fwbench/fwbench/dataset"
	"github.com/fwbench/fwbench/model"
	"github.com/fwbench/fwbench/weights"
)

// Manifest is what export writes to OUT/manifest.json.
type Manifest struct {
	Schema        string   `json:"schema"`
	Data          string   `json:"data"`
	Model         string   `json:"model"`
	Head          string   `json:"head"` // resolved: the model's default when --head is ""
	Mode          string   `json:"mode"`
	ImageSize     int      `json:"image_size"`
	BatchSize     int      `json:"batch_size"`
	Classes       int      `json:"classes"`
	ClassNames    []string `json:"class_names"`
	Hidden        int      `json:"hidden"` // resolved: 0 for models without hidden layers
	Seed          int64    `json:"seed"`
	Normalize     string   `json:"normalize"`
	Batches       []string `json:"batches"`        // file names, in training order (epoch 0)
	BatchSHA256   []string `json:"batch_sha256"`   // dataset.Batch.Hash of each
	Weights       string   `json:"weights"`        // file name of the initial weights
	WeightsSHA256 string   `json:"weights_sha256"` // SHA-256 of that file's bytes
	Net           string   `json:"net"`            // file name of the model description (NetDesc)
	NetSHA256     string   `json:"net_sha256"`     // SHA-256 of that file's bytes
	// Dropout is the drop probability of the masks; DropoutMasks the mask file of each
	// exported step (none when Dropout is 0 or the model has no dropout layer),
	// DropoutSHA256 the SHA-256 of each file's bytes, DropoutLayers the names of the layers
	// the masks belong to, in the files' order.
	Dropout       float64  `json:"dropout"`
	DropoutMasks  []string `json:"dropout_masks"`
	DropoutSHA256 []string `json:"dropout_sha256"`
	DropoutLayers []string `json:"dropout_layers"`
	// TrainFLOPsPerStep is model.Net.TrainFLOPs(batch, mode == "features")'s train figure,
	// ForwardFLOPsPerStep its forward one.
	TrainFLOPsPerStep   float64 `json:"train_flops_per_step"`
	ForwardFLOPsPerStep float64 `json:"forward_flops_per_step"`
	// What the loader costs in `fwbench train`, where it runs in goroutines beside the
	// framework's threads: CPU seconds (user + system, this process) and wall seconds per
	// batch to produce the exported batches with nothing else running. Without --warm they
	// are first-epoch batches (decode, resize, normalise); with --warm they are measured
	// after Loader.Warm filled the cache (normalise, and augment when on).
	LoaderCPUSecondsPerBatch  float64 `json:"loader_cpu_seconds_per_batch"`
	LoaderWallSecondsPerBatch float64 `json:"loader_wall_seconds_per_batch"`
	// Warm is what Loader.Warm did before the batches were timed (--warm only).
	Warm *WarmManifest `json:"warm,omitempty"`
}

// WarmManifest is dataset.WarmStats as the manifest holds it.
type WarmManifest struct {
	Images      int     `json:"images"`       // images decoded and resized
	Cached      int     `json:"cached"`       // images the cache holds after it
	Bytes       int64   `json:"bytes"`        // bytes those take (cached × S × S × 3)
	CacheBytes  int64   `json:"cache_bytes"`  // the memory cache's budget (dataset.DefaultCacheBytes)
	CPUSeconds  float64 `json:"cpu_seconds"`  // user + system CPU of the process during Warm
	WallSeconds float64 `json:"wall_seconds"` // wall time of Warm
}

// NetDesc is a model.Net as net.json holds it: the model and what it was built for, and
// its layers in order. Shapes are one image's [C, H, W].
type NetDesc struct {
	Name      string      `json:"name"`
	Head      string      `json:"head"`
	ImageSize int         `json:"image_size"`
	Classes   int         `json:"classes"`
	Hidden    int         `json:"hidden"`
	Layers    []LayerDesc `json:"layers"`
}

// LayerDesc is one model.Layer; Op is model.Op's String() ("conv", "batch_norm", "relu",
// "relu6", "max_pool", "adaptive_avg_pool", "add", "flatten", "linear", "dropout") and
// Inputs are indices of earlier layers, or model.Image (-1) for the image.
type LayerDesc struct {
	Op     string `json:"op"`
	Name   string `json:"name"`
	Inputs []int  `json:"inputs"`
	Out    int    `json:"out"`
	Kernel int    `json:"kernel"`
	Stride int    `json:"stride"`
	Pad    int    `json:"pad"`
	Groups int    `json:"groups"`
	Bias   bool   `json:"bias"`
	Size   int    `json:"size"`
	Mask   int    `json:"mask"`
	Head   bool   `json:"head"`
	In     [3]int `json:"in"`
	Shape  [3]int `json:"shape"`
}

// describe returns net's description.
func describe(net *model.Net) NetDesc {
	d := NetDesc{Name: net.Name, Head: net.Head, ImageSize: net.ImageSize, Classes: net.Classes, Hidden: net.Hidden,
		Layers: make([]LayerDesc, len(net.Layers))}
	for i, l := range net.Layers {
		d.Layers[i] = LayerDesc{Op: l.Op.String(), Name: l.Name, Inputs: l.Inputs, Out: l.Out, Kernel: l.Kernel,
			Stride: l.Stride, Pad: l.Pad, Groups: l.Groups, Bias: l.Bias, Size: l.Size, Mask: l.Mask, Head: l.Head,
			In: [3]int{l.In.C, l.In.H, l.In.W}, Shape: [3]int{l.Shape.C, l.Shape.H, l.Shape.W}}
	}
	return d
}

// writeNet writes net's description as JSON to path and returns the SHA-256 of the bytes.
func writeNet(path string, net *model.Net) (string, error) {
	j, err := json.Marshal(describe(net))
	if err != nil {
		return "", err
	}
	j = append(j, '\n')
	if err := os.WriteFile(path, j, 0o644); err != nil {
		return "", err
	}
	sum := sha256.Sum256(j)
	return hex.EncodeToString(sum[:]), nil
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "export:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		data      = flag.String("data", "", "dataset folder (as fwbench train --data)")
		out       = flag.String("out", "", "output folder")
		name      = flag.String("model", "vgg16", strings.Join(model.Names(), "|"))
		head      = flag.String("head", "", "the model's head (\"\": its default)")
		mode      = flag.String("mode", model.ModeScratch, strings.Join(model.Modes(), "|")+" (only changes the FLOP count)")
		size      = flag.Int("image-size", 64, "S")
		batch     = flag.Int("batch-size", 8, "batch size")
		steps     = flag.Int("steps", 4, "batches to export (the first N of epoch 0)")
		hidden    = flag.Int("hidden", model.DefaultHidden, "VGG's classifier hidden width")
		seed      = flag.Int64("seed", 1, "seed (loader order, initial weights, dropout masks)")
		dropout   = flag.Float64("dropout", 0.5, "dropout probability of the masks (as fwbench train --dropout)")
		normalize = flag.String("normalize", dataset.NormRescale, "rescale|imagenet|caffe")
		valSplit  = flag.Float64("val-split", 0.2, "as fwbench train --val-split (ignored for a pre-split tree)")
		synth     = flag.String("synth", "", "only make a synthetic pre-split tree in this folder and exit")
		perClass  = flag.Int("per-class", 64, "training images per class for --synth")
		synthSize = flag.Int("synth-size", 224, "image size for --synth")
		descFile  = flag.String("describe", "", "only write the model description (net.json) to this file and exit")
		nClasses  = flag.Int("classes", 3, "classes for --describe (an export takes the dataset's)")
		warm      = flag.Bool("warm", false, "fill the loader's cache with Loader.Warm before timing the batches")
	)
	flag.Parse()
	if *synth != "" {
		return makeData(*synth, *perClass, *synthSize, *seed)
	}
	if *descFile != "" {
		net, err := model.Build(model.Spec{Name: *name, Head: *head, ImageSize: *size, Classes: *nClasses, Hidden: *hidden})
		if err != nil {
			return err
		}
		_, err = writeNet(*descFile, net)
		return err
	}
	if *data == "" || *out == "" {
		return fmt.Errorf("--data and --out are required")
	}
	if *dropout < 0 || *dropout >= 1 {
		return fmt.Errorf("--dropout %g: want 0 <= p < 1", *dropout)
	}
	ctx := context.Background()
	ds, err := dataset.Open(ctx, *data, dataset.OpenOptions{ValSplit: *valSplit, Seed: *seed})
	if err != nil {
		return err
	}
	// The loader of compare's openData (compare.TrainOne), field for field.
	lc := dataset.LoaderConfig{ImageSize: *size, BatchSize: *batch, Seed: *seed, Shuffle: true,
		DropLast: true, Normalize: *normalize, Cache: dataset.CacheMemory}
	ld, err := dataset.NewLoader(ds.Train(), lc)
	if err != nil {
		return err
	}
	defer ld.Close()
	if n := ld.BatchesPerEpoch(); n < *steps {
		return fmt.Errorf("the training set gives %d batches of %d per epoch, %d wanted", n, *batch, *steps)
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	classes := len(ds.Classes())
	net, err := model.Build(model.Spec{Name: *name, Head: *head, ImageSize: *size, Classes: classes, Hidden: *hidden})
	if err != nil {
		return err
	}
	m := Manifest{Schema: "fwbench.bench-export/v1", Data: *data, Model: net.Name, Head: net.Head, Mode: *mode,
		ImageSize: *size, BatchSize: *batch, Classes: classes, ClassNames: ds.Classes(),
		Hidden: net.Hidden, Seed: *seed, Normalize: *normalize, Weights: "init.safetensors", Net: "net.json", Dropout: *dropout,
		DropoutMasks: []string{}, DropoutSHA256: []string{}, DropoutLayers: []string{}}
	if *warm {
		st, err := ld.Warm(ctx)
		if err != nil {
			return err
		}
		m.Warm = &WarmManifest{Images: st.Images, Cached: st.Cached, Bytes: st.Bytes, CacheBytes: ld.Config().CacheBytes,
			CPUSeconds: st.CPUSeconds, WallSeconds: st.WallSeconds}
	}
	it := ld.Epoch(ctx, 0)
	defer it.Close()
	cpu0, wall0 := cpuSeconds(), time.Now()
	var bs []*dataset.Batch
	for i := 0; i < *steps; i++ {
		b, err := it.Next()
		if err != nil {
			return fmt.Errorf("batch %d: %w", i, err)
		}
		bs = append(bs, b)
	}
	m.LoaderCPUSecondsPerBatch = (cpuSeconds() - cpu0) / float64(*steps)
	m.LoaderWallSecondsPerBatch = time.Since(wall0).Seconds() / float64(*steps)
	for i, b := range bs {
		name := fmt.Sprintf("batch-%04d.npz", i)
		if err := dataset.ExportBatch(filepath.Join(*out, name), b); err != nil {
			return err
		}
		m.Batches = append(m.Batches, name)
		m.BatchSHA256 = append(m.BatchSHA256, b.Hash())
	}
	if drops := net.Dropouts(); *dropout > 0 && len(drops) > 0 {
		// The drivers' rule: dropout layer i's mask for a batch of N is N × its input's
		// elements, model.DropoutMask(seed, step, its Mask number, p).
		width := net.Layers[drops[0]].In.Elements()
		for _, i := range drops {
			if w := net.Layers[i].In.Elements(); w != width {
				return fmt.Errorf("%s: dropout layers of widths %d and %d do not fit one [layers, batch, width] file", net.Name, width, w)
			}
			m.DropoutLayers = append(m.DropoutLayers, net.Layers[i].Name)
		}
		n := *batch * width
		mask := make([]float32, len(drops)*n)
		for step := range int64(*steps) {
			for k, i := range drops {
				model.DropoutMask(mask[k*n:(k+1)*n], *seed, step, net.Layers[i].Mask, *dropout)
			}
			name := fmt.Sprintf("dropout-%04d.npy", step)
			sum, err := writeNPY(filepath.Join(*out, name), []int{len(drops), *batch, width}, mask)
			if err != nil {
				return err
			}
			m.DropoutMasks = append(m.DropoutMasks, name)
			m.DropoutSHA256 = append(m.DropoutSHA256, sum)
		}
	}
	ws, err := weights.InitParams(net.Params, *seed)
	if err != nil {
		return err
	}
	wpath := filepath.Join(*out, m.Weights)
	if err := weights.WriteSafetensors(wpath, ws, map[string]string{"fwbench": "weights.InitParams", "seed": fmt.Sprint(*seed)}); err != nil {
		return err
	}
	if m.WeightsSHA256, err = compare.FileSHA256(wpath); err != nil {
		return err
	}
	if m.NetSHA256, err = writeNet(filepath.Join(*out, m.Net), net); err != nil {
		return err
	}
	m.ForwardFLOPsPerStep, m.TrainFLOPsPerStep = net.TrainFLOPs(*batch, *mode == model.ModeFeatures)
	if m.TrainFLOPsPerStep == 0 {
		return fmt.Errorf("no FLOP count for %s at S=%d", net.Name, *size)
	}
	j, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(*out, "manifest.json"), append(j, '\n'), 0o644)
}

// writeNPY writes v as a little-endian float32 .npy file (format version 1.0, C order)
// of the given shape and returns the SHA-256 of the file's bytes.
func writeNPY(path string, shape []int, v []float32) (string, error) {
	dims := ""
	for _, d := range shape {
		dims += fmt.Sprintf("%d, ", d)
	}
	if len(shape) > 1 {
		dims = dims[:len(dims)-2]
	}
	hdr := fmt.Sprintf("{'descr': '<f4', 'fortran_order': False, 'shape': (%s), }", dims)
	// Magic (6) + version (2) + header length (2) + header + '\n', padded to 64 bytes.
	pad := 64 - (10+len(hdr)+1)%64
	if pad == 64 {
		pad = 0
	}
	hdr += strings.Repeat(" ", pad) + "\n"
	buf := make([]byte, 0, 10+len(hdr)+4*len(v))
	buf = append(buf, "\x93NUMPY\x01\x00"...)
	buf = binary.LittleEndian.AppendUint16(buf, uint16(len(hdr)))
	buf = append(buf, hdr...)
	for _, x := range v {
		buf = binary.LittleEndian.AppendUint32(buf, math.Float32bits(x))
	}
	if err := os.WriteFile(path, buf, 0o644); err != nil {
		return "", err
	}
	sum := sha256.Sum256(buf)
	return hex.EncodeToString(sum[:]), nil
}

// makeData writes a pre-split synthetic tree: dir/train (perClass images of each of 3
// classes, seed) and dir/val (one image of each class, seed+1). A finished tree is kept.
func makeData(dir string, perClass, size int, seed int64) error {
	stamp := filepath.Join(dir, ".complete")
	if _, err := os.Stat(stamp); err == nil {
		return nil
	}
	t0 := time.Now()
	os.RemoveAll(dir)
	if err := dataset.Synthesize(filepath.Join(dir, "train"), 3, perClass, size, seed, "png"); err != nil {
		return err
	}
	if err := dataset.Synthesize(filepath.Join(dir, "val"), 3, 1, size, seed+1, "png"); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "export: synthetic data in %s (%d+1 images per class, %d px) in %.1f s\n", dir, perClass, size, time.Since(t0).Seconds())
	return os.WriteFile(stamp, nil, 0o644)
}

// cpuSeconds is this process's user + system CPU time so far.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return float64(ru.Utime.Sec+ru.Stime.Sec) + float64(ru.Utime.Usec+ru.Stime.Usec)/1e6
}
