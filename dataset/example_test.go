package dataset_test

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/fwbench/fwbench/dataset"
)

// Example writes a small synthetic data set, opens it with a seeded
// stratified split and reads one epoch of augmented, normalised batches.
func Example() {
	dir, err := os.MkdirTemp("", "fwbench-example")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)
	if err := dataset.Synthesize(dir, 3, 10, 32, 1, "png"); err != nil {
		fmt.Println(err)
		return
	}
	ctx := context.Background()
	d, err := dataset.Open(ctx, dir, dataset.OpenOptions{ValSplit: 0.2, Seed: 1})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("classes:", d.Classes())
	fmt.Println("train/val:", d.Train().Len(), d.Val().Len())

	l, err := dataset.NewLoader(d.Train(), dataset.LoaderConfig{
		ImageSize: 24, BatchSize: 10, Seed: 1, Shuffle: true,
		Normalize: dataset.NormImageNet, Augment: dataset.PaperAugment(),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer l.Close()
	it := l.Epoch(ctx, 0)
	defer it.Close()
	for {
		b, err := it.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Printf("batch %d: %dx%dx%dx%d, %d labels\n", b.Index, b.N, b.H, b.W, b.C, len(b.Labels))
	}
	// Output:
	// classes: [00-hstripes 01-disk 02-checker]
	// train/val: 24 6
	// batch 0: 10x24x24x3, 10 labels
	// batch 1: 10x24x24x3, 10 labels
	// batch 2: 4x24x24x3, 4 labels
}

// ExampleLoader_Warm fills a memory cache before training, so that the
// steps pay only for augmentation and normalisation, within a budget that
// holds 10 of the 24 images at 24 px (10·24·24·3 bytes): the other 14 are
// decoded and resized each time they are batched.
func ExampleLoader_Warm() {
	dir, err := os.MkdirTemp("", "fwbench-example")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)
	if err := dataset.Synthesize(dir, 3, 8, 32, 1, "png"); err != nil {
		fmt.Println(err)
		return
	}
	ctx := context.Background()
	d, err := dataset.Open(ctx, dir, dataset.OpenOptions{ValSplit: -1})
	if err != nil {
		fmt.Println(err)
		return
	}
	l, err := dataset.NewLoader(d.Train(), dataset.LoaderConfig{
		ImageSize: 24, BatchSize: 8, Seed: 1, Shuffle: true, DropLast: true,
		Cache: dataset.CacheMemory, CacheBytes: 10 * 24 * 24 * 3,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer l.Close()
	st, err := l.Warm(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("decoded %d, cached %d of %d images, %d bytes\n", st.Images, st.Cached, d.Train().Len(), st.Bytes)
	// Output:
	// decoded 10, cached 10 of 24 images, 17280 bytes
}
