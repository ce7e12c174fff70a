// http-hello: a net/http server whose handlers call out through a keep-alive client: /chain
// from a grandchild goroutine, /fanout twice in parallel from child goroutines (to --backend,
// another http-hello, or itself), /work through one long-lived worker goroutine, /call once to
// ?target=host:port[&timeout=300ms] (502 when the call fails); /items/{id} and
// GET /files/{path...} answer with their wildcards; /line talks a made-up line protocol to
// ?target=host:port (?lines=N). -tls (self-signed) or -tls-cert/-tls-key
// and -tls-ca make it HTTPS (tls.go). -set-cookie-file makes /hello answer with a Set-Cookie
// header (a response credential, which the privacy tests look for in wirespan's outputs).
// wirespan's Go tests trace it end to end.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"
)

// workJob is one request's call handed to the /work worker.
type workJob struct {
	id   string
	done chan string
}

func main() {
	addr := flag.String("listen", "127.0.0.1:0", "address to serve on")
	backend := flag.String("backend", "", "host:port that /fanout calls (default: this server)")
	selfSignedTLS := flag.Bool("tls", false, "serve HTTPS with a self-signed certificate made at start")
	certFile := flag.String("tls-cert", "", "serve HTTPS with this PEM certificate (and -tls-key)")
	keyFile := flag.String("tls-key", "", "the PEM private key of -tls-cert")
	caFile := flag.String("tls-ca", "", "call out over HTTPS, trusting this PEM CA certificate")
	flag.BoolVar(&clientHTTP1, "tls-http1", false, "call out over HTTPS with HTTP/1.1 (not HTTP/2)")
	// A file, not the value itself: a command line is visible to every user of the machine.
	setCookieFile := flag.String("set-cookie-file", "", "answer /hello with a Set-Cookie header of this file's contents")
	flag.Parse()
	setCookie := ""
	if *setCookieFile != "" {
		contents, err := os.ReadFile(*setCookieFile)
		if err != nil {
			log.Fatal(err)
		}
		setCookie = strings.TrimSpace(string(contents))
	}
	if *caFile != "" {
		setUpClientTLS(*caFile)
	}
	if *selfSignedTLS {
		setUpSelfSigned()
	}
	client := &http.Client{Transport: clientTransport}
	mux := http.NewServeMux()
	mux.HandleFunc("/hello", func(w http.ResponseWriter, r *http.Request) {
		countHello()
		// Read what a POST sent before answering: over HTTP/2 a body left unread makes the
		// server reset the stream after its answer, and curl may report that reset instead
		// of the answer.
		_, _ = io.Copy(io.Discard, r.Body)
		if setCookie != "" {
			w.Header().Set("Set-Cookie", setCookie)
		}
		fmt.Fprintf(w, "hello %s\n", r.URL.Query().Get("name"))
	})
	mux.HandleFunc("/chain", func(w http.ResponseWriter, r *http.Request) {
		// The outbound call happens two goroutines below the handler's.
		result := make(chan string, 1)
		go func() {
			go func() {
				resp, err := client.Get(scheme + "://" + r.Host + "/hello?name=grandchild")
				if err != nil {
					result <- err.Error()
					return
				}
				defer resp.Body.Close()
				body, _ := io.ReadAll(resp.Body)
				result <- string(body)
			}()
		}()
		fmt.Fprint(w, <-result)
	})
	mux.HandleFunc("/call", func(w http.ResponseWriter, r *http.Request) {
		// One outbound call to ?target=host:port (a failing one in the failed-call tests), given
		// up after ?timeout= (a Go duration) if set: its error, if any, is answered as 502.
		caller := client
		if timeout, err := time.ParseDuration(r.URL.Query().Get("timeout")); err == nil {
			caller = &http.Client{Transport: clientTransport, Timeout: timeout}
		}
		resp, err := caller.Get(scheme + "://" + r.URL.Query().Get("target") + "/hello?name=call")
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		fmt.Fprint(w, string(body))
	})
	// /work hands the call to one long-lived worker goroutine, started lazily by the first
	// request and fed over a channel by every later one (a common shape: a pool or batcher).
	// Only the first request's call can be tied to its request passively; the tracer must not
	// put the worker's later calls into the first request's trace.
	var startWorker sync.Once
	jobs := make(chan workJob)
	mux.HandleFunc("/work", func(w http.ResponseWriter, r *http.Request) {
		target := r.Host
		startWorker.Do(func() {
			go func() {
				for job := range jobs {
					resp, err := client.Get(fmt.Sprintf("%s://%s/hello?name=worker&id=%s", scheme, target, job.id))
					if err != nil {
						job.done <- err.Error()
						continue
					}
					body, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					job.done <- string(body)
				}
			}()
		})
		job := workJob{id: r.URL.Query().Get("id"), done: make(chan string, 1)}
		jobs <- job
		fmt.Fprint(w, <-job.done)
	})
	mux.HandleFunc("/fanout", func(w http.ResponseWriter, r *http.Request) {
		// Two outbound calls at once, each from a child goroutine of the handler.
		target := *backend
		if target == "" {
			target = r.Host
		}
		// The request's id travels on, so a test can tell which request each call served.
		id := r.URL.Query().Get("id")
		var wg sync.WaitGroup
		bodies := make([]string, 2)
		for i := range bodies {
			wg.Add(1)
			go func() {
				defer wg.Done()
				resp, err := client.Get(fmt.Sprintf("%s://%s/hello?name=fan%d&id=%s", scheme, target, i, id))
				if err != nil {
					bodies[i] = err.Error()
					return
				}
				defer resp.Body.Close()
				body, _ := io.ReadAll(resp.Body)
				bodies[i] = string(body)
			}()
		}
		wg.Wait()
		fmt.Fprint(w, bodies[0], bodies[1])
	})
	// Routes with wildcards (Go 1.22 patterns): their spans are named by the pattern, not by
	// the ids in the path. The handlers read the path itself, not r.PathValue, so that the
	// program still builds with older Go (a test builds it with Go 1.19, where these
	// patterns are plain literal paths).
	mux.HandleFunc("/line", func(w http.ResponseWriter, r *http.Request) {
		// A made-up line protocol (no decoder knows it): ?lines=N lines to ?target=host:port
		// on one connection, each answered by one line; the answers are the response.
		conn, err := net.DialTimeout("tcp", r.URL.Query().Get("target"), 2*time.Second)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer conn.Close()
		lines := 1
		fmt.Sscan(r.URL.Query().Get("lines"), &lines)
		reader := bufio.NewReader(conn)
		for i := 0; i < lines; i++ {
			if _, err := fmt.Fprintf(conn, "PING %d\n", i); err != nil {
				http.Error(w, err.Error(), http.StatusBadGateway)
				return
			}
			answer, err := reader.ReadString('\n')
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadGateway)
				return
			}
			fmt.Fprint(w, answer)
		}
	})
	mux.HandleFunc("/items/{id}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "item %s\n", strings.TrimPrefix(r.URL.Path, "/items/"))
	})
	mux.HandleFunc("GET /files/{path...}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "file %s\n", strings.TrimPrefix(r.URL.Path, "/files/"))
	})
	listener, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Fprintln(os.Stdout, listener.Addr().String())
	if *certFile != "" {
		log.Fatal(http.ServeTLS(listener, mux, *certFile, *keyFile))
	}
	if *selfSignedTLS {
		log.Fatal(serveTLS(listener, mux))
	}
	log.Fatal(http.Serve(listener, mux))
}
