module wirespan.dev/tests/routes

go 1.22
