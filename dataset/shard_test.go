package dataset

import (
	"slices"
	"strings"
	"testing"
)

// TestShardsMakeTheGlobalBatch: the shards of Count ranks, laid side by side
// in rank order, are the bytes of the global batch (same order, same
// augmentation), and each says where it sits.
func TestShardsMakeTheGlobalBatch(t *testing.T) {
	s := synthSubset(t, 3, 8, 24)
	base := LoaderConfig{ImageSize: 16, BatchSize: 6, Seed: 7, Shuffle: true, DropLast: true, Augment: PaperAugment(), Workers: 2}
	for _, count := range []int{2, 3} {
		global := epochBatches(t, s, base, 1)
		if len(global) != 4 { // 24 / 6
			t.Fatalf("got %d global batches, want 4", len(global))
		}
		shards := make([][]*Batch, count)
		for r := range count {
			cfg := base
			cfg.Shard = Shard{Rank: r, Count: count}
			shards[r] = epochBatches(t, s, cfg, 1)
		}
		for k, g := range global {
			var x []float32
			var labels []int32
			for r := range count {
				b := shards[r][k]
				if b.N != 6/count || b.Offset != r*6/count || b.GlobalN != 6 || b.Global() != 6 {
					t.Errorf("%d ranks, batch %d, rank %d: N, Offset, GlobalN = %d, %d, %d, want %d, %d, 6",
						count, k, r, b.N, b.Offset, b.GlobalN, 6/count, r*6/count)
				}
				x = append(x, b.X...)
				labels = append(labels, b.Labels...)
			}
			if !slices.Equal(x, g.X) || !slices.Equal(labels, g.Labels) {
				t.Errorf("%d ranks, batch %d: the shards side by side differ from the global batch", count, k)
			}
			if g.Global() != g.N || g.Offset != 0 {
				t.Errorf("global batch %d: Global() = %d, Offset = %d, want %d, 0", k, g.Global(), g.Offset, g.N)
			}
		}
	}
}

func TestShardRefused(t *testing.T) {
	s := synthSubset(t, 3, 4, 12)
	base := LoaderConfig{ImageSize: 16, BatchSize: 6, DropLast: true}
	tests := []struct {
		name  string
		shard Shard
		keep  bool // DropLast
		want  string
	}{
		{"rank past the count", Shard{Rank: 2, Count: 2}, true, "outside [0, 2)"},
		{"negative rank", Shard{Rank: -1, Count: 2}, true, "outside [0, 2)"},
		{"batch not a multiple", Shard{Rank: 0, Count: 4}, true, "not a multiple of the 4 ranks"},
		{"partial batches kept", Shard{Rank: 0, Count: 2}, false, "drop the last partial batch"},
	}
	for _, tt := range tests {
		cfg := base
		cfg.Shard, cfg.DropLast = tt.shard, tt.keep
		_, err := NewLoader(s, cfg)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: got %v, want an error containing %q", tt.name, err, tt.want)
		}
	}
}
