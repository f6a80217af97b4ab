package dataset

import (
	"errors"
	"fmt"
)

// Sentinel errors. Use errors.Is to test for them.
var (
	// ErrClosed is returned by calls on a closed Loader or Iter.
	ErrClosed = errors.New("dataset: closed")
	// ErrEmptyFile means a zero-byte file.
	ErrEmptyFile = errors.New("dataset: empty file")
	// ErrNotImage means the bytes are not a recognised image format.
	ErrNotImage = errors.New("dataset: not a recognised image format")
	// ErrTooLarge means a declared image size or a file size is over a limit.
	ErrTooLarge = errors.New("dataset: image too large")
	// ErrCorrupt means the image header was recognised but decoding failed.
	ErrCorrupt = errors.New("dataset: corrupt or truncated image")
	// ErrUnreadable means the file could not be read (permissions, I/O).
	ErrUnreadable = errors.New("dataset: unreadable file")
	// ErrLayout means the tree does not form a usable data set (fewer than
	// two classes, a class without a usable image, an unknown class...).
	ErrLayout = errors.New("dataset: bad layout")
)

// ImageError reports a file that could not be used. Kind is one of the
// sentinel errors above; errors.Is(err, ErrCorrupt) and similar work.
type ImageError struct {
	Path   string
	Reason string // short human-readable reason, as in Skipped.Reason
	Kind   error  // one of ErrEmptyFile, ErrNotImage, ErrTooLarge, ErrCorrupt, ErrUnreadable
	Err    error  // underlying cause, may be nil
}

func (e *ImageError) Error() string {
	if e.Path == "" {
		return "dataset: " + e.Reason
	}
	return fmt.Sprintf("dataset: %s: %s", e.Path, e.Reason)
}

// Unwrap lets errors.Is match both the kind and the cause.
func (e *ImageError) Unwrap() []error {
	if e.Err == nil {
		return []error{e.Kind}
	}
	return []error{e.Kind, e.Err}
}

// Skipped is a file that Open left out, with the reason.
type Skipped struct {
	Path   string `json:"path"`
	Reason string `json:"reason"`
}
