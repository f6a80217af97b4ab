package vgg

// FLOPs returns the analytic forward cost of one imageSize×imageSize image in
// floating-point operations, split into the convolutional base and the
// classifier head (hidden 0 means DefaultHidden).
//
// The count is the usual multiply-accumulate count times two:
//
//	3×3 convolution (stride 1, padding 1, H×W output): 2·Cin·Cout·9·H·W
//	linear layer:                                      2·in·out
//
// Bias additions, BatchNorm, ReLU, pooling, dropout and the loss are left out:
// together they are under 0.1% of the total. For vgg16 at 224 px with 1000
// classes this gives 2 × 15.47 G multiply-accumulates = 30.94 GFLOP, the
// 15.47 "GFLOPS" (which counts multiply-accumulates) that torchvision's
// documentation lists for VGG16_Weights.IMAGENET1K_V1.
func FLOPs(c Config, imageSize, numClasses, hidden int) (base, head float64, err error) {
	layers, err := c.FeatureLayers(imageSize)
	if err != nil {
		return 0, 0, err
	}
	hidden, err = checkHead(numClasses, hidden)
	if err != nil {
		return 0, 0, err
	}
	for _, l := range layers {
		if !l.Pool {
			base += 2 * float64(l.In) * float64(l.Out) * 9 * float64(l.Size) * float64(l.Size)
		}
	}
	in, _ := ClassifierInput(imageSize)
	for _, out := range []int{hidden, hidden, numClasses} {
		head += 2 * float64(in) * float64(out)
		in = out
	}
	return base, head, nil
}

// TrainFLOPs returns the analytic cost of one batch in floating-point
// operations: forward for one inference pass of batch images, and train for
// one training step, which is 3 × forward (the forward pass, plus a backward
// pass that costs twice the forward: one product for the input gradients and
// one for the weight gradients). Per-layer costs are those of FLOPs. Both are
// 0 when the arguments are invalid (see FLOPs for the error).
func TrainFLOPs(c Config, imageSize, numClasses, hidden, batch int) (forward, train float64) {
	return TrainFLOPsMode(c, imageSize, numClasses, hidden, batch, false)
}

// TrainFLOPsMode is TrainFLOPs with a choice of what is trained. With
// frozenBase ("features" mode: the convolutional base is fixed and only the
// classifier learns) the base runs forward once and needs no backward pass,
// so a step costs batch·(base + 3·head); otherwise batch·3·(base + head).
func TrainFLOPsMode(c Config, imageSize, numClasses, hidden, batch int, frozenBase bool) (forward, train float64) {
	base, head, err := FLOPs(c, imageSize, numClasses, hidden)
	if err != nil || batch < 1 {
		return 0, 0
	}
	n := float64(batch)
	forward = n * (base + head)
	if frozenBase {
		return forward, n * (base + 3*head)
	}
	return forward, 3 * forward
}
