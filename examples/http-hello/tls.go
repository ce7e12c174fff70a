package main

// HTTPS: with -tls-cert and -tls-key the server speaks TLS (net/http then offers HTTP/2 by
// ALPN, as every Go HTTPS server does); with -tls-ca its outbound calls go to https:// and trust
// that CA (the default Transport tries HTTP/2 too). wirespan's TLS tests run it this way.

import (
	"crypto/tls"
	"crypto/x509"
	"log"
	"net/http"
	"os"
)

// scheme is what outbound calls use: "https" once -tls-ca is given.
var scheme = "http"

// clientTransport is the Transport of every outbound call.
var clientTransport http.RoundTripper = http.DefaultTransport

// setUpClientTLS makes outbound calls HTTPS, trusting the PEM certificates in caFile.
func setUpClientTLS(caFile string) {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		log.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		log.Fatalf("%s: no PEM certificate", caFile)
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.TLSClientConfig = &tls.Config{RootCAs: pool}
	transport.ForceAttemptHTTP2 = true
	clientTransport = transport
	scheme = "https"
}
