package main

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"

	"github.com/fwbench/fwbench/compare"
	"github.com/fwbench/fwbench/recipe"
	"github.com/fwbench/fwbench/tfrun"
	"github.com/fwbench/fwbench/torchrun"
)

// TestOneValidate: the recipe is checked in one place, recipe.Config.Validate, and every entry
// point that takes a recipe refuses each of recipe.BadRecipes with its message: compare
// (Spec.Validate and a comparison's Config.Validate), both drivers (New), and the CLI
// (`fwbench train` and `fwbench compare` with the recipe as flags, Spec.Args: exit 2 and the
// message on stderr).
func TestOneValidate(t *testing.T) {
	ctx := context.Background()
	for _, c := range recipe.BadRecipes() {
		want := c.Config.Validate()
		if want == nil || !errors.Is(want, recipe.ErrInvalid) || !strings.Contains(want.Error(), c.Want) {
			t.Errorf("%s: recipe.Config.Validate: got %v, want ErrInvalid containing %q", c.Name, want, c.Want)
			continue
		}
		check := func(who string, err error) {
			t.Helper()
			if err == nil || err.Error() != want.Error() || !errors.Is(err, compare.ErrInvalid) {
				t.Errorf("%s: %s: got %v, want %q", c.Name, who, err, want)
			}
		}
		s := compare.DefaultSpec()
		s.Config, s.Framework, s.Data = c.Config, fwTorch, smallDS
		check("compare.Spec.Validate", s.Validate())
		check("compare.Config.Validate", compare.Config{Spec: s}.Validate())

		tt, err := torchrun.New(ctx, c.Config, nil)
		if tt != nil {
			tt.Close()
		}
		check("torchrun.New", err)
		tf, err := tfrun.New(ctx, c.Config, nil)
		if tf != nil {
			tf.Close()
		}
		check("tfrun.New", err)

		for _, cmd := range []string{"train", "compare"} {
			args := append([]string{cmd}, s.Args()...)
			if cmd == "compare" {
				args = append(slicesWithout(args, "--framework", 1), "--out", t.TempDir())
			}
			_, stderr, code := runCLI(t, append(args, "--quiet")...)
			if code != 2 || !strings.Contains(stderr, want.Error()) {
				t.Errorf("%s: fwbench %s: got exit %d and stderr %q, want exit 2 and %q", c.Name, cmd, code, stderr, want)
			}
		}
	}
}

// slicesWithout returns args without the flag name and the n values after it.
func slicesWithout(args []string, name string, n int) []string {
	var out []string
	for i := 0; i < len(args); i++ {
		if args[i] == name {
			i += n
			continue
		}
		out = append(out, args[i])
	}
	return out
}

// TestArgsRoundTrip: compare's children read back the Spec their parent rendered (Spec.Args
// through the train command's flags), every recipe field but Classes included.
func TestArgsRoundTrip(t *testing.T) {
	s := compare.PaperSpec()
	s.Framework, s.Data, s.Weights, s.Checkpoint = fwTF, "data", "w.pth", "ck"
	s.Optimizer, s.Beta1, s.Beta2, s.Eps, s.WeightDecay, s.Nesterov = recipe.SGD, 0.8, 0.99, 1e-7, 5e-4, true
	s.Threads, s.InterOpThreads, s.Device, s.Precision, s.FreezeLoadedHead = 3, 1, "cuda:1", recipe.BF16, true
	s.ChannelsLast, s.CUDNNBenchmark, s.XLA, s.Deterministic = true, true, true, true
	s.MaxPixels, s.Strict, s.AllowPartialWeights, s.StepsPerEpoch, s.TargetAccuracy = 1000, true, true, 7, 0.5
	var got compare.Spec
	cmd := trainCommand()
	cmd.Action = func(c *cli.Context) error {
		got = specFrom(c, compare.DefaultSpec())
		got.Framework = frameworkName(c.String("framework"))
		return nil
	}
	app := &cli.App{Commands: []*cli.Command{cmd}}
	if err := app.Run(append([]string{"fwbench", "train"}, s.Args()...)); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, s) {
		t.Errorf("got  %+v\nwant %+v", got, s)
	}
}
