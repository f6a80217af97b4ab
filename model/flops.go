package model

// FLOPs returns the analytic forward cost of one image in floating-point
// operations, split into the base and the head. The count is the usual
// multiply-accumulate count times two:
//
//	convolution (k×k, H×W output):  2·(Cin/groups)·Cout·k²·H·W
//	linear layer:                  2·in·out
//
// Bias additions, batch norm, activations, pooling, residual adds, dropout and
// the loss are left out, as in torchvision's published figures: for vgg16 at
// 224 px with 1000 classes this gives 2 × 15.47 G multiply-accumulates, the
// 15.47 "GFLOPS" torchvision lists for VGG16_Weights.IMAGENET1K_V1 (which
// counts multiply-accumulates); resnet50 gives 2 × 4.09 G and mobilenet_v2
// 2 × 0.30 G, torchvision's 4.09 and 0.30.
func (n *Net) FLOPs() (base, head float64) {
	for _, l := range n.Layers {
		var f float64
		switch l.Op {
		case Conv:
			f = 2 * float64(l.In.C/l.Groups) * float64(l.Out) * float64(l.Kernel*l.Kernel) * float64(l.Shape.H*l.Shape.W)
		case Linear:
			f = 2 * float64(l.In.C) * float64(l.Out)
		}
		if l.Head {
			head += f
		} else {
			base += f
		}
	}
	return base, head
}

// TrainFLOPs returns the analytic cost of one batch: forward for one
// inference pass of batch images, and train for one training step. A step
// costs 3 × forward (the forward pass plus a backward pass of twice its cost:
// one product for the input gradients, one for the weight gradients); with
// frozenBase (features mode: the base runs forward only) it costs
// batch·(base + 3·head).
func (n *Net) TrainFLOPs(batch int, frozenBase bool) (forward, train float64) {
	if batch < 1 {
		return 0, 0
	}
	base, head := n.FLOPs()
	b := float64(batch)
	forward = b * (base + head)
	if frozenBase {
		return forward, b * (base + 3*head)
	}
	return forward, 3 * forward
}
