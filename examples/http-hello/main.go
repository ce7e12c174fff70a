// http-hello: a net/http server whose handler calls another endpoint through a keep-alive
// client, from a grandchild goroutine. wirespan's Go tests read its layout (build info, function
// addresses, return instructions); later steps trace it end to end.
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
)

func main() {
	addr := flag.String("listen", "127.0.0.1:0", "address to serve on")
	flag.Parse()
	client := &http.Client{}
	mux := http.NewServeMux()
	mux.HandleFunc("/hello", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello %s\n", r.URL.Query().Get("name"))
	})
	mux.HandleFunc("/chain", func(w http.ResponseWriter, r *http.Request) {
		// The outbound call happens two goroutines below the handler's.
		result := make(chan string, 1)
		go func() {
			go func() {
				resp, err := client.Get("http://" + r.Host + "/hello?name=grandchild")
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
	listener, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Fprintln(os.Stdout, listener.Addr().String())
	log.Fatal(http.Serve(listener, mux))
}
