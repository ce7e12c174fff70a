module wirespan.dev/examples/http-hello

go 1.22
