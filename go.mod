module signerd

go 1.26.8

require (
	github.com/ThalesGroup/crypto11 v1.5.0
	github.com/emmansun/gmsm v0.44.0
	github.com/miekg/pkcs11 v1.1.2
	go.etcd.io/bbolt v1.4.3
	go.yaml.in/yaml/v3 v3.0.4
	golang.org/x/crypto v0.53.0
	golang.org/x/term v0.44.0
)

require (
	github.com/pkg/errors v0.9.1 // indirect
	github.com/thales-e-security/pool v0.0.2 // indirect
	golang.org/x/sys v0.49.0 // indirect
)
