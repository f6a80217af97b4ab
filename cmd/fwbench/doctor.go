package main

import (
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"sort"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/fwbench/fwbench/compare"
)

// frameworkDoctor is what doctor reports for one framework.
type frameworkDoctor struct {
	Version     string   `json:"version"`
	Threads     int      `json:"threads"`
	CUDA        bool     `json:"cuda"`
	CUDADevices []string `json:"cuda_devices"`
	CUDAError   string   `json:"cuda_error,omitempty"`
	Libraries   []string `json:"libraries"`
}

type doctorReport struct {
	Go         string          `json:"go"`
	CPU        string          `json:"cpu"`
	Cores      int             `json:"cores"`
	TensorFlow frameworkDoctor `json:"tensorflow"`
	Torch      frameworkDoctor `json:"torch"`
}

func doctorCommand() *cli.Command {
	return &cli.Command{
		Name:  "doctor",
		Usage: "report the loaded native runtimes, their versions, threads and CUDA devices",
		Flags: []cli.Flag{&cli.BoolFlag{Name: "json", Usage: "print JSON"}},
		Action: func(c *cli.Context) error {
			libs := loadedLibraries()
			r := doctorReport{Go: runtime.Version(), CPU: compare.CPUModel(), Cores: runtime.NumCPU()}
			var missing []string
			fill := func(name string, f *frameworkDoctor, libNames ...string) {
				d, ok := compare.LookupFramework(name)
				if !ok {
					f.Version = "not built in"
					missing = append(missing, name)
					return
				}
				f.Version, f.Threads, f.Libraries = d.Version(), runtime.NumCPU(), filter(libs, libNames...)
				devs, err := d.CUDADevices()
				f.CUDADevices = append([]string{}, devs...)
				f.CUDA = len(devs) > 0
				if err != nil {
					f.CUDAError = err.Error()
				}
			}
			fill("tensorflow", &r.TensorFlow, "tensorflow")
			fill("torch", &r.Torch, "torch", "c10", "cgotorch", "gomp", "cudart")
			if c.Bool("json") {
				enc := json.NewEncoder(os.Stdout)
				enc.SetIndent("", "  ")
				if err := enc.Encode(r); err != nil {
					return err
				}
				if len(missing) > 0 {
					return cli.Exit("", 1)
				}
				return nil
			}
			fmt.Printf("go          %s\ncpu         %s (%d cores)\n", r.Go, r.CPU, r.Cores)
			for _, f := range []struct {
				name string
				d    frameworkDoctor
			}{{"tensorflow", r.TensorFlow}, {"torch", r.Torch}} {
				cuda := "no CUDA device"
				if f.d.CUDA {
					cuda = "CUDA: " + strings.Join(f.d.CUDADevices, ", ")
				} else if f.d.CUDAError != "" {
					cuda += " (" + f.d.CUDAError + ")"
				}
				fmt.Printf("%-11s %s, %d threads, %s\n", f.name, f.d.Version, f.d.Threads, cuda)
				for _, l := range f.d.Libraries {
					fmt.Printf("            %s\n", l)
				}
			}
			if len(missing) > 0 {
				return cli.Exit(fmt.Sprintf("this fwbench was built without %s: rebuild with scripts/setup.sh", strings.Join(missing, " and ")), 1)
			}
			return nil
		},
	}
}

// loadedLibraries lists the shared objects mapped into this process.
func loadedLibraries() []string {
	b, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		return nil
	}
	seen := map[string]bool{}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 6 && strings.Contains(f[5], ".so") {
			seen[f[5]] = true
		}
	}
	var out []string
	for p := range seen {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

func filter(libs []string, subs ...string) []string {
	out := []string{}
	for _, l := range libs {
		base := l[strings.LastIndex(l, "/")+1:]
		for _, s := range subs {
			if strings.Contains(base, s) {
				out = append(out, l)
				break
			}
		}
	}
	return out
}
