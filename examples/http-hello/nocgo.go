//go:build !cgotls

package main

// countHello has a cgo version (cgo.go, -tags cgotls); without it there is nothing to count.
func countHello() uint64 { return 0 }
