module github.com/qnbd/qnbd

go 1.26.0

require (
	github.com/cockroachdb/datadriven v1.0.2 // indirect
	github.com/klauspost/compress v1.20.1 // indirect
	github.com/pmezard/go-difflib v1.0.0 // indirect
	github.com/pojntfx/go-nbd v0.3.2 // indirect
	github.com/prometheus/client_golang v1.25.0 // indirect
	golang.org/x/sys v0.50.0 // indirect
)
