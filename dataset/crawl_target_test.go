package dataset

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestNonPublic(t *testing.T) {
	tests := []struct {
		addr string
		want string // "" for a public address; ranges from RFC 6890 and netip's classifiers
	}{
		{"127.0.0.1", "a loopback address"},
		{"127.8.9.10", "a loopback address"}, // all of 127.0.0.0/8
		{"::1", "a loopback address"},
		{"::ffff:127.0.0.1", "a loopback address"}, // IPv4-mapped
		{"10.1.2.3", "a private address"},
		{"172.16.0.1", "a private address"},
		{"172.31.255.255", "a private address"},
		{"192.168.1.1", "a private address"},
		{"fc00::1", "a private address"},
		{"fd00:ec2::254", "a private address"}, // AWS IPv6 metadata
		{"169.254.169.254", "a link-local address"},
		{"::ffff:169.254.169.254", "a link-local address"},
		{"fe80::1", "a link-local address"},
		{"fe80::1%eth0", "a link-local address"},
		{"0.0.0.0", "an unspecified address"},
		{"::", "an unspecified address"},
		{"0.1.2.3", `a "this network" address`},
		{"224.0.0.1", "a multicast address"},
		{"ff02::1", "a multicast address"},
		{"255.255.255.255", "a reserved or broadcast address"},
		{"100.100.100.200", "a shared (carrier-grade NAT) address"}, // Alibaba Cloud metadata
		{"192.0.0.192", "an IETF protocol assignment address"},      // Oracle Cloud metadata
		{"198.18.0.1", "a benchmarking address"},
		{"fec0::1", "a site-local address"},
		{"64:ff9b::a9fe:a9fe", "a link-local address (through NAT64)"}, // a9fe:a9fe = 169.254.169.254
		{"64:ff9b::5db8:d822", ""},                                     // 93.184.216.34 through NAT64
		{"93.184.216.34", ""},
		{"8.8.8.8", ""},
		{"172.32.0.1", ""}, // just past 172.16.0.0/12
		{"2606:4700::1111", ""},
	}
	for _, tc := range tests {
		if got := nonPublic(netip.MustParseAddr(tc.addr)); got != tc.want {
			t.Errorf("%s: got %q, want %q", tc.addr, got, tc.want)
		}
	}
}

// TestCrawlControl calls the dial-time check as net.Dialer does, with the
// resolved address, before connect(2).
func TestCrawlControl(t *testing.T) {
	tests := []struct {
		addr     string
		allow    bool
		wantDeny string // substring of the refusal, "" when allowed
	}{
		{"169.254.169.254:80", false, "169.254.169.254 is a link-local address"},
		{"[fe80::1%lo]:80", false, "is a link-local address"},
		{"[::ffff:169.254.169.254]:80", false, "is a link-local address"},
		{"127.0.0.1:8080", false, "127.0.0.1 is a loopback address"},
		{"[::1]:443", false, "::1 is a loopback address"},
		{"0.0.0.0:80", false, "0.0.0.0 is an unspecified address"},
		{"10.0.0.1:80", false, "10.0.0.1 is a private address"},
		{"93.184.216.34:80", false, ""},
		{"169.254.169.254:80", true, ""},
		{"127.0.0.1:8080", true, ""},
	}
	for _, tc := range tests {
		var passed []string
		c := &crawler{opt: CrawlOptions{AllowPrivateTargets: tc.allow, dialControl: func(_, address string, _ syscall.RawConn) error {
			passed = append(passed, address)
			return nil
		}}}
		err := c.control("tcp", tc.addr, nil)
		if tc.wantDeny == "" {
			if err != nil || len(passed) != 1 {
				t.Errorf("%s allow=%v: got %v (%d calls on), want it allowed", tc.addr, tc.allow, err, len(passed))
			}
			continue
		}
		if !errors.Is(err, ErrPrivateTarget) || !strings.Contains(err.Error(), tc.wantDeny) || len(passed) != 0 {
			t.Errorf("%s: got %v (%d calls on), want ErrPrivateTarget %q and no call on", tc.addr, err, len(passed), tc.wantDeny)
		}
	}
}

// targetServer serves a result page listing one image URL (the query, a
// path on this server) and the images and redirects below. It listens on
// 127.0.0.1 only. other is a second server, on another port.
type targetServer struct {
	*httptest.Server
	other *httptest.Server
	mu    sync.Mutex
	hits  map[string]int
	dials []string // addresses that passed the crawler's check
}

func newTargetServer(t *testing.T) *targetServer {
	s := &targetServer{hits: map[string]int{}}
	omux := http.NewServeMux()
	omux.HandleFunc("/img/x.png", func(w http.ResponseWriter, r *http.Request) {
		s.count("other" + r.URL.Path)
		w.Write(encPNG(SynthImage(0, 7, 16, 1)))
	})
	s.other = httptest.NewServer(omux)
	t.Cleanup(s.other.Close)

	mux := http.NewServeMux()
	mux.HandleFunc("/search", func(w http.ResponseWriter, r *http.Request) {
		s.count(r.URL.Path)
		if r.URL.Query().Get("first") == "1" {
			fmt.Fprintf(w, `{"contentUrl":"%s%s"}`, s.URL, r.URL.Query().Get("q"))
		}
	})
	mux.HandleFunc("/img/a.png", func(w http.ResponseWriter, r *http.Request) {
		s.count(r.URL.Path)
		w.Write(encPNG(SynthImage(0, 1, 16, 1)))
	})
	redirects := map[string]func() string{
		"/img/same.png":   func() string { return "/img/a.png" },
		"/img/port.png":   func() string { return s.other.URL + "/img/x.png" },
		"/img/meta.png":   func() string { return "http://169.254.169.254/latest/meta-data/iam.png" },
		"/img/meta6.png":  func() string { return "http://[fe80::a9fe:a9fe]/latest/meta-data/iam.png" },
		"/img/mapped.png": func() string { return "http://[::ffff:169.254.169.254]/x.png" },
		"/img/name.png":   func() string { return "http://localhost:" + port(s.other) + "/img/x.png" },
		"/img/scheme.png": func() string { return "https://" + s.Listener.Addr().String() + "/img/a.png" },
		"/img/loop.png":   func() string { return "/img/loop.png" },
	}
	for p, to := range redirects {
		mux.HandleFunc(p, func(w http.ResponseWriter, r *http.Request) {
			s.count(r.URL.Path)
			http.Redirect(w, r, to(), http.StatusFound)
		})
	}
	s.Server = httptest.NewServer(mux)
	t.Cleanup(s.Close)
	return s
}

func port(s *httptest.Server) string {
	_, p, _ := net.SplitHostPort(s.Listener.Addr().String())
	return p
}

func (s *targetServer) count(p string) {
	s.mu.Lock()
	s.hits[p]++
	s.mu.Unlock()
}

func (s *targetServer) hit(p string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hits[p]
}

// options crawls the image at path p. Every connection that passes the
// crawler's own check reaches onlyLoopback, which records it and refuses
// (before connect) anything but 127.0.0.1: no test connection leaves the
// machine, even if the check under test were broken.
func (s *targetServer) options(t *testing.T, p string) CrawlOptions {
	return CrawlOptions{
		Query: p, Limit: 1, Out: filepath.Join(t.TempDir(), "c"), MaxPages: 1,
		Endpoint: s.URL + "/search?q={query}&first={first}", Delay: -1, Timeout: 2 * time.Second,
		dialControl: func(_, address string, _ syscall.RawConn) error {
			s.mu.Lock()
			s.dials = append(s.dials, address)
			s.mu.Unlock()
			if ap, err := netip.ParseAddrPort(address); err != nil || ap.Addr() != netip.MustParseAddr("127.0.0.1") {
				return fmt.Errorf("test: no connection to %s", address)
			}
			return nil
		},
	}
}

func (s *targetServer) dialled(host string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, d := range s.dials {
		if h, _, _ := net.SplitHostPort(d); h == host {
			return true
		}
	}
	return false
}

func TestCrawlRedirectsAndTargets(t *testing.T) {
	type policy struct{ offHost, private bool }
	tests := []struct {
		name     string
		path     string
		pol      policy
		maxRedir int
		// want: "saved", or the refusal kind with a substring of its reason,
		// or "failed" with a substring (not a policy refusal).
		want, reason string
		noDial       string // this host must never pass the check
		dialled      string // this host must pass the check (and be stopped by the test's dialer)
	}{
		{name: "same host redirect followed", path: "/img/same.png", want: "saved"},
		{name: "other port refused", path: "/img/port.png", want: "redirect", reason: "leaves http://127.0.0.1:"},
		{name: "other port refused even with private allowed", path: "/img/port.png", pol: policy{private: true},
			want: "redirect", reason: "off-host redirects are not allowed"},
		{name: "other port with both flags", path: "/img/port.png", pol: policy{offHost: true, private: true}, want: "saved"},
		{name: "other scheme refused", path: "/img/scheme.png", pol: policy{private: true}, want: "redirect", reason: "leaves http://"},
		{name: "metadata refused as off-host", path: "/img/meta.png", want: "redirect", reason: "redirect to http://169.254.169.254/latest",
			noDial: "169.254.169.254"},
		{name: "metadata refused with off-host allowed", path: "/img/meta.png", pol: policy{offHost: true},
			want: "private-target", reason: "refused: 169.254.169.254 is a link-local address; private targets are not allowed",
			noDial: "169.254.169.254"},
		{name: "metadata IPv6 link-local refused", path: "/img/meta6.png", pol: policy{offHost: true},
			want: "private-target", reason: "fe80::a9fe:a9fe is a link-local address", noDial: "fe80::a9fe:a9fe"},
		{name: "IPv4-mapped metadata refused", path: "/img/mapped.png", pol: policy{offHost: true},
			want: "private-target", reason: "169.254.169.254 is a link-local address"},
		{name: "loopback by name refused at dial", path: "/img/name.png", pol: policy{offHost: true},
			want: "private-target", reason: "127.0.0.1 is a loopback address"},
		{name: "metadata reaches the dialer only when private allowed", path: "/img/meta.png", pol: policy{offHost: true, private: true},
			want: "failed", reason: "test: no connection to 169.254.169.254:80", dialled: "169.254.169.254"},
		{name: "redirect loop bounded", path: "/img/loop.png", maxRedir: 3, want: "redirect", reason: "more than 3 redirects"},
		{name: "no redirects", path: "/img/same.png", maxRedir: -1, want: "redirect", reason: "more than 0 redirects"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newTargetServer(t)
			opt := s.options(t, tc.path)
			opt.AllowOffHostRedirects, opt.AllowPrivateTargets, opt.MaxRedirects = tc.pol.offHost, tc.pol.private, tc.maxRedir
			if !tc.pol.private {
				opt.exempt = netip.MustParseAddrPort(s.Listener.Addr().String()) // the test server stands in for a public host
			}
			var events []CrawlEvent
			opt.Progress = func(e CrawlEvent) { events = append(events, e) }
			res, err := Crawl(context.Background(), opt)
			if err != nil {
				t.Fatal(err)
			}
			switch tc.want {
			case "saved":
				if res.Saved != 1 || len(res.Refused) != 0 {
					t.Errorf("got %+v, want 1 saved and nothing refused", res)
				}
			case "failed":
				if res.Failed != 1 || len(res.Refused) != 0 || len(events) < 2 || !strings.Contains(events[1].Reason, tc.reason) {
					t.Errorf("got %+v, events %+v, want 1 failed (%q), not a policy refusal", res, events, tc.reason)
				}
			default:
				if res.Saved != 0 || res.Failed != 1 || len(res.Refused) != 1 {
					t.Fatalf("got %+v, want 1 refused", res)
				}
				r := res.Refused[0]
				if r.URL != s.URL+tc.path || r.Kind != tc.want || !strings.Contains(r.Reason, tc.reason) {
					t.Errorf("got refusal %+v, want url %s kind %s reason containing %q", r, s.URL+tc.path, tc.want, tc.reason)
				}
				if len(events) < 2 || events[1].Reason != r.Reason {
					t.Errorf("got events %+v, want a failed event with reason %q", events, r.Reason)
				}
			}
			if tc.noDial != "" && s.dialled(tc.noDial) {
				t.Errorf("got a dial to %s past the check, want none", tc.noDial)
			}
			if tc.dialled != "" && !s.dialled(tc.dialled) {
				t.Errorf("got no dial to %s past the check, want one (private targets allowed)", tc.dialled)
			}
		})
	}
}

func TestCrawlRedirectLoopHops(t *testing.T) {
	s := newTargetServer(t)
	opt := s.options(t, "/img/loop.png")
	opt.AllowPrivateTargets, opt.MaxRedirects = true, 4
	if _, err := Crawl(context.Background(), opt); err != nil {
		t.Fatal(err)
	}
	// The first request, then MaxRedirects hops followed; the next is refused unrequested.
	if got := s.hit("/img/loop.png"); got != 1+4 {
		t.Errorf("got %d requests, want %d (1 + MaxRedirects)", got, 1+4)
	}
}

func TestCrawlEndpointRefused(t *testing.T) {
	s := newTargetServer(t)
	tests := []struct {
		name      string
		endpoint  string
		nilResult bool // refused from the literal address, before any request
		reason    string
	}{
		{"loopback literal", s.URL + "/search?q={query}&first={first}", true, "127.0.0.1 is a loopback address"},
		{"metadata literal", "http://169.254.169.254/latest?q={query}", true, "169.254.169.254 is a link-local address"},
		{"IPv6 loopback literal", "http://[::1]:" + port(s.Server) + "/search?q={query}", true, "::1 is a loopback address"},
		{"loopback by name", "http://localhost:" + port(s.Server) + "/search?q={query}&first={first}", false, "127.0.0.1 is a loopback address"},
	}
	for _, tc := range tests {
		opt := s.options(t, "/img/a.png")
		opt.Endpoint = tc.endpoint
		res, err := Crawl(context.Background(), opt)
		if !errors.Is(err, ErrPrivateTarget) || !strings.Contains(err.Error(), tc.reason) || !strings.HasPrefix(err.Error(), "dataset: crawl: ") {
			t.Errorf("%s: got %v, want a dataset: crawl error, ErrPrivateTarget, containing %q", tc.name, err, tc.reason)
		}
		if (res == nil) != tc.nilResult {
			t.Errorf("%s: got result %+v, want nil result %v", tc.name, res, tc.nilResult)
		}
	}
	if n := s.hit("/search"); n != 0 {
		t.Errorf("got %d requests on the endpoint, want 0", n)
	}
	if len(s.dials) != 0 {
		t.Errorf("got dials %v past the check, want none", s.dials)
	}
}

// TestCrawlRefusedRetried: a URL refused by the policy is not remembered as
// tried, so a rerun that allows more fetches it.
func TestCrawlRefusedRetried(t *testing.T) {
	s := newTargetServer(t)
	opt := s.options(t, "/img/port.png")
	opt.AllowPrivateTargets = true
	res, err := Crawl(context.Background(), opt)
	if err != nil || len(res.Refused) != 1 {
		t.Fatalf("first run: got %+v, %v, want 1 refused", res, err)
	}
	opt.AllowOffHostRedirects = true
	res, err = Crawl(context.Background(), opt)
	if err != nil || res.Saved != 1 || len(res.Refused) != 0 {
		t.Fatalf("second run: got %+v, %v, want 1 saved", res, err)
	}
	if n := s.hit("other/img/x.png"); n != 1 {
		t.Errorf("got %d requests on the other port, want 1", n)
	}
	u, _ := url.Parse(s.other.URL)
	if !s.dialled(u.Hostname()) {
		t.Errorf("got no dial to the other server, want one")
	}
}
