module wirespan.test/https_client

go 1.22
