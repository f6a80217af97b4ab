package dist

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestFromEnv(t *testing.T) {
	full := map[string]string{"RANK": "1", "WORLD_SIZE": "4", "MASTER_ADDR": "10.1.2.3", "MASTER_PORT": "29500", "LOCAL_RANK": "1"}
	with := func(k, v string) map[string]string {
		m := map[string]string{}
		for a, b := range full {
			m[a] = b
		}
		if v == "<unset>" {
			delete(m, k)
		} else {
			m[k] = v
		}
		return m
	}
	tests := []struct {
		name    string
		env     map[string]string
		want    Config
		ok      bool
		wantErr string // substring of an ErrInvalid error; "" for none
	}{
		{"unset", map[string]string{"RANK": "3"}, Config{}, false, ""},
		{"torchrun", full, Config{Rank: 1, WorldSize: 4, LocalRank: 1, Master: "10.1.2.3:29500"}, true, ""},
		{"no local rank", with("LOCAL_RANK", "<unset>"), Config{Rank: 1, WorldSize: 4, Master: "10.1.2.3:29500"}, true, ""},
		{"ipv6", with("MASTER_ADDR", "::1"), Config{Rank: 1, WorldSize: 4, LocalRank: 1, Master: "[::1]:29500"}, true, ""},
		{"world size not a number", with("WORLD_SIZE", "four"), Config{}, true, `WORLD_SIZE="four" is not an integer`},
		{"rank missing", with("RANK", "<unset>"), Config{}, true, "RANK is not set"},
		{"rank not a number", with("RANK", "1.5"), Config{}, true, `RANK="1.5" is not an integer`},
		{"local rank not a number", with("LOCAL_RANK", "x"), Config{}, true, `LOCAL_RANK="x" is not an integer`},
		{"addr missing", with("MASTER_ADDR", "<unset>"), Config{}, true, "MASTER_ADDR is not set"},
		{"port missing", with("MASTER_PORT", "<unset>"), Config{}, true, "MASTER_PORT is not set"},
		{"port not a number", with("MASTER_PORT", "http"), Config{}, true, `MASTER_PORT="http" is not an integer`},
		{"port out of range", with("MASTER_PORT", "70000"), Config{}, true, `port "70000" is not in [1, 65535]`},
		{"rank out of range", with("RANK", "4"), Config{}, true, "rank 4 is outside [0, 4)"},
		{"world size zero", with("WORLD_SIZE", "0"), Config{}, true, "world size 0 must be at least 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, ok, err := FromEnv(func(k string) string { return tt.env[k] })
			if ok != tt.ok {
				t.Errorf("got ok %v, want %v", ok, tt.ok)
			}
			if tt.wantErr != "" {
				if !errors.Is(err, ErrInvalid) || !strings.Contains(fmt.Sprint(err), tt.wantErr) {
					t.Errorf("got %v, want ErrInvalid with %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("got %v, want nil", err)
			}
			if !reflect.DeepEqual(c, tt.want) {
				t.Errorf("got %+v, want %+v", c, tt.want)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	ok := Config{Rank: 0, WorldSize: 2, Master: "127.0.0.1:29500"}
	edit := func(f func(*Config)) Config { c := ok; f(&c); return c }
	tests := []struct {
		name    string
		c       Config
		wantErr string
	}{
		{"ok", ok, ""},
		{"hostname", edit(func(c *Config) { c.Master = "node-1.cluster:29500" }), ""},
		{"workers", edit(func(c *Config) { c.Workers = []string{"a:1", "b:2"} }), ""},
		// 65535 - 1 - 2 = 65532: the store at 65533, rank 1's server at 65535.
		{"highest port", edit(func(c *Config) { c.Master = "127.0.0.1:65532" }), ""},
		{"port leaves no room", edit(func(c *Config) { c.Master = "127.0.0.1:65533" }), "master port 65533 leaves no room for the store and 2 TensorFlow servers (ports up to 65536"},
		{"world size 0", edit(func(c *Config) { c.WorldSize = 0 }), "world size 0 must be at least 1"},
		{"world size too big", edit(func(c *Config) { c.WorldSize = MaxWorldSize + 1 }), "world size 1025 is above 1024"},
		{"negative rank", edit(func(c *Config) { c.Rank = -1 }), "rank -1 is outside [0, 2)"},
		{"rank = world size", edit(func(c *Config) { c.Rank = 2 }), "rank 2 is outside [0, 2)"},
		{"local rank", edit(func(c *Config) { c.LocalRank = 2 }), "local rank 2 is outside [0, 2)"},
		{"timeout", edit(func(c *Config) { c.Timeout = -time.Second }), "timeout -1s is negative"},
		{"no master", edit(func(c *Config) { c.Master = "" }), `master: "" is not HOST:PORT`},
		{"master without port", edit(func(c *Config) { c.Master = "127.0.0.1" }), `master: "127.0.0.1" is not HOST:PORT`},
		{"master without host", edit(func(c *Config) { c.Master = ":29500" }), `master: ":29500" has no host`},
		{"master port 0", edit(func(c *Config) { c.Master = "127.0.0.1:0" }), `port "0" is not in [1, 65535]`},
		{"workers count", edit(func(c *Config) { c.Workers = []string{"a:1"} }), "1 workers given for world size 2"},
		{"worker address", edit(func(c *Config) { c.Workers = []string{"a:1", "b"} }), `worker 1: "b" is not HOST:PORT`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.c.Validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Errorf("got %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalid) || !strings.Contains(fmt.Sprint(err), tt.wantErr) {
				t.Errorf("got %v, want ErrInvalid with %q", err, tt.wantErr)
			}
		})
	}
}
