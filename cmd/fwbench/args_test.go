package main

import (
	"encoding/json"
	"errors"
	"regexp"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
)

// Issue #17 items 3 and 9: flags after positional arguments, stray arguments, usage exit
// statuses, and a start without TensorFlow's log.

// runQuietCLI runs fwbench like runCLI but with TF_CPP_MIN_LOG_LEVEL removed from the
// environment (unless env sets it), so that fwbench's own choice of level is what is tested.
func runQuietCLI(t *testing.T, env []string, args ...string) (string, string, int) {
	t.Helper()
	return runCLIWith(t, cliRun{env: env, unset: []string{tfLogEnv}}, args...)
}

func TestArgsUsageErrorsExitTwo(t *testing.T) {
	tests := []struct {
		name string
		args []string
		msg  string // what the message on stderr must contain
	}{
		{"stray argument before flags", []string{"train", "extra-arg", "-f", "torch", "--data", smallDS, "--epochs", "0"}, `"extra-arg"`},
		{"stray argument between flags", []string{"train", "-f", "torch", "--data", smallDS, "extra", "--image-size", "33"}, `"extra"`},
		{"flag after a stray argument is still read", []string{"train", "-f", "torch", "--data", smallDS, "--quiet", "--image-size", "33"}, "multiple of 32"},
		{"compare takes no argument", []string{"compare", "--data", smallDS, "stray"}, `"stray"`},
		{"doctor takes no argument", []string{"doctor", "stray"}, `"stray"`},
		{"inspect takes one folder", []string{"dataset", "inspect", "--json", smallDS, "extra"}, `"extra"`},
		{"inspect without its folder", []string{"dataset", "inspect", "--json"}, "want one folder"},
		{"unknown command", []string{"nosuch"}, `unknown command "nosuch"`},
		{"unknown dataset command", []string{"dataset", "nosuch"}, `unknown command "nosuch"`},
		{"help on an unknown command", []string{"help", "nosuch"}, "nosuch"},
		{"unknown flag after an argument", []string{"dataset", "inspect", smallDS, "--no-such-flag"}, "flag provided but not defined"},
		{"bad flag value", []string{"train", "--epochs", "abc"}, `invalid value "abc"`},
		{"bool flag given a separate value", []string{"train", "--data", smallDS, "--quiet", "false"}, `"false"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, stderr, code := runQuietCLI(t, nil, tt.args...)
			if code != 2 || !strings.Contains(stderr, tt.msg) {
				t.Errorf("fwbench %s: got exit %d and stderr %q, want exit 2 and a message containing %s", strings.Join(tt.args, " "), code, stderr, tt.msg)
			}
		})
	}
}

func TestArgsFlagsAfterPositional(t *testing.T) {
	tests := []struct {
		name string
		args []string
	}{
		{"json after DIR", []string{"dataset", "inspect", smallDS, "--json"}},
		{"flags on both sides", []string{"dataset", "inspect", "--seed", "3", smallDS, "--val-split", "0.5", "--json"}},
		{"global --verbose after the command", []string{"dataset", "inspect", smallDS, "--json", "--verbose"}},
		{"DIR after --", []string{"dataset", "inspect", "--json", "--", smallDS}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, stderr, code := runQuietCLI(t, nil, tt.args...)
			var r struct {
				Path    string            `json:"path"`
				Classes []json.RawMessage `json:"classes"`
			}
			if code != 0 {
				t.Fatalf("fwbench %s: got exit %d, want 0\n%s", strings.Join(tt.args, " "), code, stderr)
			}
			if err := json.Unmarshal([]byte(out), &r); err != nil {
				t.Fatalf("fwbench %s: stdout is not the JSON report: %v\n%s", strings.Join(tt.args, " "), err, out)
			}
			// smallDS is made with --classes 3 (cli_test.go's TestMain).
			if r.Path != smallDS || len(r.Classes) != 3 {
				t.Errorf("got path %q and %d classes, want %q and 3", r.Path, len(r.Classes), smallDS)
			}
		})
	}
}

// tfLogLine matches what TensorFlow writes through absl and its own logging: a line that
// starts with a severity letter and MMDD, and the start-up notices named in issue #17.
var tfLogLine = regexp.MustCompile(`(?m)^[IWEF]\d{4} \d\d:\d\d:\d\d|oneDNN custom operations|cpu_feature_guard|This TensorFlow binary|absl::InitializeLog`)

func TestQuietStart(t *testing.T) {
	tests := []struct {
		name    string
		env     []string
		args    []string
		wantLog bool
	}{
		{"help", nil, []string{"--help"}, false},
		{"compare help", nil, []string{"compare", "--help"}, false},
		{"train help", nil, []string{"train", "--help"}, false},
		{"doctor", nil, []string{"doctor"}, false},
		{"doctor json", nil, []string{"doctor", "--json"}, false},
		{"verbose=false", nil, []string{"--verbose=false", "doctor"}, false},
		// doctor starts TensorFlow's CPU device, which logs cpu_feature_guard's INFO line on
		// every x86 CPU this project runs on (the pip build is not compiled for AVX2/FMA).
		{"verbose", nil, []string{"--verbose", "doctor"}, true},
		{"verbose after the command", nil, []string{"doctor", "--verbose"}, true},
		{"verbose overrides the environment", []string{tfLogEnv + "=3"}, []string{"doctor", "--verbose"}, true},
		{"the environment's level is kept", []string{tfLogEnv + "=0"}, []string{"doctor"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, stderr, code := runQuietCLI(t, tt.env, tt.args...)
			if code != 0 {
				t.Fatalf("fwbench %s: got exit %d, want 0\n%s", strings.Join(tt.args, " "), code, stderr)
			}
			got := tfLogLine.FindString(out + stderr)
			if (got != "") != tt.wantLog {
				t.Errorf("fwbench %s (env %v): got TensorFlow log %q, want a log line: %v\nstderr:\n%s", strings.Join(tt.args, " "), tt.env, got, tt.wantLog, stderr)
			}
		})
	}
}

func TestNormalizeArgs(t *testing.T) {
	app := &cli.App{
		Name:     "fwbench",
		Flags:    []cli.Flag{&cli.BoolFlag{Name: "verbose"}},
		Commands: []*cli.Command{doctorCommand(), trainCommand(), compareCommand(), datasetCommand()},
	}
	tests := []struct {
		in, want string // space-separated arguments after the program's name
	}{
		{"train extra -f torch --epochs 0", "train -f torch --epochs 0 -- extra"},
		{"train -f torch extra --image-size=33 --quiet", "train -f torch --image-size=33 --quiet -- extra"},
		{"train --lr -0.1 --quiet", "train --lr -0.1 --quiet"},
		{"dataset inspect DIR --json --seed 3", "dataset inspect --json --seed 3 -- DIR"},
		{"dataset inspect DIR --verbose", "--verbose dataset inspect -- DIR"},
		{"--verbose doctor --json", "--verbose doctor --json"},
		{"dataset inspect --json -- -odd", "dataset inspect --json -- -odd"},
		{"help train", "help train"},
		{"dataset", "dataset"},
		{"", ""},
	}
	for _, tt := range tests {
		args := append([]string{"fwbench"}, strings.Fields(tt.in)...)
		got, err := normalizeArgs(app, args)
		if err != nil {
			t.Errorf("normalizeArgs(%q): %v", tt.in, err)
			continue
		}
		if g := strings.Join(got[1:], " "); g != tt.want {
			t.Errorf("normalizeArgs(%q): got %q, want %q", tt.in, g, tt.want)
		}
	}
	for _, in := range []string{"nosuch", "dataset nosuch", "--verbose nosuch"} {
		_, err := normalizeArgs(app, append([]string{"fwbench"}, strings.Fields(in)...))
		var ec cli.ExitCoder
		if !errors.As(err, &ec) || ec.ExitCode() != 2 {
			t.Errorf("normalizeArgs(%q): got %v, want a usage error (exit 2)", in, err)
		}
	}
}

func TestTFLogLevel(t *testing.T) {
	tests := []struct {
		args []string
		cur  string
		set  bool
		want string
	}{
		{[]string{"fwbench", "doctor"}, "", false, quietLevel},
		{[]string{"fwbench", "doctor"}, "1", true, "1"},
		{[]string{"fwbench", "--verbose", "doctor"}, "3", true, "0"},
		{[]string{"fwbench", "doctor", "-verbose"}, "", false, "0"},
		{[]string{"fwbench", "doctor", "--verbose=false"}, "", false, quietLevel},
		{[]string{"fwbench", "dataset", "inspect", "--", "--verbose"}, "", false, quietLevel},
	}
	for _, tt := range tests {
		if got := tfLogLevel(tt.args, tt.cur, tt.set); got != tt.want {
			t.Errorf("tfLogLevel(%q, %q, %v): got %q, want %q", tt.args, tt.cur, tt.set, got, tt.want)
		}
	}
}
