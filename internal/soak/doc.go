// Package soak holds the long-run test: 1000 training steps per framework at 32 px while
// sampling RSS and the goroutine count. It runs only with -soak and without -short (it takes
// minutes); otherwise TestSoak reports SKIP:
//
//	. scripts/env.sh && go test -v -run Soak -timeout 30m ./internal/soak/ -args -soak
//
// It needs both native libraries.
package soak
