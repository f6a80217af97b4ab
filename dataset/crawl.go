package dataset

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// DefaultCrawlEndpoint is a Bing-images-like result page template. Crawl
// substitutes {query} (URL-escaped), {offset} (0-based), {first} (1-based)
// and {count}.
const DefaultCrawlEndpoint = "https://www.bing.com/images/async?q={query}&first={first}&count={count}&adlt=strict"

// crawlStateFile records every URL tried in the output folder, so that a
// second run resumes instead of downloading again.
const crawlStateFile = ".crawl-state.tsv"

// CrawlOptions configures Crawl. Zero values take the defaults noted.
type CrawlOptions struct {
	Query     string        // search terms (required)
	Limit     int           // images wanted in Out, counting those already there (required)
	Out       string        // folder for the images, e.g. DIR/lion (required)
	Endpoint  string        // result page URL template (default DefaultCrawlEndpoint)
	PageSize  int           // results asked per page, {count} (default 35)
	MaxPages  int           // result pages fetched at most (default 50)
	Delay     time.Duration // least time between two requests (default 1s); negative means none
	Timeout   time.Duration // per request, page or image (default 30s)
	MaxBytes  int64         // largest image file accepted (default 20 MiB)
	MaxPixels int64         // largest declared width*height accepted (default DefaultMaxPixels)
	UserAgent string        // default "fwbench-crawl/1"
	Client    *http.Client  // default http.DefaultClient
	// Progress, if set, is called after every page and every image.
	Progress func(CrawlEvent)
}

// CrawlEvent reports one step of Crawl.
type CrawlEvent struct {
	Kind   string // "page", "saved", "duplicate", "failed"
	URL    string
	Path   string // the saved file, for "saved"
	Reason string // for "failed"
	Total  int    // images in Out so far
	Limit  int
}

// CrawlResult summarises a Crawl.
type CrawlResult struct {
	Existing   int `json:"existing"`   // images already in Out at the start
	Saved      int `json:"saved"`      // images written by this run
	Duplicates int `json:"duplicates"` // downloads whose content was already there
	Failed     int `json:"failed"`     // downloads refused (HTTP error, too large, not an image...)
	Pages      int `json:"pages"`      // result pages fetched
	Total      int `json:"total"`      // images in Out at the end
}

var (
	crawlMURL    = regexp.MustCompile(`"(?:murl|contentUrl|image_url|imageUrl)"\s*:\s*"([^"]+)"`)
	crawlSrcHref = regexp.MustCompile(`(?i)(?:src|href)\s*=\s*["']([^"']+)["']`)
)

// Crawl collects images as the study did: it fetches result pages of
// opt.Endpoint, extracts image URLs from them (Bing's "murl" metadata,
// "contentUrl" JSON fields, or src/href attributes that end in an image
// extension), downloads each with a timeout and a size cap, keeps only
// files that decode as images within the pixel limit, and stores them
// under their content hash (opt.Out/<sha256[:16]>.<ext>), so duplicates
// are dropped. Requests are spaced by opt.Delay. Every URL tried is
// appended to opt.Out/.crawl-state.tsv; a second run skips them and counts
// the images already present, so an interrupted crawl resumes.
//
// The result is returned also with an error, describing the work done.
func Crawl(ctx context.Context, opt CrawlOptions) (*CrawlResult, error) {
	if strings.TrimSpace(opt.Query) == "" {
		return nil, fmt.Errorf("dataset: crawl: empty query")
	}
	if opt.Limit <= 0 {
		return nil, fmt.Errorf("dataset: crawl: limit %d must be positive", opt.Limit)
	}
	if opt.Out == "" {
		return nil, fmt.Errorf("dataset: crawl: no output folder")
	}
	if opt.Endpoint == "" {
		opt.Endpoint = DefaultCrawlEndpoint
	}
	if !strings.Contains(opt.Endpoint, "{query}") {
		return nil, fmt.Errorf("dataset: crawl: endpoint %q has no {query}", opt.Endpoint)
	}
	if opt.PageSize <= 0 {
		opt.PageSize = 35
	}
	if opt.MaxPages <= 0 {
		opt.MaxPages = 50
	}
	if opt.Delay == 0 {
		opt.Delay = time.Second
	}
	if opt.Timeout <= 0 {
		opt.Timeout = 30 * time.Second
	}
	if opt.MaxBytes <= 0 {
		opt.MaxBytes = 20 << 20
	}
	if opt.MaxPixels <= 0 {
		opt.MaxPixels = DefaultMaxPixels
	}
	if opt.UserAgent == "" {
		opt.UserAgent = "fwbench-crawl/1"
	}
	if opt.Client == nil {
		opt.Client = http.DefaultClient
	}
	if err := os.MkdirAll(opt.Out, 0o755); err != nil {
		return nil, fmt.Errorf("dataset: crawl: %w", err)
	}
	c := &crawler{opt: opt, res: &CrawlResult{}, have: map[string]bool{}, tried: map[string]bool{}}
	if err := c.loadState(); err != nil {
		return nil, err
	}
	c.res.Existing = len(c.have)
	c.res.Total = len(c.have)
	state, err := os.OpenFile(filepath.Join(opt.Out, crawlStateFile), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, fmt.Errorf("dataset: crawl: %w", err)
	}
	defer state.Close()
	c.state = state
	err = c.run(ctx)
	return c.res, err
}

type crawler struct {
	opt   CrawlOptions
	res   *CrawlResult
	have  map[string]bool // content hashes of the images in Out
	tried map[string]bool // URLs already tried (this run or an earlier one)
	state *os.File
	last  time.Time
}

// loadState hashes the images already in Out and reads the tried URLs.
func (c *crawler) loadState() error {
	es, err := os.ReadDir(c.opt.Out)
	if err != nil {
		return fmt.Errorf("dataset: crawl: %w", err)
	}
	for _, e := range es {
		if e.IsDir() || !imageExts[strings.ToLower(filepath.Ext(e.Name()))] {
			continue
		}
		data, err := os.ReadFile(filepath.Join(c.opt.Out, e.Name()))
		if err != nil {
			continue
		}
		sum := sha256.Sum256(data)
		c.have[hex.EncodeToString(sum[:])] = true
	}
	f, err := os.Open(filepath.Join(c.opt.Out, crawlStateFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("dataset: crawl: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if u, _, ok := strings.Cut(sc.Text(), "\t"); ok {
			c.tried[u] = true
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("dataset: crawl: %s: %w", crawlStateFile, err)
	}
	return nil
}

func (c *crawler) record(u, outcome string) {
	c.tried[u] = true
	fmt.Fprintf(c.state, "%s\t%s\n", u, strings.NewReplacer("\t", " ", "\n", " ").Replace(outcome))
}

func (c *crawler) emit(e CrawlEvent) {
	if c.opt.Progress != nil {
		e.Total, e.Limit = c.res.Total, c.opt.Limit
		c.opt.Progress(e)
	}
}

func (c *crawler) run(ctx context.Context) error {
	seen := map[string]bool{} // URLs seen on pages of this run
	for page := 0; page < c.opt.MaxPages && c.res.Total < c.opt.Limit; page++ {
		pageURL := c.pageURL(page)
		body, base, err := c.get(ctx, pageURL, 8<<20)
		if err != nil {
			return fmt.Errorf("dataset: crawl: page %d: %w", page, err)
		}
		c.res.Pages++
		urls := extractImageURLs(body, base)
		fresh := 0
		for _, u := range urls {
			if !seen[u] {
				seen[u] = true
				fresh++
			}
		}
		c.emit(CrawlEvent{Kind: "page", URL: pageURL})
		if fresh == 0 {
			return nil // the endpoint has no more results
		}
		for _, u := range urls {
			if c.res.Total >= c.opt.Limit {
				return nil
			}
			if c.tried[u] {
				continue
			}
			if err := c.download(ctx, u); err != nil {
				return err
			}
		}
	}
	return nil
}

func (c *crawler) pageURL(page int) string {
	off := page * c.opt.PageSize
	return strings.NewReplacer(
		"{query}", url.QueryEscape(c.opt.Query),
		"{offset}", strconv.Itoa(off),
		"{first}", strconv.Itoa(off+1),
		"{count}", strconv.Itoa(c.opt.PageSize),
	).Replace(c.opt.Endpoint)
}

// download fetches one image; only context errors are returned, every
// other failure is counted and recorded.
func (c *crawler) download(ctx context.Context, u string) error {
	data, _, err := c.get(ctx, u, c.opt.MaxBytes)
	if ctx.Err() != nil {
		return fmt.Errorf("dataset: crawl: %w", ctx.Err())
	}
	fail := func(reason string) error {
		c.res.Failed++
		c.record(u, "failed: "+reason)
		c.emit(CrawlEvent{Kind: "failed", URL: u, Reason: reason})
		return nil
	}
	if err != nil {
		return fail(err.Error())
	}
	d, err := decodeBytes(data, c.opt.MaxPixels)
	if err != nil {
		return fail(reasonOf(err))
	}
	sum := sha256.Sum256(data)
	h := hex.EncodeToString(sum[:])
	if c.have[h] {
		c.res.Duplicates++
		c.record(u, "duplicate "+h)
		c.emit(CrawlEvent{Kind: "duplicate", URL: u})
		return nil
	}
	ext := "." + d.format
	if d.format == "jpeg" {
		ext = ".jpg"
	}
	p := filepath.Join(c.opt.Out, h[:16]+ext)
	if err := writeFileAtomic(p, data); err != nil {
		return fmt.Errorf("dataset: crawl: %w", err)
	}
	c.have[h] = true
	c.res.Saved++
	c.res.Total++
	c.record(u, "saved "+h)
	c.emit(CrawlEvent{Kind: "saved", URL: u, Path: p})
	return nil
}

// get waits for the rate limit, then fetches u with the per-request
// timeout and at most limit bytes. It returns the body and the final URL.
func (c *crawler) get(ctx context.Context, u string, limit int64) ([]byte, *url.URL, error) {
	if c.opt.Delay > 0 && !c.last.IsZero() {
		if wait := time.Until(c.last.Add(c.opt.Delay)); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return nil, nil, ctx.Err()
			}
		}
	}
	c.last = time.Now()
	rctx, cancel := context.WithTimeout(ctx, c.opt.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("User-Agent", c.opt.UserAgent)
	resp, err := c.opt.Client.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, nil, fmt.Errorf("http status %d", resp.StatusCode)
	}
	if resp.ContentLength > limit {
		return nil, nil, fmt.Errorf("%d bytes, over the limit of %d", resp.ContentLength, limit)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, nil, err
	}
	if int64(len(body)) > limit {
		return nil, nil, fmt.Errorf("over the limit of %d bytes", limit)
	}
	return body, resp.Request.URL, nil
}

// extractImageURLs returns the absolute http(s) image URLs of a result
// page, in page order, without repeats.
func extractImageURLs(body []byte, base *url.URL) []string {
	text := html.UnescapeString(string(body))
	var out []string
	seen := map[string]bool{}
	add := func(raw string, needExt bool) {
		raw = strings.ReplaceAll(raw, `\/`, `/`) // JSON-escaped slashes
		u, err := url.Parse(strings.TrimSpace(raw))
		if err != nil {
			return
		}
		if base != nil {
			u = base.ResolveReference(u)
		}
		if u.Scheme != "http" && u.Scheme != "https" {
			return
		}
		if needExt && !imageExts[strings.ToLower(path.Ext(u.Path))] {
			return
		}
		s := u.String()
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	for _, m := range crawlMURL.FindAllStringSubmatch(text, -1) {
		add(m[1], false)
	}
	if len(out) > 0 {
		return out // structured metadata found: thumbnails in src= are not wanted
	}
	for _, m := range crawlSrcHref.FindAllStringSubmatch(text, -1) {
		add(m[1], true)
	}
	return out
}
