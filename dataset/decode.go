package dataset

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"image"
	"image/color"
	_ "image/gif" // registers GIF (first frame is decoded)
	_ "image/jpeg"
	_ "image/png"
	"io"
	"io/fs"
	"runtime/debug"

	_ "golang.org/x/image/bmp"
	_ "golang.org/x/image/webp"
)

const (
	// DefaultMaxPixels is the default limit on declared width*height.
	DefaultMaxPixels = 50_000_000
	// DefaultMaxBytes is the default limit on the size of one image file.
	DefaultMaxBytes = 512 << 20
)

// decoded is a source image ready to resize: img is opaque and is one of
// *image.YCbCr, *image.Gray or *image.RGBA (alpha 255 everywhere), so that
// golang.org/x/image/draw takes a fast path and the colour values are the
// straight (non-premultiplied) ones, as PIL's convert("RGB") keeps them.
type decoded struct {
	img    image.Image
	orient int    // EXIF orientation 1..8 (1 = as stored)
	format string // "jpeg", "png", "gif", "bmp", "webp"
}

// displaySize is the size after the EXIF orientation is applied.
func (d decoded) displaySize() (w, h int) {
	b := d.img.Bounds()
	if d.orient >= 5 {
		return b.Dy(), b.Dx()
	}
	return b.Dx(), b.Dy()
}

// readImageFile reads a whole file, refusing empty files and files over
// maxBytes.
func readImageFile(path string, maxBytes int64) ([]byte, error) {
	f, st, err := openRegular(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if st.Size() == 0 {
		return nil, &ImageError{Path: path, Reason: "empty file", Kind: ErrEmptyFile}
	}
	if st.Size() > maxBytes {
		return nil, &ImageError{Path: path, Kind: ErrTooLarge,
			Reason: fmt.Sprintf("file is %d bytes, over the limit of %d", st.Size(), maxBytes)}
	}
	data, err := io.ReadAll(io.LimitReader(f, maxBytes+1))
	if err != nil {
		return nil, unreadable(path, err)
	}
	if int64(len(data)) > maxBytes {
		return nil, &ImageError{Path: path, Kind: ErrTooLarge,
			Reason: fmt.Sprintf("file grew over the limit of %d bytes", maxBytes)}
	}
	if len(data) == 0 {
		return nil, &ImageError{Path: path, Reason: "empty file", Kind: ErrEmptyFile}
	}
	return data, nil
}

func unreadable(path string, err error) error {
	reason := err.Error()
	var pe *fs.PathError
	if errors.As(err, &pe) {
		reason = pe.Err.Error()
	}
	return &ImageError{Path: path, Reason: "cannot read: " + reason, Kind: ErrUnreadable, Err: err}
}

// decodeConfig checks the header only: format, declared size and the pixel
// limit. It allocates nothing in proportion to the declared size.
func decodeConfig(data []byte, maxPixels int64) (image.Config, string, error) {
	if len(data) == 0 {
		return image.Config{}, "", &ImageError{Reason: "empty file", Kind: ErrEmptyFile}
	}
	cfg, format, err := image.DecodeConfig(bytes.NewReader(data))
	if err != nil {
		if errors.Is(err, image.ErrFormat) {
			return cfg, "", &ImageError{Reason: "not an image (unrecognised format)", Kind: ErrNotImage, Err: err}
		}
		return cfg, format, &ImageError{Reason: fmt.Sprintf("corrupt %s header: %v", orUnknown(format), err), Kind: ErrCorrupt, Err: err}
	}
	if cfg.Width <= 0 || cfg.Height <= 0 {
		return cfg, format, &ImageError{Reason: fmt.Sprintf("%s declares an empty size %dx%d", format, cfg.Width, cfg.Height), Kind: ErrCorrupt}
	}
	if int64(cfg.Width)*int64(cfg.Height) > maxPixels {
		return cfg, format, &ImageError{Kind: ErrTooLarge,
			Reason: fmt.Sprintf("%s declares %dx%d pixels, over the limit of %d", format, cfg.Width, cfg.Height, maxPixels)}
	}
	return cfg, format, nil
}

func orUnknown(format string) string {
	if format == "" {
		return "image"
	}
	return format
}

// decodeBytes decodes an image after checking its declared size. A decoder
// panic (a bug in a decoder hit by hostile input) is turned into an error:
// one bad file must not take the whole run down.
func decodeBytes(data []byte, maxPixels int64) (d decoded, err error) {
	defer func() {
		if r := recover(); r != nil {
			d = decoded{}
			err = &ImageError{Reason: fmt.Sprintf("decoder failed: %v", r), Kind: ErrCorrupt}
		}
	}()
	cfg, _, err := decodeConfig(data, maxPixels)
	if err != nil {
		return decoded{}, err
	}
	held := decodeMem.acquire(decodeCost(cfg))
	defer decodeMem.release(held)
	img, format, err := image.Decode(bytes.NewReader(data))
	if err != nil {
		return decoded{}, &ImageError{Reason: fmt.Sprintf("corrupt or truncated %s: %v", orUnknown(format), err), Kind: ErrCorrupt, Err: err}
	}
	b := img.Bounds()
	if b.Dx() <= 0 || b.Dy() <= 0 || int64(b.Dx())*int64(b.Dy()) > maxPixels {
		return decoded{}, &ImageError{Reason: fmt.Sprintf("%s decoded to a bad size %dx%d", format, b.Dx(), b.Dy()), Kind: ErrCorrupt}
	}
	d = decoded{img: opaqueRGB(img), orient: 1, format: format}
	if held >= bigDecode {
		// The decoder's buffer is garbage now; return it to the OS before the next large
		// decode instead of leaving it to a GC that GOGC may put off for gigabytes.
		img = nil
		debug.FreeOSMemory()
	}
	if format == "jpeg" {
		d.orient = jpegOrientation(data)
	}
	return d, nil
}

// bigDecode is the decode cost from which decodeBytes hands the decoder's buffer back to the
// OS at once (a forced GC, milliseconds, against seconds for decoding such an image).
const bigDecode = 64 << 20

// decodeCost is the most memory that decoding an image of this header and converting it
// with opaqueRGB hold at once: the decoder's pixel buffer plus the converted copy.
func decodeCost(cfg image.Config) int64 {
	var perPixel int64
	switch cfg.ColorModel {
	case color.GrayModel:
		perPixel = 1
	case color.Gray16Model:
		perPixel = 2 + 1
	case color.YCbCrModel:
		perPixel = 3
	case color.NYCbCrAModel:
		perPixel = 4
	case color.RGBAModel, color.NRGBAModel, color.CMYKModel:
		perPixel = 4 + 4
	default: // 16-bit RGB(A), paletted, anything else: the widest case
		perPixel = 8 + 4
	}
	return int64(cfg.Width) * int64(cfg.Height) * perPixel
}

// decodeFile reads and decodes one file; errors carry the path.
func decodeFile(path string, maxPixels, maxBytes int64) (decoded, error) {
	data, err := readImageFile(path, maxBytes)
	if err != nil {
		return decoded{}, err
	}
	d, err := decodeBytes(data, maxPixels)
	if err != nil {
		var ie *ImageError
		if errors.As(err, &ie) {
			ie.Path = path
		}
		return decoded{}, err
	}
	return d, nil
}

// opaqueRGB converts any decoded image into an opaque image whose colours
// are the straight RGB values: gray and YCbCr pass through (draw has fast
// paths for them), everything else becomes *image.RGBA with alpha dropped.
func opaqueRGB(img image.Image) image.Image {
	switch m := img.(type) {
	case *image.YCbCr:
		return m
	case *image.NYCbCrA:
		return &m.YCbCr
	case *image.Gray:
		return m
	case *image.Gray16:
		g := image.NewGray(m.Rect)
		for y := m.Rect.Min.Y; y < m.Rect.Max.Y; y++ {
			for x := m.Rect.Min.X; x < m.Rect.Max.X; x++ {
				g.Pix[g.PixOffset(x, y)] = m.Pix[m.PixOffset(x, y)] // high byte
			}
		}
		return g
	case *image.RGBA:
		if m.Opaque() {
			return m
		}
		out := image.NewRGBA(m.Rect)
		for y := m.Rect.Min.Y; y < m.Rect.Max.Y; y++ {
			for x := m.Rect.Min.X; x < m.Rect.Max.X; x++ {
				i, o := m.PixOffset(x, y), out.PixOffset(x, y)
				a := uint32(m.Pix[i+3])
				for c := 0; c < 3; c++ {
					if a != 0 {
						out.Pix[o+c] = uint8(min(255, (uint32(m.Pix[i+c])*255+a/2)/a))
					}
				}
				out.Pix[o+3] = 255
			}
		}
		return out
	case *image.NRGBA:
		out := image.NewRGBA(m.Rect)
		for y := m.Rect.Min.Y; y < m.Rect.Max.Y; y++ {
			i, o := m.PixOffset(m.Rect.Min.X, y), out.PixOffset(m.Rect.Min.X, y)
			for x := m.Rect.Min.X; x < m.Rect.Max.X; x++ {
				out.Pix[o], out.Pix[o+1], out.Pix[o+2], out.Pix[o+3] = m.Pix[i], m.Pix[i+1], m.Pix[i+2], 255
				i, o = i+4, o+4
			}
		}
		return out
	case *image.NRGBA64:
		out := image.NewRGBA(m.Rect)
		for y := m.Rect.Min.Y; y < m.Rect.Max.Y; y++ {
			for x := m.Rect.Min.X; x < m.Rect.Max.X; x++ {
				i, o := m.PixOffset(x, y), out.PixOffset(x, y)
				out.Pix[o], out.Pix[o+1], out.Pix[o+2], out.Pix[o+3] = m.Pix[i], m.Pix[i+2], m.Pix[i+4], 255
			}
		}
		return out
	case *image.Paletted:
		var lut [256][3]uint8
		for k, c := range m.Palette {
			if k >= len(lut) {
				break
			}
			n := color.NRGBAModel.Convert(c).(color.NRGBA)
			lut[k] = [3]uint8{n.R, n.G, n.B}
		}
		out := image.NewRGBA(m.Rect)
		for y := m.Rect.Min.Y; y < m.Rect.Max.Y; y++ {
			for x := m.Rect.Min.X; x < m.Rect.Max.X; x++ {
				p := lut[m.Pix[m.PixOffset(x, y)]]
				o := out.PixOffset(x, y)
				out.Pix[o], out.Pix[o+1], out.Pix[o+2], out.Pix[o+3] = p[0], p[1], p[2], 255
			}
		}
		return out
	case *image.CMYK:
		out := image.NewRGBA(m.Rect)
		for y := m.Rect.Min.Y; y < m.Rect.Max.Y; y++ {
			for x := m.Rect.Min.X; x < m.Rect.Max.X; x++ {
				i, o := m.PixOffset(x, y), out.PixOffset(x, y)
				r, g, b := color.CMYKToRGB(m.Pix[i], m.Pix[i+1], m.Pix[i+2], m.Pix[i+3])
				out.Pix[o], out.Pix[o+1], out.Pix[o+2], out.Pix[o+3] = r, g, b, 255
			}
		}
		return out
	default:
		b := img.Bounds()
		out := image.NewRGBA(b)
		for y := b.Min.Y; y < b.Max.Y; y++ {
			for x := b.Min.X; x < b.Max.X; x++ {
				n := color.NRGBA64Model.Convert(img.At(x, y)).(color.NRGBA64)
				o := out.PixOffset(x, y)
				out.Pix[o], out.Pix[o+1], out.Pix[o+2], out.Pix[o+3] = uint8(n.R>>8), uint8(n.G>>8), uint8(n.B>>8), 255
			}
		}
		return out
	}
}

// jpegOrientation returns the EXIF orientation (1..8) of a JPEG, or 1 when
// it has none or the metadata is malformed.
func jpegOrientation(b []byte) int {
	if len(b) < 4 || b[0] != 0xFF || b[1] != 0xD8 {
		return 1
	}
	i := 2
	for i+4 <= len(b) {
		if b[i] != 0xFF {
			return 1
		}
		m := b[i+1]
		switch {
		case m == 0xFF: // fill byte
			i++
			continue
		case m == 0x01 || (m >= 0xD0 && m <= 0xD8): // markers without a length
			i += 2
			continue
		case m == 0xDA || m == 0xD9: // start of scan, end of image: no more metadata
			return 1
		}
		n := int(b[i+2])<<8 | int(b[i+3])
		if n < 2 || i+2+n > len(b) {
			return 1
		}
		seg := b[i+4 : i+2+n]
		if m == 0xE1 && len(seg) >= 6 && string(seg[:6]) == "Exif\x00\x00" {
			if o := exifOrientation(seg[6:]); o != 0 {
				return o
			}
		}
		i += 2 + n
	}
	return 1
}

// exifOrientation reads tag 0x0112 of IFD0 of a TIFF-structured EXIF block;
// it returns 0 when absent or invalid.
func exifOrientation(t []byte) int {
	if len(t) < 8 {
		return 0
	}
	var bo binary.ByteOrder
	switch string(t[:2]) {
	case "II":
		bo = binary.LittleEndian
	case "MM":
		bo = binary.BigEndian
	default:
		return 0
	}
	if bo.Uint16(t[2:]) != 42 {
		return 0
	}
	off := uint64(bo.Uint32(t[4:]))
	if off+2 > uint64(len(t)) {
		return 0
	}
	n := int(bo.Uint16(t[off:]))
	p := int(off) + 2
	for k := 0; k < n; k++ {
		e := p + 12*k
		if e+12 > len(t) {
			return 0
		}
		if bo.Uint16(t[e:]) != 0x0112 {
			continue
		}
		var v int
		switch bo.Uint16(t[e+2:]) {
		case 3: // SHORT
			v = int(bo.Uint16(t[e+8:]))
		case 4: // LONG
			v = int(bo.Uint32(t[e+8:]))
		default:
			return 0
		}
		if v >= 1 && v <= 8 {
			return v
		}
		return 0
	}
	return 0
}
