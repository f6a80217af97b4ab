package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/fwbench/fwbench/dataset"
)

// TestCrawlCLITargets runs `fwbench dataset crawl` against two loopback
// servers: the crawler refuses loopback without --allow-private-targets and
// a redirect to another port without --allow-redirects-off-host. No test
// here lets the binary dial anything but 127.0.0.1: 169.254.169.254 is only
// given as a literal endpoint, refused before any connection.
func TestCrawlCLITargets(t *testing.T) {
	var buf bytes.Buffer
	if err := encodeTestPNG(&buf); err != nil {
		t.Fatal(err)
	}
	png := buf.Bytes()
	var mu sync.Mutex
	hits := map[string]int{}
	count := func(p string) { mu.Lock(); hits[p]++; mu.Unlock() }
	hit := func(p string) int { mu.Lock(); defer mu.Unlock(); return hits[p] }

	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		count("other" + r.URL.Path)
		w.Write(append(append([]byte{}, png...), 0)) // other bytes, same image: not a duplicate
	}))
	defer other.Close()
	var srv *httptest.Server
	mux := http.NewServeMux()
	mux.HandleFunc("/search", func(w http.ResponseWriter, r *http.Request) {
		count(r.URL.Path)
		if r.URL.Query().Get("first") == "1" {
			fmt.Fprintf(w, `<img src="%s/a.png"><img src="%s/port.png">`, srv.URL, srv.URL)
		}
	})
	mux.HandleFunc("/a.png", func(w http.ResponseWriter, r *http.Request) { count(r.URL.Path); w.Write(png) })
	mux.HandleFunc("/port.png", func(w http.ResponseWriter, r *http.Request) {
		count(r.URL.Path)
		http.Redirect(w, r, other.URL+"/x.png", http.StatusFound)
	})
	srv = httptest.NewServer(mux)
	defer srv.Close()
	endpoint := srv.URL + "/search?q={query}&first={first}"
	out := filepath.Join(t.TempDir(), "lion")
	crawl := func(extra ...string) (string, string, int) {
		args := append([]string{"crawl", "--query", "lion", "--limit", "5", "--out", out, "--delay", "0", "--timeout", "5s", "--json"}, extra...)
		return runDataset(t, args...)
	}

	// Refused before any request: exit 2, the reason and the flag named.
	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantErr  []string
	}{
		{"loopback endpoint", []string{"--endpoint", endpoint}, 2,
			[]string{"127.0.0.1 is a loopback address; private targets are not allowed", "--allow-private-targets"}},
		{"metadata endpoint", []string{"--endpoint", "http://169.254.169.254/latest?q={query}"}, 2,
			[]string{"169.254.169.254 is a link-local address", "--allow-private-targets"}},
		{"metadata endpoint, off-host allowed", []string{"--allow-redirects-off-host", "--endpoint", "http://169.254.169.254/latest?q={query}"}, 2,
			[]string{"169.254.169.254 is a link-local address"}},
		{"max redirects over", []string{"--endpoint", endpoint, "--max-redirects", "21"}, 2, []string{"--max-redirects 21 must be between 0 and 20"}},
		{"max redirects negative", []string{"--endpoint", endpoint, "--max-redirects", "-1"}, 2, []string{"--max-redirects -1"}},
	}
	for _, tc := range tests {
		stdout, stderr, code := crawl(tc.args...)
		if code != tc.wantCode || stdout != "" {
			t.Errorf("%s: got code %d stdout %q, want %d and nothing", tc.name, code, stdout, tc.wantCode)
		}
		for _, w := range tc.wantErr {
			if !strings.Contains(stderr, w) {
				t.Errorf("%s: got stderr %q, want %q", tc.name, stderr, w)
			}
		}
	}
	if n := hit("/search"); n != 0 {
		t.Fatalf("got %d requests before the allow flag, want 0", n)
	}

	// Loopback allowed: a.png is saved, the redirect to another port is refused.
	stdout, stderr, code := crawl("--endpoint", endpoint, "--allow-private-targets")
	if code != 0 {
		t.Fatalf("allow private: got code %d stderr %q, want 0", code, stderr)
	}
	var res dataset.CrawlResult
	if err := json.Unmarshal([]byte(stdout), &res); err != nil {
		t.Fatalf("allow private: %v in %q", err, stdout)
	}
	if res.Saved != 1 || len(res.Refused) != 1 || res.Refused[0].URL != srv.URL+"/port.png" || res.Refused[0].Kind != "redirect" ||
		!strings.Contains(res.Refused[0].Reason, "off-host redirects are not allowed") {
		t.Errorf("allow private: got %+v, want 1 saved and %s/port.png refused as an off-host redirect", res, srv.URL)
	}
	if !strings.Contains(stderr, "--allow-redirects-off-host") || hit("other/x.png") != 0 {
		t.Errorf("allow private: got stderr %q and %d requests on the other port, want the flag named and 0", stderr, hit("other/x.png"))
	}

	// Both flags: the refused URL is tried again and followed to the other port.
	stdout, stderr, code = crawl("--endpoint", endpoint, "--allow-private-targets", "--allow-redirects-off-host")
	res = dataset.CrawlResult{}
	if err := json.Unmarshal([]byte(stdout), &res); code != 0 || err != nil || res.Saved != 1 || res.Existing != 1 || len(res.Refused) != 0 {
		t.Errorf("both flags: got code %d %+v (%v) stderr %q, want 0, 1 saved, 1 existing, nothing refused", code, res, err, stderr)
	}
	if n := hit("other/x.png"); n != 1 {
		t.Errorf("both flags: got %d requests on the other port, want 1", n)
	}

	// --max-redirects 0: no redirect at all, even on the same host.
	stdout, _, code = runDataset(t, "crawl", "--query", "lion", "--limit", "5", "--out", filepath.Join(t.TempDir(), "x"), "--delay", "0",
		"--json", "--endpoint", endpoint, "--allow-private-targets", "--allow-redirects-off-host", "--max-redirects", "0")
	res = dataset.CrawlResult{}
	if err := json.Unmarshal([]byte(stdout), &res); code != 0 || err != nil || len(res.Refused) != 1 || !strings.Contains(res.Refused[0].Reason, "more than 0 redirects") {
		t.Errorf("max-redirects 0: got code %d %+v (%v), want the redirect refused", code, res, err)
	}
}
