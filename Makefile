# signerd — make demo | make test | make bench
SHELL := /bin/bash
GO ?= go
export PATH := $(PATH):/usr/local/go/bin

# Debian packages the build, the tests and the demo need (postgresql: the
# servers the store's tests start, store/pgtest).
DEBS := softhsm2 opensc openssl curl libssl-dev build-essential patch pkg-config ca-certificates strace e2fsprogs util-linux mount systemd postgresql
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# SoftHSM2 with the vendor SM2 mechanism (testdata/softhsm), and Debian's stock build.
SOFTHSM_PREFIX := $(shell testdata/softhsm/build.sh --prefix)
export SIGNERD_SOFTHSM_SM2 := $(SOFTHSM_PREFIX)/lib/softhsm/libsofthsm2.so
export SIGNERD_SOFTHSM_STOCK ?= /usr/lib/softhsm/libsofthsm2.so

.PHONY: deps softhsm test bench bench-crl bench-ocsp soak fuzz demo demo-ha clean

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

# The crash tests of make test (20 SIGKILLs on a store file and 10 on PostgreSQL,
# under issue and revoke load; 4 of node a beside node b on one database), run
# with 120 kills on each.
soak: softhsm
	SIGNERD_CRASH_KILLS=120 $(GO) test -race -count=1 -timeout 30m -run '^(TestSIGKILLUnderLoad|TestNodeKilledUnderLoadBesideAnother)$$' -v ./cmd/signerd/

# Each fuzz target for FUZZTIME (their seeds run in make test). An input
# that reaches new code is minimised for at most FUZZMINIMIZE: go's default
# of a minute on a multi-kilobyte audit bundle holds a worker that long.
FUZZTIME ?= 30s
FUZZMINIMIZE ?= 5s
FUZZ := engine:FuzzCheck cmd/signerd:FuzzIssueBody ceremony:FuzzLoad audit:FuzzVerify cmd/signerd:FuzzRASignature
fuzz: softhsm
	@set -e; for t in $(FUZZ); do \
	  echo "== $${t#*:} ($${t%%:*}, $(FUZZTIME))"; \
	  $(GO) test -run '^$$' -fuzz "^$${t#*:}$$" -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZE) ./$${t%%:*}/; done

# The appliance against its HSM: signerctl bench on a throwaway token and
# stores (README, Performance), each run on a bbolt store and, beside it, a
# PostgreSQL store on a local server started for the run (its settings are
# printed; fsync and synchronous_commit on); then two signerd nodes, each
# on its own copy of the token, against one on a PostgreSQL store; then
# the package micro-benchmarks.
bench: softhsm
	@mkdir -p bin && $(GO) build -o bin/signerctl ./cmd/signerctl && $(GO) build -o bin/signerd ./cmd/signerd
	bin/signerctl bench -store both -rounds 2
	bin/signerctl bench -store both -prefill 1000000 -revoked 100000 -clients 64
	bin/signerctl bench -store postgres -nodes 2 -clients 8,64
	$(GO) test -run '^$$' -bench . -benchtime 2s -count 1 ./hsm/ ./engine/

# Issue 20's scale targets (README, Performance): one issuer with 1,000,000
# revoked certificates in 16 CRL shards, every shard's complete CRL and,
# after 1,000 revocations, every shard's delta; then issue 19's case, a
# CRL of 100,000 entries in a store of 1,000,000 certificates.
bench-crl: softhsm
	@mkdir -p bin && $(GO) build -o bin/signerctl ./cmd/signerctl && $(GO) build -o bin/signerd ./cmd/signerd
	bin/signerctl bench -store bolt -prefill 1000000 -revoked 1000000 -shards 16 -delta-revocations 1000 -clients 8 -duration 5s
	bin/signerctl bench -store bolt -prefill 1000000 -revoked 100000 -shards 1 -clients 8 -duration 5s

# The OCSP responder under load (README, "OCSP responder"): 1 M published
# responses, 8 and 32 keep-alive GET clients; then PutOCSP in batches of 256;
# then signerd's pre-signing (README, Performance): a full refresh of
# 100,000 certificates' responses against the HSM ceiling of the same run.
bench-ocsp: softhsm
	@mkdir -p bin && $(GO) build -o bin/signerctl ./cmd/signerctl && $(GO) build -o bin/ocsp-responder ./cmd/ocsp-responder \
	  && $(GO) build -o bin/signerd ./cmd/signerd
	bin/signerctl bench -ocsp-responder -clients 8
	bin/signerctl bench -ocsp-responder -clients 32
	$(GO) test -run '^$$' -bench 'PutOCSP' -benchtime 3s -count 1 ./publish/
	bin/signerctl bench -ocsp-presign -certificates 100000 -revoked 10000

# The demo: the documented ceremonies (docs/ceremonies) make a token in
# ./demo whose PIN is split 3 of 5, an SM2 root and an issuing CA; signerd
# starts on ./demo/signerd.sock with the PIN rebuilt from three shares; a
# certificate is issued through it for a request OpenSSL made, then revoked
# and listed on a CRL, with OpenSSL 3 checking every signature.
DEMO := $(CURDIR)/demo
ROOM := $(DEMO)/ceremonies
SIGNERCTL := bin/signerctl
export SIGNERD_SOCKET := $(DEMO)/signerd.sock
# The demo's OCSP responder.
OCSP_LISTEN := 127.0.0.1:18080
OCSP_URL := http://$(OCSP_LISTEN)

demo: softhsm
	@rm -rf $(DEMO) && mkdir -m 700 -p $(DEMO)/tokens $(ROOM)
	@printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' \
	  "$(DEMO)/tokens" > $(DEMO)/softhsm2.conf
	@cp docs/ceremonies/0[1-4]-*.yaml $(ROOM)/
	@umask 077 && od -An -N12 -tx1 /dev/urandom | tr -d ' \n' > $(ROOM)/so.pin && \
	  od -An -N12 -tx1 /dev/urandom | tr -d ' \n' > $(ROOM)/chen-jie.passphrase
	@$(GO) build -o bin/signerctl ./cmd/signerctl && $(GO) build -o bin/signerd ./cmd/signerd && $(GO) build -o bin/ocsp-responder ./cmd/ocsp-responder
	@export SOFTHSM2_CONF=$(DEMO)/softhsm2.conf; set -e; \
	trap 'for p in signerd ocsp-responder; do [ -f $(DEMO)/$$p.pid ] && kill $$(cat $(DEMO)/$$p.pid) 2>/dev/null; done; true' EXIT; \
	echo "== 1. ceremony: a fresh token; its user PIN is random and split 3 of 5 among custodians"; \
	$(SIGNERCTL) ceremony run $(ROOM)/01-token-init.yaml; \
	echo "== 2. ceremony: the SM2 root key is generated in the HSM and self-signs the root"; \
	$(SIGNERCTL) ceremony run $(ROOM)/02-root.yaml --dry-run; \
	$(SIGNERCTL) ceremony run $(ROOM)/02-root.yaml; \
	echo "== 3. ceremonies: the issuing CA's key and request, then the root certifies it"; \
	$(SIGNERCTL) ceremony run $(ROOM)/03-issuing-key.yaml; \
	$(SIGNERCTL) ceremony run $(ROOM)/04-issuing-cert.yaml; \
	openssl x509 -in $(ROOM)/root-2026.pem -outform DER -out $(DEMO)/root.der; \
	printf 'root self-signature: '; testdata/openssl-sm2-verify.sh $(DEMO)/root.der $(ROOM)/root-2026.pem; \
	openssl verify -vfyopt distid:1234567812345678 -CAfile $(ROOM)/root-2026.pem $(ROOM)/issuing-2026.pem; \
	cp $(ROOM)/root-2026.pem $(DEMO)/root.pem; cp $(ROOM)/issuing-2026.pem $(DEMO)/issuing.pem; \
	echo "== 4. signerd starts on $(SIGNERD_SOCKET), its PIN rebuilt from three custodians' shares"; \
	echo "   (you hold the ra, operator and auditor roles)"; \
	ski=$$(openssl x509 -in $(DEMO)/issuing.pem -noout -ext subjectKeyIdentifier | tail -n 1 | tr -d ' :' | tr A-F a-f); \
	echo "   its CRLs: 4 shards, signed by signerd itself, published in $(DEMO)/publish/$$ski/"; \
	printf '%s\n' "hsm: {module: $(SIGNERD_SOFTHSM_SM2), token: ca," \
	  "  pin_shares: [$(ROOM)/pin-share-1.pem, $(ROOM)/pin-share-2.pem, $(ROOM)/pin-share-4.pem]}" \
	  "issuers: [{key: issuing-2026, certificate: $(DEMO)/issuing.pem," \
	  "  crl: {shards: 4, url: 'http://crl.demo.example/$$ski/{shard}.crl'}}]" \
	  "crl: {after_revocation: 2s}" "publish: {dir: $(DEMO)/publish}" \
	  "store: $(DEMO)/signerd.db" "socket: {path: $(SIGNERD_SOCKET)}" \
	  "roles: {ra: {uids: [$$(id -u)]}, operator: {uids: [$$(id -u)]}, auditor: {uids: [$$(id -u)]}}" > $(DEMO)/signerd.yaml; \
	bin/signerd --config $(DEMO)/signerd.yaml 2> $(DEMO)/signerd.log & echo $$! > $(DEMO)/signerd.pid; \
	for i in $$(seq 100); do $(SIGNERCTL) health >/dev/null 2>&1 && break; sleep 0.1; done; \
	$(SIGNERCTL) health; echo; \
	echo "   the OCSP responder (no key, no HSM) serves on $(OCSP_URL) what signerd pre-signs and publishes"; \
	printf '%s\n' "listen: $(OCSP_LISTEN)" "issuers: [$(DEMO)/issuing.pem]" "source: {dir: $(DEMO)/publish}" > $(DEMO)/ocsp-responder.yaml; \
	bin/ocsp-responder --config $(DEMO)/ocsp-responder.yaml 2> $(DEMO)/ocsp-responder.log & echo $$! > $(DEMO)/ocsp-responder.pid; \
	echo "== 5. an applicant's SM2 key and request, made by OpenSSL"; \
	openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:SM2 -out $(DEMO)/person.key 2>/dev/null; \
	openssl req -new -key $(DEMO)/person.key -sm3 -sigopt distid:1234567812345678 \
	  -subj "/CN=applicant" -out $(DEMO)/person.csr; \
	echo "== 6. the RA has signerd issue a person signing certificate"; \
	$(SIGNERCTL) issue -request-id demo-0001 -profile person-sign -subject "CN=张三,C=CN" \
	  -csr $(DEMO)/person.csr -identity resident-id=11010519491231002X -out $(DEMO)/person.pem; \
	openssl x509 -in $(DEMO)/person.pem -noout -text -certopt no_pubkey,no_sigdump,no_version \
	  -nameopt RFC2253,-esc_msb | sed 1,2d; \
	echo "== 7. OpenSSL 3 verifies it up to the root (link by link: OpenSSL 3 passes the SM2 ID to one certificate only)"; \
	openssl verify -vfyopt distid:1234567812345678 -partial_chain -CAfile $(DEMO)/issuing.pem $(DEMO)/person.pem; \
	serial=$$(openssl x509 -in $(DEMO)/person.pem -noout -serial | cut -d= -f2); \
	echo "   its status by OCSP, from the responder (the response signed within a second of issuance):"; \
	ocsp="openssl ocsp -issuer $(DEMO)/issuing.pem -url $(OCSP_URL) -noverify"; \
	for i in $$(seq 100); do $$ocsp -cert $(DEMO)/person.pem 2>/dev/null | grep -q ": good" && break; sleep 0.1; done; \
	$$ocsp -cert $(DEMO)/person.pem 2>/dev/null | sed -n 1,3p; \
	url=$$(openssl x509 -in $(DEMO)/person.pem -noout -ext crlDistributionPoints | sed -n 's/.*URI://p'); \
	shard=$$(basename $$url .crl); crl=$(DEMO)/publish/$${url#http://crl.demo.example/}; \
	echo "== 8. the RA revokes it; within crl.after_revocation (2 s here) signerd signs the CRL of the"; \
	echo "   certificate's shard by itself and publishes it where its distribution point says:"; \
	echo "   $$url → $$crl"; \
	$(SIGNERCTL) revoke -serial $$serial -reason keyCompromise | grep '"status"'; \
	for i in $$(seq 150); do openssl crl -inform DER -in $$crl -noout -text 2>/dev/null | grep -q "Serial Number: $$serial" && break; sleep 0.1; done; \
	ls $(DEMO)/publish/$$ski; \
	$(SIGNERCTL) crl -shard $$shard -out $(DEMO)/fetched.crl && cmp $$crl $(DEMO)/fetched.crl && cp $$crl $(DEMO)/issuing.crl; \
	openssl crl -inform DER -in $(DEMO)/issuing.crl -noout -text -nameopt RFC2253 | sed '/Signature Value/,$$d'; \
	openssl crl -inform DER -in $(DEMO)/issuing.crl -noout -text | grep -q "Serial Number: $$serial"; \
	echo "== 9. OpenSSL 3 checks the CRL's signature (testdata/openssl-sm2-verify.sh)"; \
	testdata/openssl-sm2-verify.sh $(DEMO)/issuing.crl $(DEMO)/issuing.pem; \
	echo "   the responder now answers revoked (signerd signed a new response on the revocation):"; \
	for i in $$(seq 100); do $$ocsp -cert $(DEMO)/person.pem 2>/dev/null | grep -q ": revoked" && break; sleep 0.1; done; \
	$$ocsp -sha256 -cert $(DEMO)/person.pem -respout $(DEMO)/ocsp.der 2>/dev/null | sed -n 1,5p; \
	echo "   the response's SM2 signature, checked by OpenSSL over its tbsResponseData with the delegated responder's"; \
	echo "   certificate it carries (testdata/openssl-ocsp-verify.sh), and that certificate under the issuing CA:"; \
	openssl ocsp -respin $(DEMO)/ocsp.der -resp_text -noverify 2>/dev/null | sed -n '/BEGIN CERTIFICATE/,/END CERTIFICATE/p' > $(DEMO)/ocsp-responder.pem; \
	testdata/openssl-ocsp-verify.sh $(DEMO)/ocsp.der $(DEMO)/ocsp-responder.pem; \
	openssl verify -vfyopt distid:1234567812345678 -partial_chain -CAfile $(DEMO)/issuing.pem $(DEMO)/ocsp-responder.pem; \
	echo "== 10. the security officer exports the audit log and verifies it offline against the root"; \
	rm -f $(DEMO)/audit.jsonl; \
	$(SIGNERCTL) audit export --root $(DEMO)/root.pem --out $(DEMO)/audit.jsonl >/dev/null; \
	$(SIGNERCTL) audit show --root $(DEMO)/root.pem --action 'certificate.*' $(DEMO)/audit.jsonl; \
	$(SIGNERCTL) audit verify --root $(DEMO)/root.pem $(DEMO)/audit.jsonl; \
	echo "== 11. signerd and the responder stop on SIGTERM, signerd after draining"; \
	kill -TERM $$(cat $(DEMO)/ocsp-responder.pid) $$(cat $(DEMO)/signerd.pid); wait; rm $(DEMO)/signerd.pid $(DEMO)/ocsp-responder.pid; \
	tail -n 1 $(DEMO)/signerd.log

# Two signerd nodes, each with its own token holding the issuing key (the
# backup and restore ceremonies), on a PostgreSQL primary with a synchronous
# standby: issue through both, kill the primary and one node, and show every
# certificate still there and every node's audit chain verified
# (scripts/demo-ha.sh; README, "Several nodes").
demo-ha: softhsm
	@$(GO) build -o bin/signerctl ./cmd/signerctl && $(GO) build -o bin/signerd ./cmd/signerd
	@DEMO=$(CURDIR)/demo-ha scripts/demo-ha.sh

clean:
	rm -rf bin demo demo-ha
