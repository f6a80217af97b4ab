// Package compare owns fwbench's fairness rules and its runs: a training run of one
// framework (TrainOne, Train: data, initial weights composed once, warm-up, synchronised
// timers, checkpoints, exports), and a comparison of frameworks (Run: shared data and
// weights, a parity check, each run in its own child process, alternating order, repeats,
// statistics, the fairness conditions and the report with its charts).
//
// A run's configuration is a Spec: the training recipe (recipe.Config, validated once by
// recipe.Config.Validate) and what compare adds to it (framework, data, epochs, batch size,
// files, limits). compare names no framework: a program registers the drivers it links
// (Register, as cmd/fwbench does for torchrun and tfrun), and reports take their names from
// the registrations and the runs. A driver satisfies the small Trainer interface, and the
// optional Checkpointer, WeightsReader, Logitser, Syncer and GPUMemory where it can.
//
// compare never prints; it reports progress through a callback. It is pure Go and needs no
// native library (the drivers it runs do).
package compare
