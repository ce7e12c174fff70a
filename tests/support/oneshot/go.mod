module wirespan.test/oneshot

go 1.22
