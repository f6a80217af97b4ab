package main

// Argument handling. urfave/cli/v2 reads a command's flags with Go's flag package, which
// stops at the first positional argument: `fwbench train extra -f torch --epochs 0` would
// train the defaults and ignore every flag after "extra". normalizeArgs reorders the command
// line before the App sees it, flags (with their values) first and positional arguments
// after a "--", and checkPositionals gives every leaf command a Before hook that refuses
// arguments it does not take. Which flags take a value comes from the commands' own Flags.

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"
)

// usageError is a mistake on the command line: exit status 2, one message on stderr.
func usageError(format string, args ...any) cli.ExitCoder {
	return cli.Exit(fmt.Sprintf(format, args...), 2)
}

// normalizeArgs returns args (the program's name first) with, for the command they name,
// its flags and their values before its positional arguments. Global flags written after
// the command (say `train --verbose`) move before it. A "--" ends the flags, as in Go's flag
// package. An unknown command or subcommand is a usage error. Anything urfave/cli handles by
// itself (no command, `help`, an unknown flag) is passed through for it to report.
func normalizeArgs(app *cli.App, args []string) ([]string, error) {
	if len(args) < 2 {
		return args, nil
	}
	rest := args[1:]
	n := leadingFlags(rest, app.Flags)
	global := append([]string{}, rest[:n]...)
	rest = rest[n:]
	if len(rest) == 0 || rest[0] == "--" || isHelpCommand(rest[0]) {
		return args, nil
	}
	cmd := findCommand(app.Commands, rest[0])
	if cmd == nil {
		return nil, usageError("unknown command %q (commands: %s; see fwbench --help)", rest[0], commandNames(app.Commands))
	}
	path := []string{rest[0]}
	rest = rest[1:]
	for len(cmd.Subcommands) > 0 {
		n := leadingFlags(rest, cmd.Flags)
		path = append(path, rest[:n]...)
		rest = rest[n:]
		if len(rest) == 0 || rest[0] == "--" || isHelpCommand(rest[0]) {
			return args, nil
		}
		sub := findCommand(cmd.Subcommands, rest[0])
		if sub == nil {
			return nil, usageError("%s: unknown command %q (commands: %s)", cmd.Name, rest[0], commandNames(cmd.Subcommands))
		}
		path = append(path, rest[0])
		cmd, rest = sub, rest[1:]
	}
	flags, hoisted, positionals := splitLeaf(rest, cmd.Flags, app.Flags)
	out := append([]string{args[0]}, global...)
	out = append(out, hoisted...)
	out = append(out, path...)
	out = append(out, flags...)
	if len(positionals) > 0 {
		out = append(out, "--")
		out = append(out, positionals...)
	}
	return out, nil
}

// splitLeaf sorts a leaf command's arguments into its own flags (with their values), global
// flags it does not define, and positional arguments, keeping the order within each.
func splitLeaf(args []string, own, global []cli.Flag) (flags, hoisted, positionals []string) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			positionals = append(positionals, args[i+1:]...)
			break
		}
		name, inline, ok := flagToken(a)
		if !ok {
			positionals = append(positionals, a)
			continue
		}
		dst := &flags
		f := lookupFlag(own, name)
		if f == nil {
			if g := lookupFlag(global, name); g != nil {
				f, dst = g, &hoisted
			}
		}
		*dst = append(*dst, a)
		if f != nil && !inline && takesValue(f) && i+1 < len(args) {
			i++
			*dst = append(*dst, args[i])
		}
	}
	return flags, hoisted, positionals
}

// leadingFlags counts the arguments at the start of args that are flags of flags or their
// values: where a command's name or its first positional argument starts.
func leadingFlags(args []string, flags []cli.Flag) int {
	i := 0
	for i < len(args) {
		name, inline, ok := flagToken(args[i])
		if !ok {
			break
		}
		i++
		if f := lookupFlag(flags, name); f != nil && !inline && takesValue(f) && i < len(args) {
			i++
		}
	}
	return i
}

// flagToken reports whether a is a flag as Go's flag package reads it ("-x", "--x",
// "--x=v"), with the flag's name and whether the value is in the same argument. "-" and
// "--" are not flags.
func flagToken(a string) (name string, inline, ok bool) {
	if len(a) < 2 || a[0] != '-' || a == "--" {
		return "", false, false
	}
	name = strings.TrimPrefix(a[1:], "-")
	if k := strings.IndexByte(name, '='); k >= 0 {
		return name[:k], true, true
	}
	return name, false, true
}

// lookupFlag finds the flag called name (or one of its aliases) among flags and the help
// flag that urfave/cli adds to every command.
func lookupFlag(flags []cli.Flag, name string) cli.Flag {
	for _, f := range append(flags, cli.HelpFlag) {
		for _, n := range f.Names() {
			if n == name {
				return f
			}
		}
	}
	return nil
}

// takesValue reports whether f reads the next argument as its value (a boolean flag does not).
func takesValue(f cli.Flag) bool {
	if v, ok := f.(interface{ TakesValue() bool }); ok {
		return v.TakesValue()
	}
	return true
}

func findCommand(cmds []*cli.Command, name string) *cli.Command {
	for _, c := range cmds {
		if c.HasName(name) {
			return c
		}
	}
	return nil
}

func isHelpCommand(name string) bool { return name == "help" || name == "h" }

func commandNames(cmds []*cli.Command) string {
	var names []string
	for _, c := range cmds {
		if !c.Hidden {
			names = append(names, c.Name)
		}
	}
	return strings.Join(names, ", ")
}

// wantPositionals is the number of positional arguments a command takes: one per word of its
// ArgsUsage ("DIR" is one), none without one.
func wantPositionals(c *cli.Command) int {
	return len(strings.Fields(c.ArgsUsage))
}

// checkPositionals gives every leaf command under cmds a Before hook that refuses more
// positional arguments than wantPositionals, and every command an OnUsageError
// that turns flag-parsing errors into usage errors (exit 2, one message).
func checkPositionals(cmds []*cli.Command, parent string) {
	for _, c := range cmds {
		full := strings.TrimSpace(parent + " " + c.Name)
		if c.OnUsageError == nil {
			c.OnUsageError = onUsageError(full)
		}
		if len(c.Subcommands) > 0 {
			checkPositionals(c.Subcommands, full)
			continue
		}
		before, want := c.Before, wantPositionals(c)
		c.Before = func(ctx *cli.Context) error {
			if err := positionalError(full, c.ArgsUsage, want, ctx.Args().Slice()); err != nil {
				return err
			}
			if before != nil {
				return before(ctx)
			}
			return nil
		}
	}
}

// positionalError is the usage error for more than want positional arguments, or nil. Too
// few is left to the command, which says what it misses (dataset's oneDir).
func positionalError(cmd, usage string, want int, got []string) error {
	switch {
	case len(got) > want && want == 0:
		return usageError("%s: unexpected argument %q (%s takes no arguments; flags start with --)", cmd, got[0], cmd)
	case len(got) > want:
		return usageError("%s: unexpected argument %q (want %s)", cmd, got[want], usage)
	}
	return nil
}

func onUsageError(cmd string) cli.OnUsageErrorFunc {
	return func(_ *cli.Context, err error, _ bool) error {
		return usageError("%s: %v (see fwbench %s --help)", cmd, err, cmd)
	}
}

// verboseRequested reports whether args ask for --verbose anywhere before a "--": the
// flag is global, and normalizeArgs moves it before the command.
func verboseRequested(args []string) bool {
	v := false
	for _, a := range args[min(1, len(args)):] {
		if a == "--" {
			break
		}
		name, inline, ok := flagToken(a)
		if !ok || name != "verbose" {
			continue
		}
		v = true
		if inline {
			b, err := strconv.ParseBool(a[strings.IndexByte(a, '=')+1:])
			v = err == nil && b
		}
	}
	return v
}
