package dataset

import "fmt"

// Normalisation modes of LoaderConfig.Normalize.
const (
	// NormRescale is x/255 in RGB order (Keras rescale=1/255, torchvision ToTensor).
	NormRescale = "rescale"
	// NormImageNet is (x/255-mean)/std in RGB order with torchvision's ImageNet
	// statistics mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225).
	NormImageNet = "imagenet"
	// NormCaffe is keras.applications.vgg16.preprocess_input: RGB→BGR, then
	// the BGR means (103.939, 116.779, 123.68) are subtracted, no scaling.
	NormCaffe = "caffe"
)

var (
	imagenetMean = [3]float32{0.485, 0.456, 0.406}
	imagenetStd  = [3]float32{0.229, 0.224, 0.225}
	caffeMeanBGR = [3]float32{103.939, 116.779, 123.68}
)

// normalizer maps a pixel value v in [0, 255] of input channel src to an
// output channel. All arithmetic is float32 with explicit conversions.
type normalizer struct {
	mode string
	bgr  bool
	lut  [3][256]float32 // per output channel, for integer inputs
}

func newNormalizer(mode string) (*normalizer, error) {
	n := &normalizer{mode: mode}
	switch mode {
	case NormRescale, NormImageNet:
	case NormCaffe:
		n.bgr = true
	default:
		return nil, fmt.Errorf("dataset: unknown normalisation %q (want %q, %q or %q)", mode, NormRescale, NormImageNet, NormCaffe)
	}
	for c := 0; c < 3; c++ {
		for v := 0; v < 256; v++ {
			n.lut[c][v] = n.apply(c, float32(v))
		}
	}
	return n, nil
}

// srcChannel is the input (RGB) channel that feeds output channel c.
func (n *normalizer) srcChannel(c int) int {
	if n.bgr {
		return 2 - c
	}
	return c
}

// apply normalises v for output channel c.
func (n *normalizer) apply(c int, v float32) float32 {
	switch n.mode {
	case NormImageNet:
		return float32(float32(v/255)-imagenetMean[c]) / imagenetStd[c]
	case NormCaffe:
		return v - caffeMeanBGR[c]
	default:
		return v / 255
	}
}

// fromUint8 normalises packed RGB bytes into dst.
func (n *normalizer) fromUint8(src []uint8, dst []float32) {
	s0, s1, s2 := n.srcChannel(0), n.srcChannel(1), n.srcChannel(2)
	for i := 0; i+2 < len(src); i += 3 {
		dst[i] = n.lut[0][src[i+s0]]
		dst[i+1] = n.lut[1][src[i+s1]]
		dst[i+2] = n.lut[2][src[i+s2]]
	}
}

// inPlace normalises packed RGB float values in [0, 255] held in x. Each
// mode's loop computes exactly what apply computes.
func (n *normalizer) inPlace(x []float32) {
	switch n.mode {
	case NormImageNet:
		for i := 0; i+2 < len(x); i += 3 {
			for c := 0; c < 3; c++ {
				x[i+c] = float32(float32(x[i+c]/255)-imagenetMean[c]) / imagenetStd[c]
			}
		}
	case NormCaffe:
		for i := 0; i+2 < len(x); i += 3 {
			r, g, b := x[i], x[i+1], x[i+2]
			x[i], x[i+1], x[i+2] = b-caffeMeanBGR[0], g-caffeMeanBGR[1], r-caffeMeanBGR[2]
		}
	default:
		for i := range x {
			x[i] /= 255
		}
	}
}
