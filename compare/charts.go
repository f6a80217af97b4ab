package compare

import (
	"fmt"
	"image/color"
	"io"
	"path/filepath"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"

	"github.com/fwbench/fwbench/weights"
)

// palette colours the report's frameworks in their sorted order (Report.frameworks): the
// first orange, the second blue (tensorflow and torch), then green and purple.
var palette = []color.Color{
	color.RGBA{R: 0xe3, G: 0x6c, B: 0x09, A: 0xff},
	color.RGBA{R: 0x1f, G: 0x5f, B: 0xbf, A: 0xff},
	color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff},
	color.RGBA{R: 0x94, G: 0x67, B: 0xbd, A: 0xff},
}

// fwColor is the colour of the report's i-th framework.
func fwColor(i int) color.Color { return palette[i%len(palette)] }

// writeCharts draws loss and accuracy per epoch, images/s with spread, and the step-time
// distribution, each as PNG and SVG.
func (r *Report) writeCharts(dir string) error {
	charts := map[string]func() (*plot.Plot, error){
		"loss":       func() (*plot.Plot, error) { return r.epochChart("Loss per epoch", "loss", true) },
		"accuracy":   func() (*plot.Plot, error) { return r.epochChart("Accuracy per epoch", "accuracy", false) },
		"throughput": r.throughputChart,
		"steptime":   r.stepTimeChart,
	}
	for name, mk := range charts {
		p, err := mk()
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		for _, ext := range []string{"png", "svg"} {
			// Through the one output-file rule (weights.WriteFileAtomic): gonum's Save would
			// follow a symlink or block on a FIFO at the chart's path.
			wt, err := p.WriterTo(7*vg.Inch, 4.5*vg.Inch, ext)
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			if err := weights.WriteFileAtomic(filepath.Join(dir, name+"."+ext), func(w io.Writer) error {
				_, err := wt.WriteTo(w)
				return err
			}); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
		}
	}
	return nil
}

func newPlot(title, x, y string) *plot.Plot {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = x
	p.Y.Label.Text = y
	p.Legend.Top = true
	p.Add(plotter.NewGrid())
	return p
}

// epochChart plots train and validation loss (or accuracy) per epoch: one line per run,
// solid for training, dashed for validation.
func (r *Report) epochChart(title, y string, loss bool) (*plot.Plot, error) {
	p := newPlot(title, "epoch", y)
	p.Legend.Top = loss // loss falls and accuracy rises: keep the legend off the lines' end
	for f, fw := range r.frameworks() {
		for i, run := range r.byFW[fw] {
			train, val := make(plotter.XYs, len(run.Epochs)), make(plotter.XYs, len(run.Epochs))
			for j, e := range run.Epochs {
				train[j].X, val[j].X = float64(e.Epoch), float64(e.Epoch)
				if loss {
					train[j].Y, val[j].Y = e.TrainLoss, e.ValLoss
				} else {
					train[j].Y, val[j].Y = e.TrainAccuracy, e.ValAccuracy
				}
			}
			for k, xy := range []plotter.XYs{train, val} {
				l, pts, err := plotter.NewLinePoints(xy)
				if err != nil {
					return nil, err
				}
				l.Color, pts.Color = fwColor(f), fwColor(f)
				if k == 1 {
					l.Dashes = []vg.Length{vg.Points(5), vg.Points(3)}
					pts.Shape = draw.BoxGlyph{}
				}
				p.Add(l, pts)
				if i == 0 {
					p.Legend.Add(fmt.Sprintf("%s %s", fw, []string{"train", "val"}[k]), l, pts)
				}
			}
		}
	}
	return p, nil
}

// throughputChart shows median images/s per framework with min–max error bars.
func (r *Report) throughputChart() (*plot.Plot, error) {
	p := newPlot("Training images/s after warm-up (median, min–max)", "", "images/s")
	fws := r.frameworks()
	for i, fw := range fws {
		s := r.Summary[fw].ImagesPerSecond
		bars, err := plotter.NewBarChart(plotter.Values{s.Median}, vg.Points(60))
		if err != nil {
			return nil, err
		}
		bars.Color = fwColor(i)
		bars.Offset = vg.Points(float64(i-len(fws)/2) * 70)
		p.Add(bars)
		p.Legend.Add(fw, bars)
		eb, err := plotter.NewYErrorBars(errPoints{x: 0, s: s})
		if err != nil {
			return nil, err
		}
		p.Add(&offsetErrBars{YErrorBars: eb, offset: bars.Offset})
	}
	p.NominalX("")
	return p, nil
}

type errPoints struct {
	x float64
	s Stat
}

func (e errPoints) Len() int                              { return 1 }
func (e errPoints) XY(int) (float64, float64)             { return e.x, e.s.Median }
func (e errPoints) YError(int) (float64, float64)         { return e.s.Median - e.s.Min, e.s.Max - e.s.Median }
func (o *offsetErrBars) Plot(c draw.Canvas, p *plot.Plot) { o.YErrorBars.Plot(shift(c, o.offset), p) }

type offsetErrBars struct {
	*plotter.YErrorBars
	offset vg.Length
}

func shift(c draw.Canvas, dx vg.Length) draw.Canvas {
	c.Rectangle.Min.X += dx
	c.Rectangle.Max.X += dx
	return c
}

// stepTimeChart is a box plot of every timed step's duration per framework.
func (r *Report) stepTimeChart() (*plot.Plot, error) {
	p := newPlot("Step time distribution after warm-up", "", "ms per step")
	var names []string
	for i, fw := range r.frameworks() {
		var v plotter.Values
		for _, run := range r.byFW[fw] {
			for _, s := range run.StepTimesSeconds {
				v = append(v, s*1000)
			}
		}
		if len(v) == 0 {
			v = plotter.Values{0}
		}
		b, err := plotter.NewBoxPlot(vg.Points(50), float64(i), v)
		if err != nil {
			return nil, err
		}
		b.FillColor = fwColor(i)
		p.Add(b)
		names = append(names, fw)
	}
	p.NominalX(names...)
	return p, nil
}
