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
// Flags may come before or after a command's arguments. --verbose (anywhere before a "--")
// lets TensorFlow's own log through; without it fwbench starts TensorFlow at
// TF_CPP_MIN_LOG_LEVEL=2 (errors only) unless the environment sets a level.
//
// Exit status: 0 success, 1 failure, 2 invalid input or usage (checked before any native
// call), 130/143 interrupted by SIGINT/SIGTERM after writing a checkpoint (and a partial
// report).
package main

// libtensorflow is linked, and its static initialisers read TF_CPP_MIN_LOG_LEVEL (and may
// log: cpu_feature_guard, oneDNN) before any Go code runs; setting it from main is too late,
// and so is setenv from the executable's .preinit_array, which runs before them but whose
// environment libc's own initialiser then resets to the one the process started with. So
// fwbench_quiet_tf, run from .preinit_array (glibc calls it with argc, argv and envp) before
// any library's initialiser, starts the binary again, once, with the level in its environment
// when that environment lacks it. It follows tfLogLevel's rule: --verbose (before a "--")
// means 0, else an existing value stays, else 2. Should exec fail, fwbench goes on.

/*
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int fwbench_true(const char *v) {
	static const char *const yes[] = {"1", "t", "T", "TRUE", "true", "True", NULL};
	for (int i = 0; yes[i]; i++) {
		if (strcmp(v, yes[i]) == 0) {
			return 1;
		}
	}
	return 0;
}

static void fwbench_quiet_tf(int argc, char **argv, char **envp) {
	static const char key[] = "TF_CPP_MIN_LOG_LEVEL=";
	const size_t klen = sizeof key - 1;
	int verbose = 0;
	for (int i = 1; i < argc && argv[i] != NULL; i++) {
		const char *a = argv[i];
		if (strcmp(a, "--") == 0) {
			break;
		}
		if (a[0] != '-') {
			continue;
		}
		a += (a[1] == '-') ? 2 : 1;
		if (strcmp(a, "verbose") == 0) {
			verbose = 1;
		} else if (strncmp(a, "verbose=", 8) == 0) {
			verbose = fwbench_true(a + 8);
		}
	}
	size_t n = 0;
	const char *cur = NULL;
	for (; envp != NULL && envp[n] != NULL; n++) {
		if (strncmp(envp[n], key, klen) == 0) {
			cur = envp[n] + klen;
		}
	}
	if (verbose ? (cur != NULL && strcmp(cur, "0") == 0) : cur != NULL) {
		return;
	}
	char **env = malloc((n + 2) * sizeof *env);
	if (env == NULL) {
		return;
	}
	size_t m = 0;
	for (size_t i = 0; i < n; i++) {
		if (strncmp(envp[i], key, klen) != 0) {
			env[m++] = envp[i];
		}
	}
	env[m++] = verbose ? "TF_CPP_MIN_LOG_LEVEL=0" : "TF_CPP_MIN_LOG_LEVEL=2";
	env[m] = NULL;
	// Run through the dynamic loader by hand (ld-linux-x86-64.so.2 ./fwbench ...),
	// /proc/self/exe is the loader, which would take argv[1] for the program: go on.
	char self[4096];
	ssize_t k = readlink("/proc/self/exe", self, sizeof self - 1);
	if (k > 0) {
		self[k] = 0;
		const char *base = strrchr(self, '/');
		base = base ? base + 1 : self;
		if (strncmp(base, "ld-", 3) == 0 || strncmp(base, "ld.so", 5) == 0) {
			free(env);
			return;
		}
	}
	execve("/proc/self/exe", argv, env);
	free(env); // exec failed: go on with TensorFlow's default level
}

__attribute__((section(".preinit_array"), used))
static void (*const fwbench_preinit)(int, char **, char **) = fwbench_quiet_tf;
*/
import "C"

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
	quietStart(os.Args)
	os.Exit(run(os.Args))
}

// tfLogEnv is TensorFlow's log threshold: 0 all, 1 warnings and up, 2 errors and up.
const tfLogEnv = "TF_CPP_MIN_LOG_LEVEL"

// quietLevel is the threshold fwbench starts TensorFlow with unless told otherwise: its INFO
// and WARNING lines (oneDNN, cpu_feature_guard) drown fwbench's own output.
const quietLevel = "2"

// tfLogLevel returns the threshold TensorFlow starts with for args, given the environment's
// value (set reports whether there is one): 0 with --verbose, else the environment's value,
// else quietLevel. fwbench_quiet_tf (above, in C) applies the same rule before TensorFlow
// starts; change both together.
func tfLogLevel(args []string, cur string, set bool) string {
	switch {
	case verboseRequested(args):
		return "0"
	case set:
		return cur
	}
	return quietLevel
}

// quietStart makes sure Go's environment holds the level fwbench_quiet_tf started TensorFlow
// with (it does unless exec failed), so that compare's children and the Keras reader inherit
// it, --verbose included, and start once.
func quietStart(args []string) {
	cur, set := os.LookupEnv(tfLogEnv)
	os.Setenv(tfLogEnv, tfLogLevel(args, cur, set))
}

func run(args []string) int {
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
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "verbose", Usage: "show TensorFlow's own log (TF_CPP_MIN_LOG_LEVEL=0); allowed after the command too"},
		},
		Commands: []*cli.Command{
			doctorCommand(),
			trainCommand(),
			compareCommand(),
			datasetCommand(),
		},
		OnUsageError:   onUsageError("fwbench"),
		ExitErrHandler: func(*cli.Context, error) {}, // errors are reported below, once
	}
	checkPositionals(app.Commands, "")
	args, err := normalizeArgs(app, args)
	if err != nil {
		fmt.Fprintf(os.Stderr, "fwbench: %v\n", err)
		return 2
	}
	err = app.RunContext(ctx, args)
	if err == nil {
		return 0
	}
	var ec cli.ExitCoder
	switch {
	case errors.Is(err, compare.ErrInterrupted) || (ctx.Err() != nil && got != nil):
		fmt.Fprintf(os.Stderr, "fwbench: interrupted: %s\n", errText(err))
		return exitCode(got)
	case errors.Is(err, compare.ErrInvalid):
		fmt.Fprintf(os.Stderr, "fwbench: %s\n", errText(err))
		return 2
	case errors.As(err, &ec):
		if msg := errText(err); msg != "" {
			fmt.Fprintf(os.Stderr, "fwbench: %s\n", msg)
		}
		if ec.ExitCode() == 3 && isUsage(err) { // urfave/cli's "No help topic for ..."
			return 2
		}
		return ec.ExitCode()
	default:
		fmt.Fprintf(os.Stderr, "fwbench: %s\n", errText(err))
		if isUsage(err) {
			return 2
		}
		return 1
	}
}

// errText is err's message for the one "fwbench: " line main prints: without the program's
// name where the error already starts with it.
func errText(err error) string { return strings.TrimPrefix(err.Error(), "fwbench: ") }

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
