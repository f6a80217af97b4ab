package nvml

import (
	"errors"
	"fmt"
	"sync"
	"time"
)

// Peak samples a process's GPU memory in a goroutine and keeps the largest
// value (StartPeak). Stop ends it.
type Peak struct {
	sample  func() (used int64, listed bool, err error)
	closeFn func() error
	what    string // "process 12 on device 0", for ErrNotListed
	stop    chan struct{}
	done    chan struct{}
	once    sync.Once

	// Written by the sampling goroutine until done is closed, then by Stop.
	peak    int64
	samples int
	listed  bool
	err     error
}

// StartPeak opens NVML, takes a first sample of ProcessUsedBytes(device, pid)
// and then one every interval, until Stop. A process that NVML does not list
// yet (no CUDA context) samples as 0. Where NVML is unavailable the error
// wraps ErrUnavailable and nothing runs.
func StartPeak(device, pid int, every time.Duration) (*Peak, error) {
	if every <= 0 {
		return nil, fmt.Errorf("nvml: sampling interval %v: want more than 0", every)
	}
	l, err := Open()
	if err != nil {
		return nil, err
	}
	sample := func() (int64, bool, error) {
		n, err := l.ProcessUsedBytes(device, pid)
		if errors.Is(err, ErrNotListed) {
			return 0, false, nil
		}
		return n, err == nil, err
	}
	return startPeak(sample, l.Close, every, fmt.Sprintf("%s: process %d", deviceName(device), pid))
}

// startPeak runs sample every interval in a goroutine; closeFn is called once
// by Stop (or when the first sample fails).
func startPeak(sample func() (int64, bool, error), closeFn func() error, every time.Duration, what string) (*Peak, error) {
	p := &Peak{sample: sample, closeFn: closeFn, what: what, stop: make(chan struct{}), done: make(chan struct{})}
	if !p.take() {
		closeFn()
		return nil, p.err
	}
	go p.loop(every)
	return p, nil
}

func (p *Peak) loop(every time.Duration) {
	defer close(p.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
			if !p.take() {
				return
			}
		}
	}
}

// take records one sample; false ends the sampling (p.err is set).
func (p *Peak) take() bool {
	n, listed, err := p.sample()
	if err != nil {
		p.err = err
		return false
	}
	p.samples++
	p.listed = p.listed || listed
	p.peak = max(p.peak, n)
	return true
}

// Stop ends the sampling (after a last sample, so that the state at the end
// counts), closes NVML and returns the largest figure seen and how many
// samples were taken. The error is the sampler's, if one failed (sampling
// ended there; peak is the largest before it), or wraps ErrNotListed when
// NVML never listed the process. Stop is safe to call more than once, and
// returns the same each time.
func (p *Peak) Stop() (peak int64, samples int, err error) {
	if p == nil {
		return 0, 0, errors.New("nvml: stop: no sampler")
	}
	p.once.Do(func() {
		close(p.stop)
		<-p.done
		if p.err == nil {
			p.take()
		}
		if err := p.closeFn(); err != nil && p.err == nil {
			p.err = err
		}
		if p.err == nil && !p.listed {
			p.err = fmt.Errorf("nvml: %s %w in %d samples (NVML names processes by their host pid: in a container, run it with the host's PID namespace)", p.what, ErrNotListed, p.samples)
		}
	})
	return p.peak, p.samples, p.err
}
