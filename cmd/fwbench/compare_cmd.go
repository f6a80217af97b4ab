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
		&cli.StringFlag{Name: "frameworks", Value: "tensorflow,torch", Usage: "comma-separated frameworks to compare"},
		&cli.IntFlag{Name: "repeat", Value: 2, Usage: "runs per framework (order alternates: A B B A ...)"},
		&cli.StringFlag{Name: "out", Value: "fwbench-report", Usage: "report folder"},
		&cli.StringFlag{Name: "preset", Usage: "paper: the study's setup (VGG16, features mode, torchvision head with the file's fc6/fc7 and a new last layer, augmentation, normalisation from the weights' origin)"},
		&cli.BoolFlag{Name: "allow-mismatch", Usage: "warn instead of stopping when the first-batch losses disagree"},
		&cli.Float64Flag{Name: "parity-tolerance", Value: 1e-3, Usage: "largest relative difference of the first-batch losses, and of the logits (relative to the largest |logit|), that passes"},
		&cli.Float64Flag{Name: "trajectory-tolerance", Value: 1e-3, Usage: "largest relative difference of the per-step training losses that the trajectory check passes"},
	)
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
			for _, f := range strings.Split(c.String("frameworks"), ",") {
				if f = strings.TrimSpace(f); f != "" {
					fws = append(fws, normFramework(f))
				}
			}
			if len(fws) == 0 {
				return fmt.Errorf("%w: --frameworks names no framework", compare.ErrInvalid)
			}
			exe, err := os.Executable()
			if err != nil {
				return err
			}
			if s.GPU() {
				for _, fw := range fws {
					if err := checkGPU(fw, s.Device); err != nil {
						return err
					}
				}
			}
			cfg := compare.Config{Spec: s, Frameworks: fws, Repeat: c.Int("repeat"), Out: c.String("out"),
				Preset: c.String("preset"), AllowMismatch: c.Bool("allow-mismatch"),
				ParityTolerance: c.Float64("parity-tolerance"), TrajectoryTolerance: c.Float64("trajectory-tolerance"), Exe: exe}
			progress := newProgress(c.Bool("quiet"), false)
			progress.setTotal(len(fws) * c.Int("repeat") * s.Epochs)
			rep, err := compare.Run(c.Context, cfg, progress.update)
			progress.close()
			if rep != nil {
				if !rep.Parity.Passed && len(rep.Parity.Losses) > 1 {
					fmt.Fprintf(os.Stderr, "\n*** WARNING: PARITY CHECK FAILED: %s ***\n\n", rep.Parity.Message)
				}
				fmt.Fprint(os.Stdout, rep.Table())
				abs, _ := filepath.Abs(cfg.Out)
				fmt.Fprintf(os.Stdout, "report: %s (report.json, report.csv, report.md, charts)\n", abs)
				if err == nil && len(rep.Failures) > 0 {
					err = errors.New("one or more runs failed; see the report")
				}
			}
			return err
		},
	}
}
