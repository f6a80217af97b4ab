// Command fwbench trains VGG image classifiers with the real TensorFlow C API and the real
// libtorch, and compares them fairly: the same data, batches, initial weights and
// hyper-parameters, each framework in its own process, with a report people can read and
// programs can parse.
//
//	fwbench doctor [--json]
//	fwbench train --framework torch|tensorflow [flags]
//	fwbench compare [--data DIR] [--frameworks tensorflow,torch] [--repeat R] [--out DIR] [flags]
//	fwbench dataset synth|inspect|crawl ...
//
// Exit status: 0 success, 1 failure, 2 invalid input (checked before any native call),
// 130/143 interrupted by SIGINT/SIGTERM after writing a checkpoint (and a partial report).
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/fwbench/fwbench/compare"
)

func main() {
	os.Exit(run(os.Args))
}

func run(args []string) int {
	// TensorFlow's INFO lines (oneDNN notices) drown the progress output; users can still
	// ask for them with TF_CPP_MIN_LOG_LEVEL=0.
	if os.Getenv("TF_CPP_MIN_LOG_LEVEL") == "" {
		os.Setenv("TF_CPP_MIN_LOG_LEVEL", "1")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	var got os.Signal
	go func() {
		s := <-sigs
		got = s
		fmt.Fprintf(os.Stderr, "\nfwbench: %v: finishing the current step, then writing a checkpoint (press again to abort)\n", s)
		cancel()
		<-sigs
		fmt.Fprintln(os.Stderr, "fwbench: aborted")
		os.Exit(exitCode(s))
	}()

	app := &cli.App{
		Name:  "fwbench",
		Usage: "a fair TensorFlow vs PyTorch training comparison (VGG16, real native runtimes)",
		Commands: []*cli.Command{
			doctorCommand(),
			trainCommand(),
			compareCommand(),
			datasetCommand(),
		},
		ExitErrHandler: func(*cli.Context, error) {}, // errors are reported below, once
	}
	err := app.RunContext(ctx, args)
	if err == nil {
		return 0
	}
	var ec cli.ExitCoder
	switch {
	case errors.Is(err, compare.ErrInterrupted) || (ctx.Err() != nil && got != nil):
		fmt.Fprintf(os.Stderr, "fwbench: interrupted: %v\n", err)
		return exitCode(got)
	case errors.Is(err, compare.ErrInvalid):
		fmt.Fprintf(os.Stderr, "fwbench: %v\n", err)
		return 2
	case errors.As(err, &ec):
		if msg := err.Error(); msg != "" {
			fmt.Fprintf(os.Stderr, "fwbench: %s\n", msg)
		}
		return ec.ExitCode()
	default:
		fmt.Fprintf(os.Stderr, "fwbench: %v\n", err)
		if isUsage(err) {
			return 2
		}
		return 1
	}
}

func exitCode(s os.Signal) int {
	if s == syscall.SIGTERM {
		return 143
	}
	return 130
}

// isUsage reports whether err came from flag parsing (an unknown flag, a malformed value).
func isUsage(err error) bool {
	for _, p := range []string{"flag provided but not defined", "invalid value", "invalid boolean", "Required flag", "No help topic"} {
		if strings.Contains(err.Error(), p) {
			return true
		}
	}
	return false
}
