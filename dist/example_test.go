package dist_test

import (
	"context"
	"fmt"
	"net"

	"github.com/fwbench/fwbench/dist"
)

// A group of one rank on the loopback: the pattern of every rank's loop.
func Example() {
	ln, err := net.Listen("tcp", "127.0.0.1:0") // find a free port for the example
	if err != nil {
		fmt.Println(err)
		return
	}
	master := ln.Addr().String()
	ln.Close()

	ctx := context.Background()
	g, err := dist.Join(ctx, dist.Config{Rank: 0, WorldSize: 1, Master: master}, "sha256-of-the-recipe")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer g.Close()
	if err := g.Check(ctx, "weights", "sha256-of-the-weights-read-back"); err != nil {
		fmt.Println(err)
		return
	}
	sum, err := g.Step(ctx, dist.Vals{Loss: 2.5, Correct: 3, Images: 8})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("loss %.2f, accuracy %d/%d, stop %v\n", sum.Loss/float64(g.WorldSize()), sum.Correct, sum.Images, sum.Stop)
	// Output: loss 2.50, accuracy 3/8, stop false
}
