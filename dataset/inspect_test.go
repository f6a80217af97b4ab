package dataset

import (
	"context"
	"encoding/json"
	"testing"
)

func TestInspectRoundTrip(t *testing.T) {
	dir := t.TempDir()
	if err := Synthesize(dir, 3, 5, 12, 9, "png"); err != nil {
		t.Fatal(err)
	}
	r, err := Inspect(context.Background(), dir, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	data, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(data, &back); err != nil {
		t.Fatal(err)
	}
	if len(back.Classes) != 3 || back.Images != 15 || back.Layout != LayoutFolder || len(back.Problems) != 0 {
		t.Fatalf("got %s, want 3 classes, 15 images, no problems", data)
	}
	for i, c := range back.Classes {
		// round(0.2*5) = 1 validation image per class.
		if c.Total != 5 || c.Train != 4 || c.Val != 1 || c.Label != i || c.Name != SynthClassNames(3)[i] {
			t.Errorf("class %d: got %+v, want total 5 = 4 train + 1 val", i, c)
		}
	}
	if back.Width != (SizeStats{12, 12, 12}) || back.Formats["png"] != 15 {
		t.Errorf("got width %+v formats %v, want 12 px and 15 png", back.Width, back.Formats)
	}
}

func TestInspectProblems(t *testing.T) {
	dir := writeTree(t, smallPNGs("a", 0, 2, map[string][]byte{"b/x.jpg": {}}))
	r, err := Inspect(context.Background(), dir, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Problems) != 1 || len(r.Skipped) != 1 || r.Skipped[0].Reason != "empty file" {
		t.Errorf("got problems %q skipped %v, want 1 problem and the empty file", r.Problems, r.Skipped)
	}
	if _, err := Inspect(context.Background(), dir, OpenOptions{Strict: true}); err == nil {
		t.Errorf("strict: got nil error, want the empty file")
	}
}

func TestInspectIDX(t *testing.T) {
	dir := writeTree(t, map[string][]byte{
		"train-images-idx3-ubyte": idxImagesBytes(4, 3, 5),
		"train-labels-idx1-ubyte": idxLabelsBytes([]byte{0, 1, 0, 1}),
		"t10k-images-idx3-ubyte":  idxImagesBytes(2, 3, 5),
		"t10k-labels-idx1-ubyte":  idxLabelsBytes([]byte{1, 1}),
	})
	r, err := Inspect(context.Background(), dir, OpenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// Val is the t10k set: counted in Val but not twice in Images/Total.
	if r.Images != 6 || r.Train != 4 || r.Val != 2 || r.Test != 2 || r.Classes[1].Total != 4 || r.Width.Max != 5 || r.Height.Max != 3 {
		t.Errorf("got %+v, want 6 images: 4 train, 2 test (= val), 5x3 px", r)
	}
}
