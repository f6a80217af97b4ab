package model

import "strconv"

// The model table. Each build follows torchvision's module for the model
// (torchvision/models/vgg.py, resnet.py, mobilenetv2.py, version 0.26) so that
// Net.Params carries its state-dict names and shapes.

// The VGG heads.
const (
	// HeadFlatten flattens the base's output (torch's C×H×W order,
	// 512·(S/32)² values) straight into torchvision's three Linear layers
	// classifier.0 (hidden), classifier.3 (hidden) and classifier.6 (classes),
	// with ReLU and Dropout after each hidden layer. It is Keras VGG16's
	// include_top head with torchvision's dropout, and equals torchvision's
	// head at 224 px, where the base's output is already 7×7. VGG's default.
	HeadFlatten = "flatten"
	// HeadTorchvision is the model's own torchvision head. For VGG:
	// AdaptiveAvgPool2d((7, 7)), then classifier.0 (25088 → hidden),
	// classifier.3 and classifier.6 as in HeadFlatten (the study's PyTorch
	// side); for ResNet: global average pool and fc; for MobileNetV2: global
	// average pool, Dropout and classifier.1.
	HeadTorchvision = "torchvision"
	// HeadKeras is the study's Keras head on VGG: Flatten → Dense(hidden,
	// relu) (classifier.0) → Dropout → Dense(classes) (classifier.3), all new
	// in finetune and features modes.
	HeadKeras = "keras"
)

// PoolSize is the side of VGG's torchvision AdaptiveAvgPool2d output (7×7).
const PoolSize = 7

// vggCfgs is torchvision's cfgs table ("A", "B", "D", "E"), 0 for "M".
var vggCfgs = map[string][]int{
	"vgg11": {64, 0, 128, 0, 256, 256, 0, 512, 512, 0, 512, 512, 0},
	"vgg13": {64, 64, 0, 128, 128, 0, 256, 256, 0, 512, 512, 0, 512, 512, 0},
	"vgg16": {64, 64, 0, 128, 128, 0, 256, 256, 256, 0, 512, 512, 512, 0, 512, 512, 512, 0},
	"vgg19": {64, 64, 0, 128, 128, 0, 256, 256, 256, 256, 0, 512, 512, 512, 512, 0, 512, 512, 512, 512, 0},
}

func init() {
	for name, cfg := range vggCfgs {
		for _, bn := range []bool{false, true} {
			n := name
			if bn {
				n += "_bn"
			}
			register(n, entry{heads: []string{HeadFlatten, HeadTorchvision, HeadKeras}, hidden: true,
				build: func(b *builder, _, head string, hidden, classes int) { buildVGG(b, cfg, bn, head, hidden, classes) }})
		}
	}
	register("resnet18", entry{heads: []string{HeadTorchvision},
		build: func(b *builder, _, _ string, _, classes int) { buildResNet(b, false, []int{2, 2, 2, 2}, classes) }})
	register("resnet50", entry{heads: []string{HeadTorchvision},
		build: func(b *builder, _, _ string, _, classes int) { buildResNet(b, true, []int{3, 4, 6, 3}, classes) }})
	register("mobilenet_v2", entry{heads: []string{HeadTorchvision},
		build: func(b *builder, _, _ string, _, classes int) { buildMobileNetV2(b, classes) }})
}

// buildVGG is torchvision's VGG: features (3×3 convolutions with bias,
// BatchNorm2d when bn, ReLU; 2×2 max pools) then the head.
func buildVGG(b *builder, cfg []int, bn bool, head string, hidden, classes int) {
	idx := 0
	name := func() string { idx++; return "features." + strconv.Itoa(idx-1) }
	for _, v := range cfg {
		if v == 0 {
			b.maxPool(name(), 2, 2, 0)
			continue
		}
		b.conv(name(), v, 3, 1, 1, 1, true)
		if bn {
			b.batchNorm(name())
		}
		b.relu()
		idx++ // the ReLU's index
	}
	b.startHead()
	if head == HeadTorchvision {
		b.adaptiveAvgPool("avgpool", PoolSize)
	}
	b.flatten()
	widths := []int{hidden, hidden, classes}
	if head == HeadKeras {
		widths = []int{hidden, classes}
		b.replace("classifier.0", "classifier.3")
	} else {
		b.replace("classifier.6")
	}
	for i, w := range widths {
		b.linear("classifier."+strconv.Itoa(3*i), w)
		if i < len(widths)-1 {
			b.relu()
			b.dropout("classifier." + strconv.Itoa(3*i+2))
		}
	}
}

// buildResNet is torchvision's ResNet with BasicBlock (resnet18) or
// Bottleneck (resnet50, v1.5: the stride on the 3×3 convolution).
func buildResNet(b *builder, bottleneck bool, blocks []int, classes int) {
	b.conv("conv1", 64, 7, 2, 3, 1, false)
	b.batchNorm("bn1")
	b.relu()
	b.maxPool("maxpool", 3, 2, 1)
	expansion := 1
	if bottleneck {
		expansion = 4
	}
	inplanes := 64
	for li, n := range blocks {
		planes := 64 << li
		for bi := range n {
			stride := 1
			if bi == 0 && li > 0 {
				stride = 2
			}
			p := "layer" + strconv.Itoa(li+1) + "." + strconv.Itoa(bi) + "."
			identity := b.cur
			if bottleneck {
				b.conv(p+"conv1", planes, 1, 1, 0, 1, false)
				b.batchNorm(p + "bn1")
				b.relu()
				b.conv(p+"conv2", planes, 3, stride, 1, 1, false)
				b.batchNorm(p + "bn2")
				b.relu()
				b.conv(p+"conv3", planes*expansion, 1, 1, 0, 1, false)
				b.batchNorm(p + "bn3")
			} else {
				b.conv(p+"conv1", planes, 3, stride, 1, 1, false)
				b.batchNorm(p + "bn1")
				b.relu()
				b.conv(p+"conv2", planes, 3, 1, 1, 1, false)
				b.batchNorm(p + "bn2")
			}
			main := b.cur
			if stride != 1 || inplanes != planes*expansion {
				b.from(identity)
				b.conv(p+"downsample.0", planes*expansion, 1, stride, 0, 1, false)
				identity = b.batchNorm(p + "downsample.1")
				b.from(main)
			}
			b.residual(identity)
			b.relu()
			inplanes = planes * expansion
		}
	}
	b.startHead()
	b.adaptiveAvgPool("avgpool", 1)
	b.flatten()
	b.linear("fc", classes)
	b.replace("fc")
}

// buildMobileNetV2 is torchvision's MobileNetV2 (width 1.0): features.0 a
// 3×3 stride-2 Conv-BN-ReLU6, 17 inverted residual blocks, features.18 a 1×1
// Conv-BN-ReLU6 to 1280 channels, then global average pooling, Dropout
// (classifier.0) and classifier.1.
func buildMobileNetV2(b *builder, classes int) {
	convBNReLU6 := func(name string, out, k, stride, groups int) {
		b.conv(name+".0", out, k, stride, (k-1)/2, groups, false)
		b.batchNorm(name + ".1")
		b.relu6()
	}
	convBNReLU6("features.0", 32, 3, 2, 1)
	in, idx := 32, 1
	for _, s := range [][4]int{{1, 16, 1, 1}, {6, 24, 2, 2}, {6, 32, 3, 2}, {6, 64, 4, 2}, {6, 96, 3, 1}, {6, 160, 3, 2}, {6, 320, 1, 1}} {
		t, c, n, first := s[0], s[1], s[2], s[3]
		for i := range n {
			stride := 1
			if i == 0 {
				stride = first
			}
			p := "features." + strconv.Itoa(idx) + ".conv."
			start, hidden, j := b.cur, in*t, 0
			if t != 1 {
				convBNReLU6(p+"0", hidden, 1, 1, 1)
				j++
			}
			convBNReLU6(p+strconv.Itoa(j), hidden, 3, stride, hidden)
			b.conv(p+strconv.Itoa(j+1), c, 1, 1, 0, 1, false)
			b.batchNorm(p + strconv.Itoa(j+2))
			if stride == 1 && in == c {
				b.residual(start)
			}
			in = c
			idx++
		}
	}
	convBNReLU6("features.18", 1280, 1, 1, 1)
	b.startHead()
	b.adaptiveAvgPool("", 1)
	b.flatten()
	b.dropout("classifier.0")
	b.linear("classifier.1", classes)
	b.replace("classifier.1")
}
