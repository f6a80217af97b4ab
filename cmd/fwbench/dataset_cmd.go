package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/fwbench/fwbench/compare"
	"github.com/fwbench/fwbench/dataset"
)

// datasetCommand is `fwbench dataset synth|inspect|crawl|export`: results on
// stdout, diagnostics on stderr, exit status 2 for bad input.
func datasetCommand() *cli.Command {
	return &cli.Command{
		Name:  "dataset",
		Usage: "make, check, collect and export image data sets",
		Subcommands: []*cli.Command{
			datasetSynthCommand(),
			datasetInspectCommand(),
			datasetCrawlCommand(),
			datasetExportCommand(),
		},
	}
}

// oneDir checks that the command got exactly one positional argument (flags after DIR are
// moved before it by normalizeArgs, so everything here is a positional argument).
func oneDir(c *cli.Context, cmd string) error {
	if c.NArg() == 1 {
		return nil
	}
	return badInput("dataset %s: want one folder, got %d arguments", cmd, c.NArg())
}

// badInput is the exit error for invalid flags, arguments or data.
func badInput(format string, args ...any) cli.ExitCoder {
	return cli.Exit(fmt.Sprintf(format, args...), 2)
}

// dataError maps an error of the dataset package to an exit status:
// cancellation and I/O outside the data set are failures (1), everything
// about the data itself is bad input (2).
func dataError(err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return cli.Exit(err.Error(), 1)
	}
	return cli.Exit(err.Error(), 2)
}

func datasetSynthCommand() *cli.Command {
	return &cli.Command{
		Name:      "synth",
		Usage:     "write a seeded synthetic class-folder data set of procedural shapes and textures",
		UsageText: "fwbench dataset synth --out DIR [--classes 3] [--per-class 100] [--size 64] [--seed 1] [--format png|jpeg]",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "out", Required: true, Usage: "output folder (DIR/<class>/<n>.png)"},
			&cli.IntFlag{Name: "classes", Value: 3, Usage: "number of classes"},
			&cli.IntFlag{Name: "per-class", Value: 100, Usage: "images per class"},
			&cli.IntFlag{Name: "size", Value: 64, Usage: "image side in pixels"},
			&cli.Int64Flag{Name: "seed", Value: 1, Usage: "random seed: the same seed writes the same bytes"},
			&cli.StringFlag{Name: "format", Value: "png", Usage: "png|jpeg"},
		},
		Action: func(c *cli.Context) error {
			classes, per, size, format := c.Int("classes"), c.Int("per-class"), c.Int("size"), c.String("format")
			switch {
			case c.NArg() > 0:
				return badInput("dataset synth: unexpected argument %q", c.Args().First())
			case classes < 1:
				return badInput("dataset synth: --classes %d must be at least 1", classes)
			case per < 1:
				return badInput("dataset synth: --per-class %d must be at least 1", per)
			case size < 8 || size > 4096:
				return badInput("dataset synth: --size %d must be in [8, 4096]", size)
			case format != "png" && format != "jpeg" && format != "jpg":
				return badInput("dataset synth: --format %q must be png or jpeg", format)
			}
			out := c.String("out")
			if err := dataset.Synthesize(out, classes, per, size, c.Int64("seed"), format); err != nil {
				return cli.Exit(err.Error(), 1)
			}
			fmt.Fprintf(c.App.Writer, "wrote %d images (%d classes × %d, %d×%d %s) to %s\n",
				classes*per, classes, per, size, size, format, out)
			return nil
		},
	}
}

// openFlags are the flags that fill dataset.OpenOptions.
func openFlags() []cli.Flag {
	return []cli.Flag{
		&cli.Float64Flag{Name: "val-split", Value: 0.2, Usage: "validation share when the tree is not pre-split (negative: none)"},
		&cli.Int64Flag{Name: "seed", Value: 1, Usage: "seed of the stratified split"},
		&cli.BoolFlag{Name: "strict", Usage: "fail on the first unusable file instead of skipping it"},
		&cli.Int64Flag{Name: "max-pixels", Value: dataset.DefaultMaxPixels, Usage: "largest declared width*height accepted"},
	}
}

func openOptions(c *cli.Context) (dataset.OpenOptions, error) {
	vs := c.Float64("val-split")
	if vs >= 1 {
		return dataset.OpenOptions{}, badInput("--val-split %v must be below 1", vs)
	}
	if vs == 0 {
		vs = -1 // an explicit 0 means no validation set
	}
	if c.Int64("max-pixels") <= 0 {
		return dataset.OpenOptions{}, badInput("--max-pixels %d must be positive", c.Int64("max-pixels"))
	}
	return dataset.OpenOptions{ValSplit: vs, Seed: c.Int64("seed"), Strict: c.Bool("strict"), MaxPixels: c.Int64("max-pixels")}, nil
}

func datasetInspectCommand() *cli.Command {
	return &cli.Command{
		Name:      "inspect",
		Usage:     "check a data set: classes and counts, image sizes, skipped files with reasons",
		UsageText: "fwbench dataset inspect DIR [--json] [--strict] [--val-split 0.2] [--seed 1]",
		ArgsUsage: "DIR",
		Flags:     append(openFlags(), &cli.BoolFlag{Name: "json", Usage: "print the report as JSON"}),
		Action: func(c *cli.Context) error {
			if err := oneDir(c, "inspect"); err != nil {
				return err
			}
			opt, err := openOptions(c)
			if err != nil {
				return err
			}
			r, err := dataset.Inspect(c.Context, c.Args().First(), opt)
			if err != nil {
				return dataError(err)
			}
			if c.Bool("json") {
				enc := json.NewEncoder(c.App.Writer)
				enc.SetIndent("", "  ")
				if err := enc.Encode(r); err != nil {
					return cli.Exit(err.Error(), 1)
				}
			} else {
				printReport(c.App.Writer, r)
			}
			if len(r.Problems) > 0 {
				return badInput("dataset inspect: %s is not usable: %s", r.Path, strings.Join(r.Problems, "; "))
			}
			return nil
		},
	}
}

func printReport(w io.Writer, r *dataset.Report) {
	fmt.Fprintf(w, "%s (%s): %d classes, %d images: train %d, val %d, test %d\n",
		r.Path, r.Layout, len(r.Classes), r.Images, r.Train, r.Val, r.Test)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "label\tclass\ttotal\ttrain\tval\ttest")
	for _, c := range r.Classes {
		fmt.Fprintf(tw, "%d\t%s\t%d\t%d\t%d\t%d\n", c.Label, c.Name, c.Total, c.Train, c.Val, c.Test)
	}
	tw.Flush()
	if r.Images > 0 {
		fmt.Fprintf(w, "width %d..%d (mean %.1f), height %d..%d (mean %.1f)\n",
			r.Width.Min, r.Width.Max, r.Width.Mean, r.Height.Min, r.Height.Max, r.Height.Mean)
		var fs []string
		for _, f := range []string{"jpeg", "png", "gif", "bmp", "webp", "idx"} {
			if n := r.Formats[f]; n > 0 {
				fs = append(fs, fmt.Sprintf("%s %d", f, n))
			}
		}
		fmt.Fprintf(w, "formats: %s\n", strings.Join(fs, ", "))
	}
	fmt.Fprintf(w, "skipped: %d\n", len(r.Skipped))
	for _, s := range r.Skipped {
		fmt.Fprintf(w, "  %s: %s\n", s.Path, s.Reason)
	}
	for _, p := range r.Problems {
		fmt.Fprintf(w, "problem: %s\n", p)
	}
}

func datasetCrawlCommand() *cli.Command {
	return &cli.Command{
		Name:  "crawl",
		Usage: "collect images for one class from a search endpoint (deduplicated, resumable, rate-limited)",
		UsageText: "fwbench dataset crawl --query \"lion\" --limit N --out DIR/lion [--endpoint URL] [--delay 1s]\n" +
			"   [--max-redirects 5] [--allow-redirects-off-host] [--allow-private-targets]\n" +
			"   The endpoint is a URL template with {query}, {offset} (0-based), {first} (1-based) and {count}.\n" +
			"   Redirects keep the scheme and host:port of the URL asked for, and no connection is made to a\n" +
			"   loopback, private, link-local (169.254.0.0/16, fe80::/10: cloud metadata), unspecified or\n" +
			"   multicast address, checked on the address dialled, unless the flags allow it. No HTTP proxy is used.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "query", Required: true, Usage: "search terms"},
			&cli.IntFlag{Name: "limit", Value: 100, Usage: "images wanted in --out, counting those already there"},
			&cli.StringFlag{Name: "out", Required: true, Usage: "class folder to fill, e.g. DIR/lion"},
			&cli.StringFlag{Name: "endpoint", Value: dataset.DefaultCrawlEndpoint, Usage: "result page URL template"},
			&cli.IntFlag{Name: "page-size", Value: 35, Usage: "results asked per page ({count})"},
			&cli.IntFlag{Name: "max-pages", Value: 50, Usage: "result pages fetched at most"},
			&cli.DurationFlag{Name: "delay", Value: time.Second, Usage: "least time between two requests"},
			&cli.DurationFlag{Name: "timeout", Value: 30 * time.Second, Usage: "per request"},
			&cli.Int64Flag{Name: "max-bytes", Value: 20 << 20, Usage: "largest file accepted"},
			&cli.Int64Flag{Name: "max-pixels", Value: dataset.DefaultMaxPixels, Usage: "largest declared width*height accepted"},
			&cli.StringFlag{Name: "user-agent", Value: "fwbench-crawl/1", Usage: "HTTP User-Agent"},
			&cli.IntFlag{Name: "max-redirects", Value: dataset.DefaultMaxRedirects,
				Usage: fmt.Sprintf("redirects followed per request (0: none, at most %d)", dataset.MaxCrawlRedirects)},
			&cli.BoolFlag{Name: "allow-redirects-off-host", Usage: "follow redirects to another scheme, host or port"},
			&cli.BoolFlag{Name: "allow-private-targets", Usage: "connect to loopback, private, link-local, unspecified and multicast addresses"},
			&cli.BoolFlag{Name: "json", Usage: "print the result as JSON"},
			&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "no progress output"},
		},
		Action: func(c *cli.Context) error {
			switch {
			case c.NArg() > 0:
				return badInput("dataset crawl: unexpected argument %q", c.Args().First())
			case c.Int("limit") < 1:
				return badInput("dataset crawl: --limit %d must be at least 1", c.Int("limit"))
			case !strings.Contains(c.String("endpoint"), "{query}"):
				return badInput("dataset crawl: --endpoint %q has no {query}", c.String("endpoint"))
			case c.Int64("max-bytes") < 1 || c.Int64("max-pixels") < 1:
				return badInput("dataset crawl: --max-bytes and --max-pixels must be positive")
			case c.Int("max-redirects") < 0 || c.Int("max-redirects") > dataset.MaxCrawlRedirects:
				return badInput("dataset crawl: --max-redirects %d must be between 0 and %d", c.Int("max-redirects"), dataset.MaxCrawlRedirects)
			}
			redirects := c.Int("max-redirects")
			if redirects == 0 {
				redirects = -1 // explicit 0: none
			}
			delay := c.Duration("delay")
			if delay == 0 {
				delay = -1 // explicit 0: no delay
			}
			opt := dataset.CrawlOptions{
				Query: c.String("query"), Limit: c.Int("limit"), Out: c.String("out"),
				Endpoint: c.String("endpoint"), PageSize: c.Int("page-size"), MaxPages: c.Int("max-pages"),
				Delay: delay, Timeout: c.Duration("timeout"), MaxBytes: c.Int64("max-bytes"),
				MaxPixels: c.Int64("max-pixels"), UserAgent: c.String("user-agent"),
				MaxRedirects: redirects, AllowOffHostRedirects: c.Bool("allow-redirects-off-host"),
				AllowPrivateTargets: c.Bool("allow-private-targets"),
			}
			if !c.Bool("quiet") {
				ew := c.App.ErrWriter
				opt.Progress = func(e dataset.CrawlEvent) {
					switch e.Kind {
					case "saved":
						fmt.Fprintf(ew, "[%d/%d] saved %s -> %s\n", e.Total, e.Limit, e.URL, e.Path)
					case "failed":
						fmt.Fprintf(ew, "[%d/%d] skipped %s: %s\n", e.Total, e.Limit, e.URL, e.Reason)
					case "duplicate":
						fmt.Fprintf(ew, "[%d/%d] duplicate %s\n", e.Total, e.Limit, e.URL)
					case "page":
						fmt.Fprintf(ew, "[%d/%d] page %s\n", e.Total, e.Limit, e.URL)
					}
				}
			}
			res, err := dataset.Crawl(c.Context, opt)
			if res != nil {
				if c.Bool("json") {
					b, _ := json.Marshal(res)
					fmt.Fprintf(c.App.Writer, "%s\n", b)
				} else {
					fmt.Fprintf(c.App.Writer, "%s: %d images (%d new, %d already there); %d duplicates, %d refused, %d pages\n",
						opt.Out, res.Total, res.Saved, res.Existing, res.Duplicates, res.Failed, res.Pages)
					for _, r := range res.Refused {
						fmt.Fprintf(c.App.Writer, "  not fetched %s: %s\n", r.URL, r.Reason)
					}
				}
				if hint := crawlHint(res.Refused, err); hint != "" {
					fmt.Fprintln(c.App.ErrWriter, hint)
				}
			}
			if err != nil {
				if res == nil {
					if hint := crawlHint(nil, err); hint != "" {
						return cli.Exit(err.Error()+"\n"+hint, 2)
					}
					return cli.Exit(err.Error(), 2) // refused before any request
				}
				return cli.Exit(err.Error(), 1)
			}
			return nil
		},
	}
}

// crawlHint names the flag that would allow what the crawler refused, or "".
func crawlHint(refused []dataset.CrawlRefusal, err error) string {
	var te *dataset.TargetError
	private := errors.Is(err, dataset.ErrPrivateTarget)
	offHost := errors.As(err, &te) && strings.Contains(te.Reason, "off-host")
	for _, r := range refused {
		private = private || r.Kind == "private-target"
		offHost = offHost || (r.Kind == "redirect" && strings.Contains(r.Reason, "off-host"))
	}
	var flags []string
	if offHost {
		flags = append(flags, "--allow-redirects-off-host follows redirects to other hosts")
	}
	if private {
		flags = append(flags, "--allow-private-targets allows loopback, private and link-local addresses")
	}
	if len(flags) == 0 {
		return ""
	}
	return "dataset crawl: some targets were refused; " + strings.Join(flags, "; ")
}

func datasetExportCommand() *cli.Command {
	return &cli.Command{
		Name:  "export",
		Usage: "write one batch (.npz) and/or an epoch's batch order (.csv) exactly as the loader feeds the frameworks",
		UsageText: "fwbench dataset export DIR [--out batch.npz] [--order order.csv] [--subset train] [--epoch 0] [--batch 0]\n" +
			"   [--image-size 224] [--batch-size 32] [--seed 1] [--shuffle] [--normalize rescale] [--augment]",
		ArgsUsage: "DIR",
		Flags: append(openFlags(),
			&cli.StringFlag{Name: "out", Usage: "write batch --batch of epoch --epoch to this .npz (x, labels, epoch, index)"},
			&cli.StringFlag{Name: "order", Usage: "write the epoch's image order to this .csv"},
			&cli.StringFlag{Name: "subset", Value: "train", Usage: "train|val|test"},
			&cli.IntFlag{Name: "epoch", Value: 0},
			&cli.IntFlag{Name: "batch", Value: 0, Usage: "batch index within the epoch"},
			&cli.IntFlag{Name: "image-size", Value: 224},
			&cli.IntFlag{Name: "batch-size", Value: 32},
			&cli.BoolFlag{Name: "shuffle", Value: true},
			&cli.BoolFlag{Name: "drop-last"},
			&cli.StringFlag{Name: "normalize", Value: dataset.NormRescale, Usage: "rescale|imagenet|caffe"},
			&cli.BoolFlag{Name: "augment", Usage: "the study's ImageDataGenerator augmentation"},
			&cli.StringFlag{Name: "cache", Usage: "\"memory\" or a folder for the decoded cache"},
		),
		Action: func(c *cli.Context) error {
			if err := oneDir(c, "export"); err != nil {
				return err
			}
			if c.String("out") == "" && c.String("order") == "" {
				return badInput("dataset export: nothing to do: give --out and/or --order")
			}
			for _, p := range []string{c.String("out"), c.String("order")} {
				if p == "" {
					continue
				}
				if err := compare.CheckOutput(p); err != nil { // before any decoding
					return err
				}
			}
			opt, err := openOptions(c)
			if err != nil {
				return err
			}
			d, err := dataset.Open(c.Context, c.Args().First(), opt)
			if err != nil {
				return dataError(err)
			}
			var s *dataset.Subset
			switch c.String("subset") {
			case "train":
				s = d.Train()
			case "val":
				s = d.Val()
			case "test":
				s = d.Test()
			default:
				return badInput("dataset export: --subset %q must be train, val or test", c.String("subset"))
			}
			cfg := dataset.LoaderConfig{
				ImageSize: c.Int("image-size"), BatchSize: c.Int("batch-size"), Seed: c.Int64("seed"),
				Shuffle: c.Bool("shuffle"), DropLast: c.Bool("drop-last"), Normalize: c.String("normalize"),
				Cache: c.String("cache"),
			}
			if c.Bool("augment") {
				cfg.Augment = dataset.PaperAugment()
			}
			l, err := dataset.NewLoader(s, cfg)
			if err != nil {
				return badInput("%v", err)
			}
			defer l.Close()
			epoch, batch := c.Int("epoch"), c.Int("batch")
			if p := c.String("order"); p != "" {
				if err := dataset.ExportOrder(p, s, l.Order(epoch), cfg.BatchSize); err != nil {
					return cli.Exit(err.Error(), 1)
				}
				fmt.Fprintf(c.App.Writer, "order of epoch %d (%d images) -> %s\n", epoch, len(l.Order(epoch)), p)
			}
			if p := c.String("out"); p != "" {
				if batch < 0 || batch >= l.BatchesPerEpoch() {
					return badInput("dataset export: --batch %d is outside [0, %d)", batch, l.BatchesPerEpoch())
				}
				it := l.Epoch(c.Context, epoch)
				defer it.Close()
				var b *dataset.Batch
				for k := 0; k <= batch; k++ {
					if b, err = it.Next(); err != nil {
						return dataError(err)
					}
				}
				if err := dataset.ExportBatch(p, b); err != nil {
					return cli.Exit(err.Error(), 1)
				}
				fmt.Fprintf(c.App.Writer, "batch %d of epoch %d (%d×%d×%d×%d) sha256 %s -> %s\n", b.Index, b.Epoch, b.N, b.H, b.W, b.C, b.Hash(), p)
			}
			return nil
		},
	}
}
