package main

// HTTPS. With -tls the server speaks TLS with a self-signed certificate for localhost and
// 127.0.0.1 made at start (nothing to prepare: `curl -k https://...`), and its calls to
// itself trust it. With -tls-cert and -tls-key it uses those files instead, and with -tls-ca
// its outbound calls trust that CA. net/http then offers HTTP/2 by ALPN, as every Go HTTPS
// server does, and the client Transport tries HTTP/2 too. wirespan's TLS tests and demo run it
// this way.

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"log"
	"math/big"
	"net"
	"net/http"
	"os"
	"time"
)

// scheme is what outbound calls use: "https" once they go over TLS.
var scheme = "http"

// clientTransport is the Transport of every outbound call.
var clientTransport http.RoundTripper = http.DefaultTransport

// clientHTTP1 keeps outbound HTTPS calls on HTTP/1.1 (-tls-http1).
var clientHTTP1 bool

// useClientTLS makes outbound calls HTTPS, trusting the certificates in pool.
func useClientTLS(pool *x509.CertPool) {
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.TLSClientConfig = &tls.Config{RootCAs: pool}
	transport.ForceAttemptHTTP2 = !clientHTTP1
	if clientHTTP1 {
		// A non-nil, empty map turns HTTP/2 off.
		transport.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	}
	clientTransport = transport
	scheme = "https"
}

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
	useClientTLS(pool)
}

// selfCert is the certificate -tls serves with.
var selfCert tls.Certificate

// setUpSelfSigned makes a certificate for localhost and 127.0.0.1, valid for a day, to serve
// with, and makes outbound calls trust it.
func setUpSelfSigned() {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		log.Fatal(err)
	}
	template := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "localhost"},
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, template, template, &key.PublicKey, key)
	if err != nil {
		log.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		log.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	useClientTLS(pool)
	selfCert = tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// serveTLS serves HTTPS on listener with the self-signed certificate.
func serveTLS(listener net.Listener, handler http.Handler) error {
	server := &http.Server{
		Handler:   handler,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{selfCert}},
	}
	return server.ServeTLS(listener, "", "")
}
