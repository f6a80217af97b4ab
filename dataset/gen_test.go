package dataset

// Generators of the test images: the committed corpus under
// testdata/broken/ and testdata/fuzz/FuzzDecode/ is their output
// (TestCorpusUpToDate checks it; run `go test -run TestCorpusUpToDate
// ./dataset/ -update` to rewrite it).

import (
	"bytes"
	"encoding/binary"
	"flag"
	"fmt"
	"image"
	"image/color"
	"image/color/palette"
	"image/gif"
	"image/jpeg"
	"image/png"

	"golang.org/x/image/bmp"

	"github.com/fwbench/fwbench/internal/testfixture"
)

var update = flag.Bool("update", false, "rewrite the generated files under testdata/")

// quadrants returns a w×h image whose four quadrants are red, green, blue
// and white (top-left, top-right, bottom-left, bottom-right).
func quadrants(w, h int) *image.RGBA {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	cols := [4]color.RGBA{{255, 0, 0, 255}, {0, 255, 0, 255}, {0, 0, 255, 255}, {255, 255, 255, 255}}
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			q := 0
			if x >= w/2 {
				q++
			}
			if y >= h/2 {
				q += 2
			}
			img.SetRGBA(x, y, cols[q])
		}
	}
	return img
}

func solid(w, h int, c color.RGBA) *image.RGBA {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for i := 0; i < len(img.Pix); i += 4 {
		img.Pix[i], img.Pix[i+1], img.Pix[i+2], img.Pix[i+3] = c.R, c.G, c.B, c.A
	}
	return img
}

func encPNG(img image.Image) []byte {
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		panic(err) // test helper: a failure here is a bug in the test
	}
	return b.Bytes()
}

func encJPEG(img image.Image, q int) []byte {
	var b bytes.Buffer
	if err := jpeg.Encode(&b, img, &jpeg.Options{Quality: q}); err != nil {
		panic(err)
	}
	return b.Bytes()
}

func encBMP(img image.Image) []byte {
	var b bytes.Buffer
	if err := bmp.Encode(&b, img); err != nil {
		panic(err)
	}
	return b.Bytes()
}

// withEXIF inserts an APP1 Exif segment holding only the orientation tag
// right after the SOI marker of a JPEG.
func withEXIF(jpg []byte, orientation int, bigEndian bool) []byte {
	var bo binary.AppendByteOrder = binary.LittleEndian
	tiff := []byte("II*\x00")
	if bigEndian {
		bo = binary.BigEndian
		tiff = []byte("MM\x00*")
	}
	tiff = bo.AppendUint32(tiff, 8)      // IFD0 offset
	tiff = bo.AppendUint16(tiff, 1)      // one entry
	tiff = bo.AppendUint16(tiff, 0x0112) // Orientation
	tiff = bo.AppendUint16(tiff, 3)      // SHORT
	tiff = bo.AppendUint32(tiff, 1)      // count
	tiff = bo.AppendUint16(tiff, uint16(orientation))
	tiff = append(tiff, 0, 0)       // value padding
	tiff = bo.AppendUint32(tiff, 0) // no next IFD
	seg := append([]byte("Exif\x00\x00"), tiff...)
	out := append([]byte{}, jpg[:2]...)
	out = append(out, 0xFF, 0xE1, byte((len(seg)+2)>>8), byte(len(seg)+2))
	out = append(out, seg...)
	return append(out, jpg[2:]...)
}

// cmykJPEG writes a baseline JPEG with four components and an Adobe APP14
// marker (transform 0: plain CMYK, stored inverted as Adobe does). Every
// 8×8 block is flat: blocks[by][bx] is its (C, M, Y, K). Only DC
// coefficients are coded, with the standard luminance DC Huffman table and
// a one-code AC table holding EOB; the quantisation table is all ones.
func cmykJPEG(blocks [][][4]uint8) []byte {
	bh, bw := len(blocks), len(blocks[0])
	var o bytes.Buffer
	seg := func(marker byte, body []byte) {
		o.Write([]byte{0xFF, marker, byte((len(body) + 2) >> 8), byte(len(body) + 2)})
		o.Write(body)
	}
	o.Write([]byte{0xFF, 0xD8})
	seg(0xEE, []byte{'A', 'd', 'o', 'b', 'e', 0, 100, 0, 0, 0, 0, 0})
	q := []byte{0x00}
	for i := 0; i < 64; i++ {
		q = append(q, 1)
	}
	seg(0xDB, q)
	sof := []byte{8, byte(bh * 8 >> 8), byte(bh * 8), byte(bw * 8 >> 8), byte(bw * 8), 4}
	for c := 1; c <= 4; c++ {
		sof = append(sof, byte(c), 0x11, 0)
	}
	seg(0xC0, sof)
	dcBits := []byte{0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0}
	dht := append([]byte{0x00}, dcBits...)
	dht = append(dht, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11)
	seg(0xC4, dht)
	acBits := make([]byte, 16)
	acBits[0] = 1
	dht = append([]byte{0x10}, acBits...)
	dht = append(dht, 0x00)
	seg(0xC4, dht)
	sos := []byte{4}
	for c := 1; c <= 4; c++ {
		sos = append(sos, byte(c), 0x00)
	}
	sos = append(sos, 0, 63, 0)
	seg(0xDA, sos)

	// Standard DC luminance codes for categories 0..11 (ITU T.81 K.3).
	dcCode := [12]struct{ code, n uint32 }{
		{0b00, 2}, {0b010, 3}, {0b011, 3}, {0b100, 3}, {0b101, 3}, {0b110, 3},
		{0b1110, 4}, {0b11110, 5}, {0b111110, 6}, {0b1111110, 7}, {0b11111110, 8}, {0b111111110, 9},
	}
	var acc uint32
	var nacc uint
	put := func(v uint32, n uint) {
		for i := int(n) - 1; i >= 0; i-- {
			acc = acc<<1 | (v>>uint(i))&1
			nacc++
			if nacc == 8 {
				o.WriteByte(byte(acc))
				if byte(acc) == 0xFF {
					o.WriteByte(0)
				}
				acc, nacc = 0, 0
			}
		}
	}
	var pred [4]int
	for by := 0; by < bh; by++ {
		for bx := 0; bx < bw; bx++ {
			for c := 0; c < 4; c++ {
				level := 255 - int(blocks[by][bx][c]) // Adobe stores CMYK inverted
				dc := 8 * (level - 128)
				diff := dc - pred[c]
				pred[c] = dc
				s, mag := 0, diff
				if mag < 0 {
					mag = -mag
				}
				for mag > 0 {
					s++
					mag >>= 1
				}
				put(dcCode[s].code, uint(dcCode[s].n))
				if s > 0 {
					v := diff
					if v < 0 {
						v += 1<<s - 1
					}
					put(uint32(v), uint(s))
				}
				put(0, 1) // EOB
			}
		}
	}
	for nacc != 0 {
		put(1, 1)
	}
	o.Write([]byte{0xFF, 0xD9})
	return o.Bytes()
}

// losslessWebP writes a VP8L (lossless WebP) w×h image of one colour: no
// transforms, no colour cache, and five one-symbol prefix codes, so the
// pixels take no bits.
func losslessWebP(w, h int, c color.NRGBA) []byte {
	var bits []byte
	var acc uint64
	var n uint
	put := func(v uint64, k uint) {
		acc |= v << n
		n += k
		for n >= 8 {
			bits = append(bits, byte(acc))
			acc >>= 8
			n -= 8
		}
	}
	put(0x2f, 8)
	put(uint64(w-1), 14)
	put(uint64(h-1), 14)
	put(0, 1) // alpha hint
	put(0, 3) // version
	put(0, 1) // no transform
	put(0, 1) // no colour cache
	put(0, 1) // no meta prefix codes
	for _, sym := range []uint8{c.G, c.R, c.B, c.A, 0} {
		put(1, 1) // simple code
		put(0, 1) // one symbol
		put(1, 1) // 8-bit symbol
		put(uint64(sym), 8)
	}
	if n > 0 {
		bits = append(bits, byte(acc))
	}
	chunk := append([]byte("VP8L"), binary.LittleEndian.AppendUint32(nil, uint32(len(bits)))...)
	chunk = append(chunk, bits...)
	if len(bits)%2 == 1 {
		chunk = append(chunk, 0)
	}
	out := append([]byte("RIFF"), binary.LittleEndian.AppendUint32(nil, uint32(4+len(chunk)))...)
	out = append(out, "WEBP"...)
	return append(out, chunk...)
}

// animatedGIF has two frames: red, then blue.
func animatedGIF() []byte {
	pal := color.Palette{color.RGBA{255, 0, 0, 255}, color.RGBA{0, 0, 255, 255}}
	f1 := image.NewPaletted(image.Rect(0, 0, 16, 16), pal)
	f2 := image.NewPaletted(image.Rect(0, 0, 16, 16), pal)
	for i := range f2.Pix {
		f2.Pix[i] = 1
	}
	var b bytes.Buffer
	if err := gif.EncodeAll(&b, &gif.GIF{Image: []*image.Paletted{f1, f2}, Delay: []int{10, 10}}); err != nil {
		panic(err)
	}
	return b.Bytes()
}

// gray16PNG is a 16-bit gray PNG of value 0x8040 everywhere.
func gray16PNG() []byte {
	g := image.NewGray16(image.Rect(0, 0, 16, 16))
	for i := 0; i < len(g.Pix); i += 2 {
		g.Pix[i], g.Pix[i+1] = 0x80, 0x40
	}
	return encPNG(g)
}

// rgba16PNG is a 16-bit RGBA PNG, (0x1234, 0x5678, 0x9abc) at alpha 0x4000.
func rgba16PNG() []byte {
	m := image.NewNRGBA64(image.Rect(0, 0, 16, 16))
	for y := 0; y < 16; y++ {
		for x := 0; x < 16; x++ {
			m.SetNRGBA64(x, y, color.NRGBA64{0x1234, 0x5678, 0x9abc, 0x4000})
		}
	}
	return encPNG(m)
}

// alphaPNG is an 8-bit RGBA PNG: colour (200, 100, 50) at alpha 10.
func alphaPNG() []byte {
	m := image.NewNRGBA(image.Rect(0, 0, 16, 16))
	for i := 0; i < len(m.Pix); i += 4 {
		m.Pix[i], m.Pix[i+1], m.Pix[i+2], m.Pix[i+3] = 200, 100, 50, 10
	}
	return encPNG(m)
}

// palettedPNG uses the Plan 9 palette; every pixel is index 200.
func palettedPNG() []byte {
	m := image.NewPaletted(image.Rect(0, 0, 16, 16), palette.Plan9)
	for i := range m.Pix {
		m.Pix[i] = 200
	}
	return encPNG(m)
}

func grayJPEG() []byte {
	g := image.NewGray(image.Rect(0, 0, 16, 16))
	for i := range g.Pix {
		g.Pix[i] = 77
	}
	return encJPEG(g, 100)
}

// corpusFiles is the committed testdata: name → bytes.
func corpusFiles() map[string][]byte {
	good := encJPEG(SynthImage(0, 0, 48, 1), 90) // cut inside the entropy-coded scan
	files := map[string][]byte{
		"broken/truncated.jpg": good[:len(good)*3/4],
		"broken/zero.jpg":      {},
		"broken/text.jpg":      []byte("this is a text file, not a JPEG\n"),
		"broken/huge.png":      testfixture.PNGHeader(100000, 100000, 8),
		"broken/badheader.png": append([]byte("\x89PNG\r\n\x1a\n"), bytes.Repeat([]byte{0x42}, 40)...),
		"broken/truncated.png": encPNG(quadrants(32, 32))[:60],
		"broken/cmyk.jpg":      cmykJPEG([][][4]uint8{{{0, 255, 255, 0}, {255, 0, 255, 0}}, {{255, 255, 0, 0}, {0, 0, 0, 0}}}),
		"broken/gray16.png":    gray16PNG(),
		"broken/rgba16.png":    rgba16PNG(),
		"broken/animated.gif":  animatedGIF(),
		"broken/notes.txt":     []byte("a stray note\n"),
	}
	// Fuzz seeds: one small valid file per format and the broken ones.
	seeds := map[string][]byte{
		"jpeg":      encJPEG(quadrants(8, 8), 75),
		"jpeg_exif": withEXIF(encJPEG(quadrants(8, 8), 75), 6, true),
		"png":       encPNG(quadrants(8, 8)),
		"gif":       animatedGIF(),
		"bmp":       encBMP(quadrants(4, 4)),
		"webp":      losslessWebP(4, 4, color.NRGBA{10, 20, 30, 255}),
		"cmyk":      files["broken/cmyk.jpg"],
		"gray16":    gray16PNG(),
		"huge":      files["broken/huge.png"],
		"truncated": files["broken/truncated.jpg"],
		"text":      files["broken/text.jpg"],
	}
	for name, data := range seeds {
		files["fuzz/FuzzDecode/"+name] = []byte(fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", data))
	}
	return files
}
