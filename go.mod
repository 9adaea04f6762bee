module signerd

go 1.26.8

require (
	github.com/emmansun/gmsm v0.44.0
	github.com/miekg/pkcs11 v1.1.2
	golang.org/x/term v0.44.0
)

require (
	golang.org/x/crypto v0.53.0 // indirect
	golang.org/x/sys v0.49.0 // indirect
)
