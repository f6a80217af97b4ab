package dist

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/fwbench/fwbench/recipe"
)

// Errors that callers tell apart with errors.Is.
var (
	// ErrInvalid is recipe.ErrInvalid: the configuration is the user's
	// mistake (the CLI exits 2).
	ErrInvalid = recipe.ErrInvalid
	// ErrPortBusy is wrapped when the rendezvous port, or a port the
	// launcher needs, is in use.
	ErrPortBusy = errors.New("port in use")
	// ErrMismatch is wrapped when ranks disagree: recipe hash, world size,
	// duplicate rank, protocol version, worker list or a Check value.
	ErrMismatch = errors.New("ranks disagree")
	// ErrLost is wrapped by Group.Err (and by Step and Check afterwards)
	// when a rank or the master is lost.
	ErrLost = errors.New("group lost")
	// ErrTimeout is wrapped when Join's deadline passes before every rank
	// joined.
	ErrTimeout = errors.New("timed out")
	// ErrClosed is returned by the methods of a closed Group.
	ErrClosed = errors.New("group closed")
)

// MaxWorldSize bounds Config.WorldSize and LaunchOptions.N.
const MaxWorldSize = 1024

// Timings of the protocol (see the package doc).
const (
	// Heartbeat is how often every connection sends a message when it has
	// nothing else to say.
	Heartbeat = time.Second
	// LostAfter is how long a silent connection lives: a rank (or the
	// master) that sent nothing for this long is lost.
	LostAfter = 10 * time.Second
	// CloseWait bounds how long rank 0's Close waits for the others to
	// leave before it stops serving.
	CloseWait = 30 * time.Second
	// MismatchLinger bounds how long rank 0 keeps serving after a refused
	// join, so that ranks still connecting learn why.
	MismatchLinger = 5 * time.Second
)

// Config places this process in a group. The CLI fills it from flags
// (--rank, --world-size, --master, --workers) or from FromEnv.
type Config struct {
	Rank, WorldSize, LocalRank int
	// Master is HOST:PORT of rank 0's rendezvous service. Rank 0 listens on
	// exactly HOST; libtorch's store is HOST:PORT+1.
	Master string
	// Workers is every rank's TensorFlow server address (host:port),
	// indexed by rank. When empty, rank r's is the local address of its
	// connection to the master with port PORT+2+r.
	Workers []string
	// Timeout bounds Join and every Step and Check
	// (recipe.DefaultCollectiveTimeout when zero).
	Timeout time.Duration

	t timing // zero: the exported defaults (tests shorten them)
}

// timing holds the protocol's durations; zero fields take the defaults.
type timing struct {
	heartbeat, lostAfter, closeWait, linger time.Duration
}

func (t timing) withDefaults() timing {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&t.heartbeat, Heartbeat)
	def(&t.lostAfter, LostAfter)
	def(&t.closeWait, CloseWait)
	def(&t.linger, MismatchLinger)
	return t
}

func (c Config) timeout() time.Duration {
	if c.Timeout > 0 {
		return c.Timeout
	}
	return recipe.DefaultCollectiveTimeout
}

// FromEnv reads torchrun's variables (RANK, WORLD_SIZE, MASTER_ADDR,
// MASTER_PORT, LOCAL_RANK) with getenv. ok is false when WORLD_SIZE is unset
// (or empty). RANK, MASTER_ADDR and MASTER_PORT are then required;
// LOCAL_RANK defaults to 0. A malformed value is an error wrapping ErrInvalid
// that names the variable; the result is checked with Validate.
func FromEnv(getenv func(string) string) (c Config, ok bool, err error) {
	ws := getenv("WORLD_SIZE")
	if ws == "" {
		return Config{}, false, nil
	}
	num := func(name string, required bool) (int, error) {
		v := getenv(name)
		if v == "" {
			if required {
				return 0, fmt.Errorf("dist: %w: %s is not set (WORLD_SIZE is %s)", ErrInvalid, name, ws)
			}
			return 0, nil
		}
		n, err := strconv.Atoi(v)
		if err != nil {
			return 0, fmt.Errorf("dist: %w: %s=%q is not an integer", ErrInvalid, name, v)
		}
		return n, nil
	}
	if c.WorldSize, err = num("WORLD_SIZE", true); err != nil {
		return Config{}, true, err
	}
	if c.Rank, err = num("RANK", true); err != nil {
		return Config{}, true, err
	}
	if c.LocalRank, err = num("LOCAL_RANK", false); err != nil {
		return Config{}, true, err
	}
	host := getenv("MASTER_ADDR")
	if host == "" {
		return Config{}, true, fmt.Errorf("dist: %w: MASTER_ADDR is not set (WORLD_SIZE is %s)", ErrInvalid, ws)
	}
	port, err := num("MASTER_PORT", true)
	if err != nil {
		return Config{}, true, err
	}
	c.Master = net.JoinHostPort(host, strconv.Itoa(port))
	return c, true, c.Validate()
}

// Validate checks c: world size in [1, MaxWorldSize], rank and local rank in
// [0, world size), the master HOST:PORT with PORT+1+WorldSize ≤ 65535 (the
// ports of the store and of every TensorFlow server), one host:port worker
// per rank when Workers is given, and a non-negative Timeout. Every error
// wraps ErrInvalid.
func (c Config) Validate() error {
	n := c.WorldSize
	switch {
	case n < 1:
		return fmt.Errorf("dist: %w: world size %d must be at least 1", ErrInvalid, n)
	case n > MaxWorldSize:
		return fmt.Errorf("dist: %w: world size %d is above %d", ErrInvalid, n, MaxWorldSize)
	case c.Rank < 0 || c.Rank >= n:
		return fmt.Errorf("dist: %w: rank %d is outside [0, %d) (world size %d)", ErrInvalid, c.Rank, n, n)
	case c.LocalRank < 0 || c.LocalRank >= n:
		return fmt.Errorf("dist: %w: local rank %d is outside [0, %d) (world size %d)", ErrInvalid, c.LocalRank, n, n)
	case c.Timeout < 0:
		return fmt.Errorf("dist: %w: timeout %v is negative", ErrInvalid, c.Timeout)
	}
	_, port, err := splitHostPort(c.Master)
	if err != nil {
		return fmt.Errorf("dist: %w: master: %v", ErrInvalid, err)
	}
	if last := port + 1 + n; last > 65535 {
		return fmt.Errorf("dist: %w: master port %d leaves no room for the store and %d TensorFlow servers (ports up to %d, above 65535)", ErrInvalid, port, n, last)
	}
	if c.Workers != nil {
		if len(c.Workers) != n {
			return fmt.Errorf("dist: %w: %d workers given for world size %d", ErrInvalid, len(c.Workers), n)
		}
		for r, w := range c.Workers {
			if _, _, err := splitHostPort(w); err != nil {
				return fmt.Errorf("dist: %w: worker %d: %v", ErrInvalid, r, err)
			}
		}
	}
	return nil
}

// splitHostPort parses HOST:PORT with a non-empty host and a port in
// [1, 65535].
func splitHostPort(s string) (string, int, error) {
	host, p, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, fmt.Errorf("%q is not HOST:PORT", s)
	}
	if host == "" {
		return "", 0, fmt.Errorf("%q has no host", s)
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 1 || port > 65535 {
		return "", 0, fmt.Errorf("%q: port %q is not in [1, 65535]", s, p)
	}
	return host, port, nil
}

// storeAddr is HOST:PORT+1 of master.
func storeAddr(master string) string {
	host, port, _ := splitHostPort(master)
	return net.JoinHostPort(host, strconv.Itoa(port+1))
}
