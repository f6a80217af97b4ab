// Package dataset owns everything fwbench trains on before it reaches a
// framework: image trees, IDX files, the synthetic generator, decoding,
// resizing, augmentation, normalisation, splits and batches. TensorFlow and
// PyTorch receive the very same bytes from it, so any difference between
// their results comes from the frameworks, not from the data.
//
// It is pure Go (no cgo, no native library) and imports only the standard
// library and golang.org/x/image.
//
// # Sources
//
// [Open] reads one of:
//
//   - a class-folder tree (the layout of Keras flow_from_directory and
//     torchvision ImageFolder): ROOT/<class>/**/<image>. Classes are the
//     sub-folder names sorted byte-wise, so label i means the same class in
//     both frameworks. JPEG, PNG, GIF (first frame), BMP and WebP are read;
//     gray, paletted, CMYK, 16-bit and alpha images become 8-bit RGB (alpha
//     is dropped, as PIL's convert("RGB") does) and JPEG EXIF orientation
//     is honoured. Without a split, a seeded stratified split sends
//     round(ValSplit*n) images of every class to validation.
//   - a pre-split tree: ROOT/train/<class>/..., ROOT/val/<class>/... (also
//     "valid" or "validation") and optionally ROOT/test/<class>/....
//   - a folder holding MNIST or Fashion-MNIST IDX files, gzipped or raw
//     (train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz],
//     t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz]). Gray is
//     replicated to three channels. IDX sets ship no validation split: as in
//     the Keras examples, the t10k set is both Val and Test.
//
// Open decodes every file once, in parallel, so that a broken file is
// reported by [Dataset.Skipped] (or fails under [OpenOptions.Strict]) before
// training starts instead of shifting batches in the middle of an epoch.
// Declared image sizes are checked with image.DecodeConfig against
// [OpenOptions.MaxPixels] before any pixel is decoded, and decodes in flight
// share one memory budget, [DecodeBudget], charged from the header.
//
// Only regular files are opened (with O_NONBLOCK, and the type checked on the
// opened file): a named pipe, socket, device, folder link, dangling link or
// cycle of links is listed in Skipped with the reason. A class folder may be
// a link, but not to the data set, its split folder or a folder above them,
// and two class folders may not be one folder: those are layout problems. The
// walk stops on cancellation of its context. IDX headers are checked against
// the bytes the file really holds before the data is kept.
//
// [Synthesize] writes a seeded synthetic class-folder tree of procedural
// shapes and textures; [Inspect] summarises a tree; [Crawl] collects images
// from a search endpoint, as the study did.
//
// # Pipeline
//
// For every image a [Loader] does: decode, drop alpha, resize to S×S with
// golang.org/x/image/draw.BiLinear (a tent kernel that is widened when
// shrinking, so it is antialiased), apply the EXIF orientation, optionally
// cache the S×S RGB uint8 result (in memory or on disk), augment with one
// affine warp (bilinear sampling, "nearest" fill, as Keras
// ImageDataGenerator), and normalise into float32 NHWC.
//
// [Loader.Warm] fills the cache before training: it decodes and resizes the
// images once, in index order, so that the steps of every epoch, the first
// included, pay only for augmentation and normalisation. The memory cache
// holds at most [LoaderConfig.CacheBytes] (by default [DefaultCacheBytes]:
// an eighth of the memory, at most 2 GiB); images past the budget are
// decoded and resized each time they are batched. Caching, warming and the
// budget never change a batch's bytes.
//
// Shuffling depends on (Seed, epoch) only and augmentation on (Seed, epoch,
// image index) only, through a documented splitmix64 stream, so batches are
// byte-identical whatever the number of workers, across runs and processes.
// [Batch.Hash] makes that checkable.
//
// # Memory
//
// A [Batch] and its slices belong to the caller once [Iter.Next] returns
// it; the loader never writes to them again. A loader holds at most
// Prefetch batches ahead of the caller, plus its cache if one is set: a
// memory cache takes at most CacheBytes (S·S·3 bytes per image).
package dataset
