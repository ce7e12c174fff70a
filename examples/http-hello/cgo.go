//go:build cgotls

// With -tags cgotls, http-hello has a real cgo dependency: a C function with a __thread
// counter, called by every /hello. Its TLS variable shares the executable's TLS block with Go's
// goroutine slot (runtime.tlsg), which moves that slot away from -8 from the thread pointer:
// wirespan's tests check that goroutine ids still come out right.
package main

/*
static __thread unsigned long hello_calls;
static unsigned long count_hello(void) { return ++hello_calls; }
*/
import "C"

func countHello() uint64 { return uint64(C.count_hello()) }
