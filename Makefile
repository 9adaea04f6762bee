# signerd — make demo | make test | make bench
SHELL := /bin/bash
GO ?= go
export PATH := $(PATH):/usr/local/go/bin

# Debian packages the build, the tests and the demo need.
DEBS := softhsm2 opensc openssl curl libssl-dev build-essential patch pkg-config ca-certificates
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# SoftHSM2 with the vendor SM2 mechanism (testdata/softhsm), and Debian's stock build.
SOFTHSM_PREFIX := $(shell testdata/softhsm/build.sh --prefix)
export SIGNERD_SOFTHSM_SM2 := $(SOFTHSM_PREFIX)/lib/softhsm/libsofthsm2.so
export SIGNERD_SOFTHSM_STOCK ?= /usr/lib/softhsm/libsofthsm2.so

.PHONY: deps softhsm test bench demo clean

deps:
	@missing=$$(for p in $(DEBS); do \
	  dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "deps: installing" $$missing; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

softhsm: deps
	@testdata/softhsm/build.sh >/dev/null
	@echo "softhsm: $(SIGNERD_SOFTHSM_SM2)"

test: softhsm
	$(GO) vet ./...
	$(GO) test -race -count=1 ./...

bench: softhsm
	$(GO) test -run '^$$' -bench . -benchtime 2s -count 1 ./hsm/ ./engine/

# The demo: a token in ./demo, an SM2 key generated in it, a request signed
# by that key inside the token, and OpenSSL 3 checking the signature.
DEMO := $(CURDIR)/demo
DEMO_TOKEN := -module $(SIGNERD_SOFTHSM_SM2) -token demo-ca -pin-file $(DEMO)/user.pin

demo: softhsm
	@rm -rf $(DEMO) && mkdir -m 700 -p $(DEMO)/tokens
	@printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' \
	  "$(DEMO)/tokens" > $(DEMO)/softhsm2.conf
	@umask 077 && od -An -N12 -tx1 /dev/urandom | tr -d ' \n' > $(DEMO)/so.pin && \
	  od -An -N12 -tx1 /dev/urandom | tr -d ' \n' > $(DEMO)/user.pin
	@$(GO) build -o bin/signerctl ./cmd/signerctl
	@export SOFTHSM2_CONF=$(DEMO)/softhsm2.conf; set -e; \
	echo "== 1. a fresh token (PINs from files in $(DEMO), never on the command line)"; \
	bin/signerctl token init -module $(SIGNERD_SOFTHSM_SM2) -label demo-ca \
	  -so-pin-file $(DEMO)/so.pin -pin-file $(DEMO)/user.pin; \
	echo "== 2. an SM2 root key generated inside the token"; \
	bin/signerctl key generate $(DEMO_TOKEN) -label demo-root -out $(DEMO)/root.pub.pem; \
	echo "== 3. a request signed by that key inside the token (SM2 with SM3, ID 1234567812345678)"; \
	bin/signerctl key csr $(DEMO_TOKEN) -label demo-root \
	  -subject "CN=signerd demo root CA,O=signerd demo,C=CN" -out $(DEMO)/root.csr; \
	openssl req -in $(DEMO)/root.csr -noout -text | sed -n '1,12p'; \
	echo "== 4. OpenSSL 3 checks the signature made in the token"; \
	openssl req -in $(DEMO)/root.csr -noout -verify -vfyopt distid:1234567812345678; \
	cmp <(openssl req -in $(DEMO)/root.csr -noout -pubkey) $(DEMO)/root.pub.pem && \
	  echo "the request's public key is the token key's public key"

clean:
	rm -rf bin demo
