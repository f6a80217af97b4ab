package recipe

// BadRecipe is one invalid recipe and a phrase its Validate message holds.
type BadRecipe struct {
	Name   string
	Config Config
	Want   string
}

// BadRecipes lists invalid recipes, each a Default with one thing wrong. The
// recipe tests and the tests of every entry point that takes a recipe (the
// CLI, compare, torchrun.New, tfrun.New) run them, to show that they all
// refuse the same recipes with the same message.
func BadRecipes() []BadRecipe {
	with := func(f func(*Config)) Config { c := Default(); f(&c); return c }
	return []BadRecipe{
		{"unknown model", with(func(c *Config) { c.Model = "resnet34" }), `unknown model "resnet34"`},
		{"head for another model", with(func(c *Config) { c.Model, c.Head = "resnet50", "keras" }), `resnet50 has no head "keras"`},
		{"image size", with(func(c *Config) { c.ImageSize = 100 }), "image size 100"},
		{"mode", with(func(c *Config) { c.Mode = "transfer" }), `mode "transfer"`},
		{"optimizer", with(func(c *Config) { c.Optimizer = "rmsprop" }), `optimizer "rmsprop"`},
		{"zero lr", with(func(c *Config) { c.LR = 0 }), "learning rate 0"},
		{"momentum 1", with(func(c *Config) { c.Momentum = 1 }), "momentum 1"},
		{"nesterov without momentum", with(func(c *Config) { c.Momentum, c.Nesterov = 0, true }), "nesterov needs a positive momentum"},
		{"nesterov with adam", with(func(c *Config) { c.Optimizer, c.Nesterov = Adam, true }), "nesterov applies to sgd only"},
		{"adam beta", with(func(c *Config) { c.Optimizer, c.Beta2 = Adam, 1 }), "adam betas"},
		{"dropout 1", with(func(c *Config) { c.Dropout = 1 }), "dropout 1"},
		{"device gpu", with(func(c *Config) { c.Device = "gpu" }), `device "gpu"`},
		{"threads", with(func(c *Config) { c.Threads = 100000 }), "threads 100000"},
		{"precision", with(func(c *Config) { c.Precision = "fp8" }), `precision "fp8"`},
		{"tf32 on the cpu", with(func(c *Config) { c.Precision = TF32 }), "precision tf32 needs a CUDA device"},
	}
}
