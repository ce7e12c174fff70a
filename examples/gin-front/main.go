// gin-front: the demo's front end, a gin service. /echo calls the backend's /relay through a
// keep-alive client; /fanout calls it twice at once, each call from a child goroutine;
// /users/:id and /static/*path answer with their parameters. It prints
// its listening address on its first line.
//
//	gin-front [--listen ADDR] --backend HOST:PORT
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"sync"

	"github.com/gin-gonic/gin"
)

func main() {
	addr := flag.String("listen", "127.0.0.1:0", "address to serve on")
	backend := flag.String("backend", "", "host:port of the backend (grpc-echo relay)")
	flag.Parse()
	if *backend == "" {
		fmt.Fprintln(os.Stderr, "gin-front: --backend HOST:PORT is required")
		os.Exit(2)
	}
	gin.SetMode(gin.ReleaseMode)
	// One pooled client: calls reuse keep-alive connections.
	client := &http.Client{}
	call := func(msg string) (string, int) {
		resp, err := client.Get("http://" + *backend + "/relay?msg=" + url.QueryEscape(msg))
		if err != nil {
			return err.Error(), http.StatusBadGateway
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return string(body), resp.StatusCode
	}
	router := gin.New()
	router.GET("/echo", func(c *gin.Context) {
		body, status := call(c.Query("msg"))
		c.String(status, body)
	})
	router.GET("/fanout", func(c *gin.Context) {
		msg := c.Query("msg")
		var wg sync.WaitGroup
		replies := make([]string, 2)
		for i := range replies {
			wg.Add(1)
			go func() {
				defer wg.Done()
				replies[i], _ = call(fmt.Sprintf("%s-%d", msg, i))
			}()
		}
		wg.Wait()
		c.String(http.StatusOK, "%s\n%s", replies[0], replies[1])
	})
	// Routes with parameters: their spans are named by gin's full path, not by the ids.
	router.GET("/users/:id", func(c *gin.Context) {
		c.String(http.StatusOK, "user %s\n", c.Param("id"))
	})
	router.GET("/static/*path", func(c *gin.Context) {
		c.String(http.StatusOK, "static %s\n", c.Param("path"))
	})
	listener, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(listener.Addr().String())
	log.Fatal(http.Serve(listener, router))
}
