#!/bin/sh
# openssl-sm2-verify.sh SIGNED.der SIGNER-CERT.pem
#
# Has OpenSSL 3 check the SM2 signature (default ID 1234567812345678) on a
# DER certificate or CRL against the signer's certificate. OpenSSL 3's
# `crl -verify` cannot be given an SM2 ID and `verify` gives it only to the
# certificate named on its command line, so this takes the signed object
# apart (TBS, signature) with asn1parse and dd and verifies with pkeyutl.
set -eu
signed=$1 signer=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# "OFFSET:d=1 hl=HL l= LEN ..." for the top-level elements: TBS, algorithm, signature.
openssl asn1parse -inform DER -in "$signed" |
  sed -nE 's/^ *([0-9]+):d=1 +hl= *([0-9]+) +l= *([0-9]+).*/\1 \2 \3/p' > "$tmp/parts"
read -r o hl l < "$tmp/parts"
dd if="$signed" of="$tmp/tbs" bs=1 skip="$o" count=$((hl + l)) 2>/dev/null
read -r o hl l <<EOT
$(tail -n 1 "$tmp/parts")
EOT
# The BIT STRING's first content byte counts unused bits (0); the rest is the DER signature.
dd if="$signed" of="$tmp/sig" bs=1 skip=$((o + hl + 1)) count=$((l - 1)) 2>/dev/null
openssl x509 -in "$signer" -pubkey -noout > "$tmp/pub.pem"
openssl pkeyutl -verify -rawin -digest sm3 -pkeyopt distid:1234567812345678 \
  -pubin -inkey "$tmp/pub.pem" -in "$tmp/tbs" -sigfile "$tmp/sig"
