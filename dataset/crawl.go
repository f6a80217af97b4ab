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
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// DefaultCrawlEndpoint is a Bing-images-like result page template. Crawl
// substitutes {query} (URL-escaped), {offset} (0-based), {first} (1-based)
// and {count}.
const DefaultCrawlEndpoint = "https://www.bing.com/images/async?q={query}&first={first}&count={count}&adlt=strict"

// DefaultMaxRedirects is the number of redirects Crawl follows for one
// request when CrawlOptions.MaxRedirects is 0; MaxCrawlRedirects is the most
// it accepts.
const (
	DefaultMaxRedirects = 5
	MaxCrawlRedirects   = 20
)

// Errors wrapped by a *TargetError; use errors.Is to test for them.
var (
	// ErrPrivateTarget means a connection to a loopback, private,
	// link-local, unspecified, multicast or otherwise non-public address
	// was refused because CrawlOptions.AllowPrivateTargets is false.
	ErrPrivateTarget = errors.New("dataset: crawl: private target refused")
	// ErrRedirectRefused means a redirect was not followed: it left the
	// scheme and host of the request (CrawlOptions.AllowOffHostRedirects
	// is false) or came after CrawlOptions.MaxRedirects others.
	ErrRedirectRefused = errors.New("dataset: crawl: redirect refused")
)

// TargetError reports a URL or an address the crawler refused to contact.
// Kind is ErrPrivateTarget or ErrRedirectRefused.
type TargetError struct {
	URL    string // the URL (or redirect hop) refused, when known
	Reason string // e.g. "169.254.169.254 is a link-local address; private targets are not allowed"
	Kind   error
}

func (e *TargetError) Error() string { return "refused: " + e.Reason }
func (e *TargetError) Unwrap() error { return e.Kind }

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
	// AllowOffHostRedirects lets a redirect go to another scheme, host or
	// port than the URL first requested. By default a redirect must keep
	// the scheme and host:port (ports compared after filling in 80/443).
	AllowOffHostRedirects bool
	// AllowPrivateTargets lets the crawler connect to loopback, private
	// (RFC 1918, fc00::/7), link-local (169.254.0.0/16, fe80::/10, where
	// cloud metadata services live), unspecified, multicast, broadcast and
	// shared (100.64.0.0/10) addresses. By default every connection (result
	// page, image, redirect hop) is checked on the IP address actually
	// dialled, after name resolution, and refused if it is one of those.
	AllowPrivateTargets bool
	// MaxRedirects is the number of redirects followed per request
	// (default DefaultMaxRedirects; negative: none; at most MaxCrawlRedirects).
	MaxRedirects int
	// Progress, if set, is called after every page and every image.
	Progress func(CrawlEvent)

	// dialControl, if set (tests), is called for every connection that
	// passed the target check, before connect(2).
	dialControl func(network, address string, c syscall.RawConn) error
	// exempt, if valid (tests), is one address:port treated as public, so
	// that a loopback test server can stand in for a public host.
	exempt netip.AddrPort
}

// CrawlEvent reports one step of Crawl.
type CrawlEvent struct {
	Kind   string // "page", "saved", "duplicate", "failed"
	URL    string
	Path   string // the saved file, for "saved"
	Reason string // for "failed"; a refused target's starts with "refused: "
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
	// Refused lists the image URLs (also counted in Failed) that the target
	// policy refused: a private address or a redirect not allowed.
	Refused []CrawlRefusal `json:"refused,omitempty"`
}

// CrawlRefusal is one URL refused by the target policy.
type CrawlRefusal struct {
	URL    string `json:"url"`
	Kind   string `json:"kind"`   // "private-target" or "redirect"
	Reason string `json:"reason"` // e.g. "refused: 127.0.0.1 is a loopback address; private targets are not allowed"
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
// the images already present, so an interrupted crawl resumes (URLs refused
// by the target policy are tried again, so a rerun with more allowed
// fetches them).
//
// Crawl stays where it is sent: redirects keep the scheme and host of the
// URL requested (unless opt.AllowOffHostRedirects), at most
// opt.MaxRedirects of them, and no connection is made to a non-public
// address (unless opt.AllowPrivateTargets): the check runs on the address
// actually dialled, before connect(2), so a name that resolves to
// 169.254.169.254 or 127.0.0.1 (DNS rebinding included) is refused like
// the literal address. Environment proxies (HTTP_PROXY...) are not used,
// since a proxy would resolve and connect on the crawler's behalf. An
// endpoint whose host is a refused literal address is an error before any
// request (nil result).
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
	switch {
	case opt.MaxRedirects == 0:
		opt.MaxRedirects = DefaultMaxRedirects
	case opt.MaxRedirects < 0:
		opt.MaxRedirects = 0
	case opt.MaxRedirects > MaxCrawlRedirects:
		return nil, fmt.Errorf("dataset: crawl: max redirects %d over the limit of %d", opt.MaxRedirects, MaxCrawlRedirects)
	}
	c := &crawler{opt: opt, res: &CrawlResult{}, have: map[string]bool{}, tried: map[string]bool{}}
	first := c.pageURL(0)
	if err := c.checkLiteral(first); err != nil {
		return nil, fmt.Errorf("dataset: crawl: endpoint %s: %w", first, err)
	}
	if err := os.MkdirAll(opt.Out, 0o755); err != nil {
		return nil, fmt.Errorf("dataset: crawl: %w", err)
	}
	c.client = c.newClient()
	defer c.client.CloseIdleConnections()
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
	opt    CrawlOptions
	res    *CrawlResult
	have   map[string]bool // content hashes of the images in Out
	tried  map[string]bool // URLs already tried (this run or an earlier one)
	state  *os.File
	last   time.Time
	client *http.Client
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
		// Refused URLs are not "tried": a run allowing more fetches them.
		if u, outcome, ok := strings.Cut(sc.Text(), "\t"); ok && !strings.HasPrefix(outcome, "refused") {
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
	var te *TargetError
	if errors.As(err, &te) {
		kind := "private-target"
		if errors.Is(te, ErrRedirectRefused) {
			kind = "redirect"
		}
		c.res.Failed++
		c.res.Refused = append(c.res.Refused, CrawlRefusal{URL: u, Kind: kind, Reason: te.Error()})
		c.record(u, te.Error())
		c.emit(CrawlEvent{Kind: "failed", URL: u, Reason: te.Error()})
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
	resp, err := c.client.Do(req)
	if err != nil {
		var te *TargetError
		if errors.As(err, &te) && ctx.Err() == nil {
			return nil, nil, te // the URL error's "Get ...: dial tcp ...:" adds nothing
		}
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

// newClient returns the crawler's HTTP client: no environment proxy, every
// dial checked by c.control, every redirect by c.checkRedirect.
func (c *crawler) newClient() *http.Client {
	d := &net.Dialer{Timeout: c.opt.Timeout, KeepAlive: 30 * time.Second, Control: c.control}
	tr := &http.Transport{
		Proxy:                  nil,
		DialContext:            d.DialContext,
		ForceAttemptHTTP2:      true,
		MaxIdleConns:           10,
		IdleConnTimeout:        90 * time.Second,
		TLSHandshakeTimeout:    10 * time.Second,
		ExpectContinueTimeout:  time.Second,
		MaxResponseHeaderBytes: 1 << 20,
	}
	return &http.Client{Transport: tr, CheckRedirect: c.checkRedirect}
}

// control runs after the socket is made and before connect(2), with the
// resolved address: it refuses non-public addresses unless allowed.
func (c *crawler) control(network, address string, rc syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil && !c.opt.AllowPrivateTargets {
		return &TargetError{Reason: fmt.Sprintf("cannot check address %q: %v", address, err), Kind: ErrPrivateTarget}
	}
	if te := c.refusal(ap); te != nil {
		return te
	}
	if c.opt.dialControl != nil {
		return c.opt.dialControl(network, address, rc)
	}
	return nil
}

// refusal returns why ap may not be contacted, or nil.
func (c *crawler) refusal(ap netip.AddrPort) *TargetError {
	if c.opt.AllowPrivateTargets || (c.opt.exempt.IsValid() && ap == c.opt.exempt) {
		return nil
	}
	if why := nonPublic(ap.Addr()); why != "" {
		return &TargetError{Reason: fmt.Sprintf("%s is %s; private targets are not allowed", ap.Addr(), why), Kind: ErrPrivateTarget}
	}
	return nil
}

// checkLiteral refuses a URL whose host is a non-public literal IP address
// (names are checked when dialled).
func (c *crawler) checkLiteral(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return nil // a bad URL fails at the request, with its own message
	}
	ap, err := netip.ParseAddrPort(hostPort(u))
	if err != nil {
		return nil // a name, checked when dialled
	}
	if te := c.refusal(ap); te != nil {
		te.URL = raw
		return te
	}
	return nil
}

// checkRedirect is called before each redirect is followed: req is the
// next hop, via the requests made so far (via[0] the URL asked for).
func (c *crawler) checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) > c.opt.MaxRedirects {
		return &TargetError{URL: req.URL.String(), Reason: fmt.Sprintf("redirect to %s: more than %d redirects", req.URL.Redacted(), c.opt.MaxRedirects), Kind: ErrRedirectRefused}
	}
	from := via[0].URL
	if !c.opt.AllowOffHostRedirects && (req.URL.Scheme != from.Scheme || hostPort(req.URL) != hostPort(from)) {
		return &TargetError{URL: req.URL.String(), Reason: fmt.Sprintf("redirect to %s leaves %s://%s; off-host redirects are not allowed",
			req.URL.Redacted(), from.Scheme, hostPort(from)), Kind: ErrRedirectRefused}
	}
	return nil
}

// hostPort is u's lower-case host with its port, 80 or 443 filled in.
func hostPort(u *url.URL) string {
	port := u.Port()
	if port == "" {
		switch u.Scheme {
		case "http":
			port = "80"
		case "https":
			port = "443"
		}
	}
	return net.JoinHostPort(strings.ToLower(u.Hostname()), port)
}

// nonPublicPrefixes are the ranges refused besides those netip classifies.
var nonPublicPrefixes = []struct {
	p   netip.Prefix
	why string
}{
	{netip.MustParsePrefix("0.0.0.0/8"), `a "this network" address`},
	{netip.MustParsePrefix("100.64.0.0/10"), "a shared (carrier-grade NAT) address"},
	{netip.MustParsePrefix("192.0.0.0/24"), "an IETF protocol assignment address"},
	{netip.MustParsePrefix("198.18.0.0/15"), "a benchmarking address"},
	{netip.MustParsePrefix("240.0.0.0/4"), "a reserved or broadcast address"},
	{netip.MustParsePrefix("fec0::/10"), "a site-local address"},
}

// nat64 is the well-known NAT64 prefix (RFC 6052): its addresses reach the
// IPv4 address in their last 4 bytes.
var nat64 = netip.MustParsePrefix("64:ff9b::/96")

// nonPublic says what kind of non-public address ip is ("a loopback
// address"...), or "" for a public unicast address.
func nonPublic(ip netip.Addr) string {
	ip = ip.Unmap() // ::ffff:127.0.0.1 is 127.0.0.1
	switch {
	case !ip.IsValid():
		return "an invalid address"
	case ip.IsUnspecified():
		return "an unspecified address"
	case ip.IsLoopback():
		return "a loopback address"
	case ip.IsLinkLocalUnicast():
		return "a link-local address"
	case ip.IsMulticast():
		return "a multicast address"
	case ip.IsPrivate():
		return "a private address"
	}
	for _, r := range nonPublicPrefixes {
		if r.p.Contains(ip) {
			return r.why
		}
	}
	if nat64.Contains(ip) {
		b := ip.As16()
		if why := nonPublic(netip.AddrFrom4([4]byte(b[12:]))); why != "" {
			return why + " (through NAT64)"
		}
	}
	return ""
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
