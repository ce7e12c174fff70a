// routes: net/http servers whose registered patterns wirespan reads from memory (tests/go_routes.rs).
// Each server listens on loopback; one line per server, "NAME %p", gives its *http.Server; then
// "ready". It runs until killed.
package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
)

func ok(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") }

// logging wraps a handler the way most middleware does: a HandlerFunc closure over the next one.
func logging(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(os.Stderr, r.Method, r.URL.Path)
		next.ServeHTTP(w, r)
	})
}

func serve(name string, srv *http.Server) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	go srv.Serve(l)
	fmt.Printf("%s %p\n", name, srv)
}

func main() {
	mux := http.NewServeMux()
	for _, p := range []string{
		"/items/{id}", "/files/{path...}", "GET /hello/{name}", "POST /hello/{name}",
		"/items/special", "example.com/static/", "/{$}", "/docs/",
	} {
		mux.HandleFunc(p, ok)
	}
	serve("mux", &http.Server{Handler: mux})

	http.HandleFunc("/default/{id}", ok)
	http.HandleFunc("POST /default/submit", ok)
	serve("default", &http.Server{})

	// More than eight literals under one node: the mux keeps that node's children in a Go map.
	big := http.NewServeMux()
	for i := 0; i < 12; i++ {
		big.HandleFunc(fmt.Sprintf("GET /r%d/{id}", i), ok)
	}
	serve("big", &http.Server{Handler: big})

	// Middlewares in front of the mux, as programs write them: a closure that calls the mux
	// it captured, and a logging middleware that wraps any http.Handler.
	wrapped := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { mux.ServeHTTP(w, r) })
	serve("wrapped", &http.Server{Handler: wrapped})
	serve("middleware", &http.Server{Handler: logging(logging(mux))})

	// A handler that routes by itself: no table to read.
	serve("opaque", &http.Server{Handler: http.HandlerFunc(ok)})

	fmt.Println("ready")
	select {}
}
