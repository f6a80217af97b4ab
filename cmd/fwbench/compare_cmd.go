package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/fwbench/fwbench/compare"
)

func compareCommand() *cli.Command {
	d := compare.DefaultSpec()
	flags := append(specFlags(d),
		&cli.StringFlag{Name: "frameworks", Value: strings.Join(compare.Frameworks(), ","), Usage: "comma-separated frameworks to compare"},
		&cli.IntFlag{Name: "repeat", Value: 2, Usage: "runs per framework (order alternates: A B B A ...)"},
		&cli.StringFlag{Name: "out", Value: "fwbench-report", Usage: "report folder"},
		&cli.StringFlag{Name: "preset", Usage: "paper: the study's setup (VGG16, features mode, torchvision head with the file's fc6/fc7 and a new last layer, augmentation, normalisation from the weights' origin)"},
		&cli.BoolFlag{Name: "allow-mismatch", Usage: "warn instead of stopping when the first-batch losses disagree"},
		&cli.Float64Flag{Name: "parity-tolerance", Usage: "largest relative difference of the first-batch losses, and of the logits (relative to the largest |logit|), that passes (0: the precision's default, compare.DefaultTolerances)"},
		&cli.IntFlag{Name: "nproc", Value: 1, Usage: "also run each framework data-parallel in this many local processes (train --nproc) in every repeat, and report the scaling efficiency: images/s at N over N × images/s in one process"},
		&cli.Float64Flag{Name: "trajectory-tolerance", Usage: "largest relative difference of the per-step training losses that the trajectory check passes (0: the precision's default)"},
	)
	for _, f := range flags { // specFlags made these flags for this command alone
		if sf, ok := f.(*cli.StringFlag); ok && sf.Name == "resume" {
			sf.Usage = "an earlier comparison's checkpoint folder: each run resumes from FOLDER/<framework>-<repeat> where that holds a checkpoint, and starts afresh otherwise"
		}
		if sf, ok := f.(*cli.StringFlag); ok && sf.Name == "checkpoint" {
			sf.Usage = "folder for checkpoints: each run writes its own subfolder, FOLDER/<framework>-<repeat> (default: <out>/checkpoints)"
		}
	}
	return &cli.Command{
		Name:  "compare",
		Usage: "train with each framework in its own process under one configuration and report",
		Flags: flags,
		Action: func(c *cli.Context) error {
			base := d
			switch c.String("preset") {
			case "":
			case "paper":
				base = compare.PaperSpec()
			default:
				return fmt.Errorf("%w: unknown preset %q (want paper)", compare.ErrInvalid, c.String("preset"))
			}
			s := specFrom(c, base)
			var fws []string
			spelled := map[string]string{} // framework → the spelling that named it
			for _, f := range strings.Split(c.String("frameworks"), ",") {
				if f = strings.TrimSpace(f); f != "" {
					n := frameworkName(f)
					if prev, ok := spelled[n]; ok {
						return fmt.Errorf("%w: --frameworks names %s twice (%s and %s); each framework runs once per repeat", compare.ErrInvalid, n, prev, f)
					}
					spelled[n] = f
					fws = append(fws, n)
				}
			}
			if len(fws) == 0 {
				return fmt.Errorf("%w: --frameworks names no framework", compare.ErrInvalid)
			}
			// The library reads Repeat 0 as its default; on the command line 0 is a mistake.
			if r := c.Int("repeat"); r < 1 {
				return fmt.Errorf("%w: --repeat must be at least 1, got %d", compare.ErrInvalid, r)
			}
			exe, err := os.Executable()
			if err != nil {
				return err
			}
			cfg := compare.Config{Spec: s, Frameworks: fws, Repeat: c.Int("repeat"), Out: c.String("out"),
				Preset: c.String("preset"), AllowMismatch: c.Bool("allow-mismatch"),
				ParityTolerance: c.Float64("parity-tolerance"), TrajectoryTolerance: c.Float64("trajectory-tolerance"), Exe: exe,
				Nproc: c.Int("nproc")}
			if n := c.Int("nproc"); n < 1 {
				return fmt.Errorf("%w: --nproc must be at least 1, got %d", compare.ErrInvalid, n)
			} else if n > 1 {
				for _, fw := range fws {
					s := s
					s.Framework = fw
					if err := checkParallel(s, n, n); err != nil {
						return err
					}
				}
			}
			// Duplicate frameworks (torch,pytorch), bad tolerances: refused before any native call.
			if err := cfg.Validate(); err != nil {
				return err
			}
			for _, fw := range fws {
				if err := compare.CheckGPU(fw, s.Device); err != nil {
					return err
				}
			}
			progress := newProgress(c.Bool("quiet"), false)
			progress.setTotal(len(fws) * c.Int("repeat") * s.Epochs * min(c.Int("nproc"), 2))
			rep, err := compare.Run(c.Context, cfg, progress.update)
			progress.close()
			if rep != nil {
				if !rep.Parity.Passed && len(rep.Parity.Losses) > 1 {
					fmt.Fprintf(os.Stderr, "\n*** WARNING: PARITY CHECK FAILED: %s ***\n\n", rep.Parity.Message)
				}
				fmt.Fprint(os.Stdout, rep.Table())
				abs, _ := filepath.Abs(cfg.Out)
				fmt.Fprintf(os.Stdout, "report: %s (report.json, report.csv, report.md, charts)\n", abs)
				if len(rep.Failures) > 0 {
					// The failed runs first: they usually explain anything else that went wrong.
					err = errors.Join(fmt.Errorf("%d run(s) failed; see the report", len(rep.Failures)), err)
				}
			}
			return err
		},
	}
}
