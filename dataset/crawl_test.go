package dataset

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

// searchServer serves Bing-like result pages (HTML-escaped "murl" JSON in
// m="..." attributes) and the images they point to. It counts requests per
// path.
type searchServer struct {
	*httptest.Server
	mu   sync.Mutex
	hits map[string]int
}

func newSearchServer(t *testing.T) *searchServer {
	s := &searchServer{hits: map[string]int{}}
	imgs := map[string][]byte{
		"/img/a.png":    encPNG(SynthImage(0, 0, 16, 1)),
		"/img/b.jpg":    encJPEG(SynthImage(0, 1, 16, 1), 80),
		"/img/a2.png":   encPNG(SynthImage(0, 0, 16, 1)), // same bytes as a.png
		"/img/text.jpg": []byte("<html>not an image</html>"),
		"/img/big.png":  encPNG(SynthImage(0, 2, 256, 1)), // over the test's byte cap
		"/img/c.png":    encPNG(SynthImage(0, 3, 16, 1)),
		"/img/d.png":    encPNG(SynthImage(0, 4, 16, 1)),
		"/img/e.png":    encPNG(SynthImage(0, 5, 16, 1)),
	}
	pages := [][]string{
		{"/img/a.png", "/img/a2.png", "/img/text.jpg", "/img/missing.png", "/img/big.png", "/img/slow.png"},
		{"/img/b.jpg", "/img/c.png", "/img/a.png"},
		{"/img/d.png", "/img/e.png"},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/search", func(w http.ResponseWriter, r *http.Request) {
		s.count(r.URL.Path)
		if r.URL.Query().Get("q") != "big cat" {
			http.Error(w, "bad query", http.StatusBadRequest)
			return
		}
		var first int
		fmt.Sscan(r.URL.Query().Get("first"), &first)
		page := (first - 1) / 10
		fmt.Fprint(w, "<html><body>")
		if page < len(pages) {
			for _, p := range pages[page] {
				fmt.Fprintf(w, `<a class="iusc" m="{&quot;murl&quot;:&quot;%s%s&quot;,&quot;turl&quot;:&quot;x&quot;}"><img src="/thumb.jpg"></a>`, s.URL, p)
			}
		}
		fmt.Fprint(w, "</body></html>")
	})
	mux.HandleFunc("/img/", func(w http.ResponseWriter, r *http.Request) {
		s.count(r.URL.Path)
		if r.URL.Path == "/img/slow.png" {
			select {
			case <-time.After(3 * time.Second):
			case <-r.Context().Done():
			}
			return
		}
		data, ok := imgs[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Write(data)
	})
	s.Server = httptest.NewServer(mux)
	t.Cleanup(s.Close)
	return s
}

func (s *searchServer) count(p string) {
	s.mu.Lock()
	s.hits[p]++
	s.mu.Unlock()
}

func (s *searchServer) hit(p string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hits[p]
}

func TestCrawl(t *testing.T) {
	srv := newSearchServer(t)
	out := filepath.Join(t.TempDir(), "lion")
	opt := CrawlOptions{
		Query: "big cat", Limit: 3, Out: out,
		Endpoint: srv.URL + "/search?q={query}&first={first}&count={count}",
		PageSize: 10, Delay: 5 * time.Millisecond, Timeout: 200 * time.Millisecond, MaxBytes: 4000,
		AllowPrivateTargets: true, // the test server is on 127.0.0.1
	}
	var events []string
	opt.Progress = func(e CrawlEvent) { events = append(events, e.Kind) }
	res, err := Crawl(context.Background(), opt)
	if err != nil {
		t.Fatal(err)
	}
	// Page 1: a saved, a2 duplicate, text/missing/big/slow failed; page 2: b, c saved -> limit 3.
	want := CrawlResult{Saved: 3, Duplicates: 1, Failed: 4, Pages: 2, Total: 3}
	if !reflect.DeepEqual(*res, want) {
		t.Errorf("first run: got %+v, want %+v", *res, want)
	}
	files, _ := filepath.Glob(filepath.Join(out, "[^.]*"))
	if len(files) != 3 {
		t.Errorf("got files %v, want 3 images", files)
	}
	for _, f := range files {
		data, _ := os.ReadFile(f)
		if _, err := decodeBytes(data, DefaultMaxPixels); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
	if n := strings.Count(strings.Join(events, ","), "saved"); n != 3 {
		t.Errorf("got %d saved events, want 3", n)
	}

	// Resume with a higher limit: nothing already tried is fetched again.
	opt.Limit = 10
	opt.Progress = nil
	res, err = Crawl(context.Background(), opt)
	if err != nil {
		t.Fatal(err)
	}
	want = CrawlResult{Existing: 3, Saved: 2, Pages: 4, Total: 5}
	if !reflect.DeepEqual(*res, want) {
		t.Errorf("resumed run: got %+v, want %+v", *res, want)
	}
	for _, p := range []string{"/img/a.png", "/img/b.jpg", "/img/slow.png", "/img/d.png"} {
		if got := srv.hit(p); got != 1 {
			t.Errorf("%s: got %d requests over two runs, want 1", p, got)
		}
	}
}

func TestCrawlRateLimit(t *testing.T) {
	srv := newSearchServer(t)
	const delay = 30 * time.Millisecond
	start := time.Now()
	res, err := Crawl(context.Background(), CrawlOptions{
		Query: "big cat", Limit: 2, Out: t.TempDir(), MaxBytes: 4000, Timeout: 100 * time.Millisecond,
		Endpoint: srv.URL + "/search?q={query}&first={first}", PageSize: 10, Delay: delay,
		AllowPrivateTargets: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	// Requests: page 1, a, a2, text, missing, big, slow, page 2, b = 9, so
	// at least 8 gaps of the delay.
	if el := time.Since(start); el < 8*delay {
		t.Errorf("got %v for 9 requests, want at least %v", el, 8*delay)
	}
	if res.Total != 2 {
		t.Errorf("got total %d, want 2", res.Total)
	}
}

func TestCrawlErrors(t *testing.T) {
	srv := newSearchServer(t)
	tests := []struct {
		name    string
		opt     CrawlOptions
		wantMsg string
	}{
		{"no query", CrawlOptions{Limit: 1, Out: t.TempDir()}, "empty query"},
		{"no limit", CrawlOptions{Query: "x", Out: t.TempDir()}, "limit 0"},
		{"no out", CrawlOptions{Query: "x", Limit: 1}, "no output folder"},
		{"no placeholder", CrawlOptions{Query: "x", Limit: 1, Out: t.TempDir(), Endpoint: srv.URL}, "has no {query}"},
		{"page error", CrawlOptions{Query: "other", Limit: 1, Out: t.TempDir(), Endpoint: srv.URL + "/search?q={query}", Delay: -1, AllowPrivateTargets: true}, "page 0: http status 400"},
		{"too many redirects allowed", CrawlOptions{Query: "x", Limit: 1, Out: t.TempDir(), Endpoint: srv.URL + "/search?q={query}", MaxRedirects: MaxCrawlRedirects + 1}, "max redirects 21 over the limit of 20"},
	}
	for _, tc := range tests {
		_, err := Crawl(context.Background(), tc.opt)
		if err == nil || !strings.Contains(err.Error(), tc.wantMsg) || !strings.HasPrefix(err.Error(), "dataset: crawl") {
			t.Errorf("%s: got %v, want a dataset: crawl error containing %q", tc.name, err, tc.wantMsg)
		}
	}
}

func TestExtractImageURLs(t *testing.T) {
	base, _ := http.NewRequest("GET", "http://example.test/results/page", nil)
	tests := []struct {
		name, body string
		want       []string
	}{
		{"bing murl", `<a m="{&quot;murl&quot;:&quot;https://x.test/a.jpg&quot;}">`, []string{"https://x.test/a.jpg"}},
		{"json contentUrl", `{"value":[{"contentUrl":"https:\/\/x.test\/b.png"}]}`, []string{"https://x.test/b.png"}},
		{"plain links", `<img src="/i/c.JPG"><a href='d.webp?s=1'>x</a><a href="/page.html">`, []string{"http://example.test/i/c.JPG", "http://example.test/results/d.webp?s=1"}},
		{"no scheme tricks", `<img src="javascript:alert(1).png"><img src="ftp://x/y.png">`, nil},
	}
	for _, tc := range tests {
		got := extractImageURLs([]byte(tc.body), base.URL)
		if strings.Join(got, " ") != strings.Join(tc.want, " ") {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
		}
	}
}
