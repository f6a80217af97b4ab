package dataset

import (
	"image"
	"sync"

	"golang.org/x/image/draw"
)

// scalers caches draw.BiLinear scalers by (source size, S): a scaler keeps
// its kernel weights and pools its 32-bytes-per-pixel scratch buffer,
// which Kernel.Scale would allocate (and the GC reclaim) on every call.
// Data sets usually have few distinct image sizes; past maxScalers of
// them, images are scaled without a cached scaler.
var (
	scalersMu sync.Mutex
	scalers   = map[[3]int]draw.Scaler{}
)

const maxScalers = 64

func scalerFor(sw, sh, s int) draw.Scaler {
	key := [3]int{sw, sh, s}
	scalersMu.Lock()
	defer scalersMu.Unlock()
	if sc, ok := scalers[key]; ok {
		return sc
	}
	if len(scalers) >= maxScalers {
		return draw.BiLinear
	}
	sc := draw.BiLinear.NewScaler(s, s, sw, sh)
	scalers[key] = sc
	return sc
}

// rgbaPool recycles the S×S scratch images of resizeRGB (one per worker
// in steady state) to spare the garbage collector.
var rgbaPool sync.Pool

// resizeRGB resizes d to s×s with draw.BiLinear (a tent kernel widened when
// shrinking, hence antialiased), applies the EXIF orientation and writes
// s*s*3 bytes of packed RGB into out. The aspect ratio is not kept, as in
// Keras target_size and torchvision Resize((s, s)). Resizing before
// orienting is exact: the orientations are flips and transposes of the
// pixel grid and the kernel is separable and symmetric.
func resizeRGB(d decoded, s int, out []byte) {
	dst, _ := rgbaPool.Get().(*image.RGBA)
	if dst == nil || dst.Rect.Dx() != s || dst.Rect.Dy() != s {
		dst = image.NewRGBA(image.Rect(0, 0, s, s))
	}
	defer rgbaPool.Put(dst)
	sb := d.img.Bounds()
	scalerFor(sb.Dx(), sb.Dy(), s).Scale(dst, dst.Rect, d.img, sb, draw.Src, nil)
	for y := 0; y < s; y++ {
		for x := 0; x < s; x++ {
			sx, sy := orientSource(d.orient, x, y, s)
			i := dst.PixOffset(sx, sy)
			o := (y*s + x) * 3
			out[o], out[o+1], out[o+2] = dst.Pix[i], dst.Pix[i+1], dst.Pix[i+2]
		}
	}
}

// orientSource maps a displayed pixel (x, y) of an s×s image to the stored
// pixel it shows, for EXIF orientation o (TIFF 6.0 / EXIF 2.3 tag 0x0112).
func orientSource(o, x, y, s int) (int, int) {
	m := s - 1
	switch o {
	case 2: // mirrored horizontally
		return m - x, y
	case 3: // rotated 180°
		return m - x, m - y
	case 4: // mirrored vertically
		return x, m - y
	case 5: // transposed
		return y, x
	case 6: // stored rotated 90° counter-clockwise: display turns it 90° clockwise
		return y, m - x
	case 7: // transversed
		return m - y, m - x
	case 8: // display turns it 90° counter-clockwise
		return m - y, x
	default:
		return x, y
	}
}
