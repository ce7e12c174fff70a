// https_client: a Go program that only calls out (no server): for each line on stdin it GETs
// its argument over a keep-alive client and prints the status and body length, so a test can
// start it before the agent and then drive it. Certificates come from SSL_CERT_FILE, which Go
// reads on Linux. wirespan's TLS tests use it as a client whose TLS only crypto/tls can read.
package main

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"os"
)

func main() {
	fmt.Println("ready")
	client := &http.Client{}
	lines := bufio.NewScanner(os.Stdin)
	for lines.Scan() {
		resp, err := client.Get(os.Args[1])
		if err != nil {
			fmt.Println("error", err)
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		fmt.Println(resp.StatusCode, len(body), resp.Proto)
	}
}
