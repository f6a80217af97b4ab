package dataset

import (
	"context"
	"errors"
)

// Report describes a data set; it is what `fwbench dataset inspect` prints
// and serialises to JSON.
type Report struct {
	Path    string       `json:"path"`
	Layout  string       `json:"layout"` // LayoutFolder, LayoutPreSplit or LayoutIDX
	Classes []ClassCount `json:"classes"`
	Train   int          `json:"train"`
	Val     int          `json:"val"`
	Test    int          `json:"test"`
	// Images counts distinct usable images (for IDX, Val is Test and is
	// counted once).
	Images  int            `json:"images"`
	Width   SizeStats      `json:"width"`  // displayed width in pixels
	Height  SizeStats      `json:"height"` // displayed height in pixels
	Formats map[string]int `json:"formats"`
	Skipped []Skipped      `json:"skipped"`
	// Problems are the reasons Open would refuse the data set; empty when
	// it is usable.
	Problems []string `json:"problems"`
}

// ClassCount is one class of a Report.
type ClassCount struct {
	Label int    `json:"label"`
	Name  string `json:"name"`
	Total int    `json:"total"`
	Train int    `json:"train"`
	Val   int    `json:"val"`
	Test  int    `json:"test"`
}

// SizeStats summarises one image dimension.
type SizeStats struct {
	Min  int     `json:"min"`
	Max  int     `json:"max"`
	Mean float64 `json:"mean"`
}

// Inspect opens path like Open and describes it. Layout problems (fewer
// than two classes, a class without a usable image...) do not fail the
// call: they are listed in Report.Problems. Errors are reserved for
// unreadable paths, cancellation and, under opt.Strict, the first bad file.
func Inspect(ctx context.Context, path string, opt OpenOptions) (*Report, error) {
	d, problems, err := scan(ctx, path, opt)
	if err != nil {
		return nil, err
	}
	r := &Report{
		Path: d.path, Layout: d.layout, Formats: map[string]int{},
		Skipped: append([]Skipped{}, d.skipped...), Problems: []string{},
	}
	for _, p := range problems {
		var le *layoutError
		if errors.As(p, &le) {
			r.Problems = append(r.Problems, le.msg)
		} else {
			r.Problems = append(r.Problems, p.Error())
		}
	}
	r.Classes = make([]ClassCount, len(d.classes))
	for i, name := range d.classes {
		r.Classes[i] = ClassCount{Label: i, Name: name}
	}
	var sumW, sumH float64
	add := func(s *Subset, count func(*ClassCount), distinct bool) {
		for _, it := range s.items {
			count(&r.Classes[it.label])
			if !distinct {
				continue
			}
			r.Images++
			r.Formats[it.format]++
			sumW += float64(it.w)
			sumH += float64(it.h)
			if r.Images == 1 {
				r.Width = SizeStats{Min: it.w, Max: it.w}
				r.Height = SizeStats{Min: it.h, Max: it.h}
			}
			r.Width.Min, r.Width.Max = min(r.Width.Min, it.w), max(r.Width.Max, it.w)
			r.Height.Min, r.Height.Max = min(r.Height.Min, it.h), max(r.Height.Max, it.h)
		}
	}
	add(d.train, func(c *ClassCount) { c.Train++; c.Total++ }, true)
	add(d.val, func(c *ClassCount) {
		c.Val++
		if !d.valIsTest {
			c.Total++
		}
	}, !d.valIsTest)
	add(d.test, func(c *ClassCount) { c.Test++; c.Total++ }, true)
	r.Train, r.Val, r.Test = d.train.Len(), d.val.Len(), d.test.Len()
	if r.Images > 0 {
		r.Width.Mean = sumW / float64(r.Images)
		r.Height.Mean = sumH / float64(r.Images)
	}
	return r, nil
}
