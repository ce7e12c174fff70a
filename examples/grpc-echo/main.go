// grpc-echo: a grpc-go service with one unary method (Say) and one server-streaming method
// (Count), and a client that calls it. It has no generated code: messages are raw bytes through a
// codec registered under the name "proto", so one source builds against every grpc-go version
// the tests use (GRPC_VERSION picks one through `go get`).
//
//	grpc-echo server [--listen ADDR] [--tls-cert PEM --tls-key PEM]
//	                                          serve; print the address on the first line
//	grpc-echo client --target ADDR [--requests N] [--streams N] [--wait-stdin] [--tls-ca PEM]
//	                 [--metadata-file FILE]
//	grpc-echo relay [--listen ADDR] --target ADDR   a net/http backend: /relay?msg= calls Say,
//	                                                /count?n= reads a Count stream
//	grpc-echo load --target ADDR [--concurrency N] [--duration D] [--rate R]
//	                                                unary Say load for `cargo xtask bench`
//
// The client sends each unary call with a `traceparent` of its own (call i has span id i), and a
// message of "fail" on every fifth call, which the server answers with codes.NotFound. It prints
// one line per outcome to stdout and exits non-zero if anything unexpected came back. With
// --metadata-file, every unary call also carries the file's `key: value` lines as metadata
// (credentials, for the privacy tests: from a file, as a command line is visible to all).
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// rawCodec moves []byte messages as they are.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) {
	b, ok := v.(*[]byte)
	if !ok {
		return nil, fmt.Errorf("rawCodec: %T is not *[]byte", v)
	}
	return *b, nil
}

func (rawCodec) Unmarshal(data []byte, v any) error {
	b, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("rawCodec: %T is not *[]byte", v)
	}
	*b = append((*b)[:0], data...)
	return nil
}

func (rawCodec) Name() string { return "proto" }

const service = "wirespan.echo.Echo"

func say(_ any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
	var in []byte
	if err := dec(&in); err != nil {
		return nil, err
	}
	if string(in) == "fail" {
		return nil, status.Error(codes.NotFound, "asked to fail")
	}
	// Hand the work to a grandchild goroutine, as real handlers do with fan-out.
	out := make(chan []byte, 1)
	go func() {
		go func() { out <- append([]byte("echo "), in...) }()
	}()
	reply := <-out
	return &reply, nil
}

func count(_ any, stream grpc.ServerStream) error {
	var in []byte
	if err := stream.RecvMsg(&in); err != nil {
		return err
	}
	n, err := strconv.Atoi(string(in))
	if err != nil {
		return status.Error(codes.InvalidArgument, "not a number")
	}
	for i := 1; i <= n; i++ {
		msg := []byte(strconv.Itoa(i))
		if err := stream.SendMsg(&msg); err != nil {
			return err
		}
	}
	return nil
}

var serviceDesc = grpc.ServiceDesc{
	ServiceName: service,
	HandlerType: (*any)(nil),
	Methods:     []grpc.MethodDesc{{MethodName: "Say", Handler: say}},
	Streams:     []grpc.StreamDesc{{StreamName: "Count", Handler: count, ServerStreams: true}},
}

func serve(args []string) {
	flags := flag.NewFlagSet("server", flag.ExitOnError)
	addr := flags.String("listen", "127.0.0.1:0", "address to serve on")
	certFile := flags.String("tls-cert", "", "serve over TLS with this PEM certificate (and --tls-key)")
	keyFile := flags.String("tls-key", "", "the PEM private key of --tls-cert")
	_ = flags.Parse(args)
	listener, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	var options []grpc.ServerOption
	if *certFile != "" {
		creds, err := credentials.NewServerTLSFromFile(*certFile, *keyFile)
		if err != nil {
			log.Fatal(err)
		}
		options = append(options, grpc.Creds(creds))
	}
	server := grpc.NewServer(options...)
	server.RegisterService(&serviceDesc, struct{}{})
	fmt.Println(listener.Addr().String())
	log.Fatal(server.Serve(listener))
}

// Traceparent of call i: a fixed trace id and span id i, so a test can tell calls apart.
func traceparent(i int) string {
	return fmt.Sprintf("00-0af7651916cd43dd8448eb211c80319c-%016x-01", i+1)
}

func client(args []string) {
	flags := flag.NewFlagSet("client", flag.ExitOnError)
	target := flags.String("target", "", "server address")
	requests := flags.Int("requests", 10, "unary calls to make")
	streams := flags.Int("streams", 2, "server-streaming calls to make")
	waitStdin := flags.Bool("wait-stdin", false, "read a line from stdin before calling (lets a tracer attach first)")
	caFile := flags.String("tls-ca", "", "call over TLS, trusting this PEM CA certificate for localhost")
	metadataFile := flags.String("metadata-file", "", "send this file's `key: value` lines as metadata with every unary call")
	_ = flags.Parse(args)
	extra := readMetadata(*metadataFile)
	if *waitStdin {
		_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
	}
	creds := insecure.NewCredentials()
	if *caFile != "" {
		var err error
		if creds, err = credentials.NewClientTLSFromFile(*caFile, "localhost"); err != nil {
			log.Fatal(err)
		}
	}
	//nolint:staticcheck // grpc.Dial works on every grpc-go version the tests use.
	conn, err := grpc.Dial(*target, grpc.WithTransportCredentials(creds))
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	failed := false
	for i := 0; i < *requests; i++ {
		msg := []byte("hi " + strconv.Itoa(i))
		want := codes.OK
		if i%5 == 4 {
			msg, want = []byte("fail"), codes.NotFound
		}
		pairs := append([]string{"traceparent", traceparent(i)}, extra...)
		ctx := metadata.AppendToOutgoingContext(context.Background(), pairs...)
		var reply []byte
		err := conn.Invoke(ctx, "/"+service+"/Say", &msg, &reply)
		if got := status.Code(err); got != want {
			fmt.Printf("call %d: got %v, want %v\n", i, got, want)
			failed = true
		}
	}
	for i := 0; i < *streams; i++ {
		desc := &serviceDesc.Streams[0]
		stream, err := conn.NewStream(context.Background(), desc, "/"+service+"/Count")
		if err != nil {
			log.Fatal(err)
		}
		msg := []byte("3")
		if err := stream.SendMsg(&msg); err != nil {
			log.Fatal(err)
		}
		if err := stream.CloseSend(); err != nil {
			log.Fatal(err)
		}
		got := 0
		for {
			var reply []byte
			err := stream.RecvMsg(&reply)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				log.Fatal(err)
			}
			got++
		}
		if got != 3 {
			fmt.Printf("stream %d: %d messages, want 3\n", i, got)
			failed = true
		}
	}
	fmt.Printf("done: %d unary, %d streams\n", *requests, *streams)
	if failed {
		os.Exit(1)
	}
}

// readMetadata reads `key: value` lines of file (none when file is empty) as key, value pairs.
func readMetadata(file string) []string {
	if file == "" {
		return nil
	}
	contents, err := os.ReadFile(file)
	if err != nil {
		log.Fatal(err)
	}
	var pairs []string
	for _, line := range strings.Split(string(contents), "\n") {
		key, value, found := strings.Cut(line, ":")
		if !found {
			continue
		}
		pairs = append(pairs, strings.ToLower(strings.TrimSpace(key)), strings.TrimSpace(value))
	}
	return pairs
}

// relay: a net/http service in front of the gRPC one, with one shared (pooled) connection.
func relay(args []string) {
	flags := flag.NewFlagSet("relay", flag.ExitOnError)
	addr := flags.String("listen", "127.0.0.1:0", "address to serve on")
	target := flags.String("target", "", "grpc-echo server address")
	own := flags.String("serve-grpc", "", "also serve the echo service on this address and call it "+
		"instead of --target (a program that calls its own gRPC server)")
	_ = flags.Parse(args)
	if *own != "" {
		listener, err := net.Listen("tcp", *own)
		if err != nil {
			log.Fatal(err)
		}
		server := grpc.NewServer()
		server.RegisterService(&serviceDesc, struct{}{})
		go func() { log.Fatal(server.Serve(listener)) }()
		// Dial the port over IPv4 loopback, as a client of a ":port" listener usually does.
		_, port, _ := net.SplitHostPort(listener.Addr().String())
		*target = net.JoinHostPort("127.0.0.1", port)
	}
	//nolint:staticcheck // grpc.Dial works on every grpc-go version the tests use.
	conn, err := grpc.Dial(*target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		log.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/relay", func(w http.ResponseWriter, r *http.Request) {
		msg := []byte(r.URL.Query().Get("msg"))
		var reply []byte
		if err := conn.Invoke(r.Context(), "/"+service+"/Say", &msg, &reply); err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		_, _ = w.Write(reply)
	})
	mux.HandleFunc("/count", func(w http.ResponseWriter, r *http.Request) {
		stream, err := conn.NewStream(r.Context(), &serviceDesc.Streams[0], "/"+service+"/Count")
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		n := []byte(r.URL.Query().Get("n"))
		if err := stream.SendMsg(&n); err != nil || stream.CloseSend() != nil {
			http.Error(w, "send failed", http.StatusBadGateway)
			return
		}
		for {
			var reply []byte
			if err := stream.RecvMsg(&reply); err != nil {
				break
			}
			fmt.Fprintf(w, "%s\n", reply)
		}
	})
	listener, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(listener.Addr().String())
	log.Fatal(http.Serve(listener, mux))
}

// load calls Say from --concurrency goroutines for --duration: each as fast as it can (closed
// loop), or, with --rate, paced to that many calls per second in all (open loop; a call waits
// for a free goroutine when all are busy). It prints one JSON line: requests, errors, seconds,
// rps and the p50 and p99 latency in microseconds (send to reply). A call whose reply is not
// the echo counts as an error.
func load(args []string) {
	flags := flag.NewFlagSet("load", flag.ExitOnError)
	target := flags.String("target", "", "grpc-echo server address")
	concurrency := flags.Int("concurrency", 50, "calls in flight at most")
	duration := flags.Duration("duration", 10*time.Second, "how long to send")
	rate := flags.Int("rate", 0, "calls per second in all (0: closed loop)")
	_ = flags.Parse(args)
	//nolint:staticcheck // grpc.Dial works on every grpc-go version the tests use.
	conn, err := grpc.Dial(*target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		log.Fatal(err)
	}
	start := time.Now()
	deadline := start.Add(*duration)
	var tokens chan struct{}
	if *rate > 0 {
		tokens = make(chan struct{}, *concurrency)
		go func() {
			defer close(tokens)
			sent := 0
			for time.Now().Before(deadline) {
				due := int(time.Since(start).Seconds() * float64(*rate))
				for ; sent < due; sent++ {
					tokens <- struct{}{}
				}
				time.Sleep(200 * time.Microsecond)
			}
		}()
	}
	var mu sync.Mutex
	var latencies []time.Duration
	failures := 0
	var wg sync.WaitGroup
	for w := 0; w < *concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			msg := []byte("bench")
			mine := make([]time.Duration, 0, 1<<16)
			failed := 0
			for time.Now().Before(deadline) {
				if tokens != nil {
					if _, ok := <-tokens; !ok {
						break
					}
				}
				var reply []byte
				began := time.Now()
				// A wrong reply counts as an error too: the fault suite checks every answer.
				if err := conn.Invoke(context.Background(), "/"+service+"/Say", &msg, &reply); err != nil || string(reply) != "echo bench" {
					failed++
				}
				mine = append(mine, time.Since(began))
			}
			mu.Lock()
			latencies = append(latencies, mine...)
			failures += failed
			mu.Unlock()
		}()
	}
	wg.Wait()
	seconds := time.Since(start).Seconds()
	sort.Slice(latencies, func(i, j int) bool { return latencies[i] < latencies[j] })
	quantile := func(q float64) float64 {
		if len(latencies) == 0 {
			return 0
		}
		return float64(latencies[int(float64(len(latencies)-1)*q)].Microseconds())
	}
	fmt.Printf("{\"requests\":%d,\"errors\":%d,\"seconds\":%.3f,\"rps\":%.1f,\"p50_us\":%.0f,\"p99_us\":%.0f}\n",
		len(latencies), failures, seconds, float64(len(latencies))/seconds, quantile(0.5), quantile(0.99))
}

func main() {
	encoding.RegisterCodec(rawCodec{})
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: grpc-echo server [--listen ADDR] | client --target ADDR [--requests N] [--streams N] | relay [--listen ADDR] --target ADDR | load --target ADDR [--concurrency N] [--duration D] [--rate R]")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "server":
		serve(os.Args[2:])
	case "client":
		client(os.Args[2:])
	case "relay":
		relay(os.Args[2:])
	case "load":
		load(os.Args[2:])
	default:
		fmt.Fprintf(os.Stderr, "unknown command %q\n", os.Args[1])
		os.Exit(2)
	}
}
