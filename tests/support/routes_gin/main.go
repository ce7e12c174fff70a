// routes_gin: a gin engine whose route tree wirespan reads from memory (tests/go_routes.rs).
// Prints "gin %p" (its *http.Server), then "ready"; runs until killed.
package main

import (
	"fmt"
	"net"
	"net/http"
	"os"

	"github.com/gin-gonic/gin"
)

func main() {
	gin.SetMode(gin.ReleaseMode)
	router := gin.New()
	ok := func(c *gin.Context) { c.String(http.StatusOK, "ok") }
	router.GET("/users/:id", ok)
	router.GET("/users/:id/cart", ok)
	router.GET("/users/new", ok)
	router.POST("/users", ok)
	router.GET("/static/*path", ok)
	router.GET("/", ok)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	srv := &http.Server{Handler: router}
	go srv.Serve(l)
	fmt.Printf("gin %p\n", srv)
	fmt.Println("ready")
	select {}
}
