#!/bin/sh
# openssl-ocsp-verify.sh RESPONSE.der SIGNER-CERT.pem
#
# Has OpenSSL 3 check the SM2 signature (default ID 1234567812345678) of a
# DER OCSPResponse against the signer's certificate (the issuer's, or the
# delegated responder's), independently of the code that made it. The
# BasicOCSPResponse is inside an OCTET STRING, and its signature is not
# its last element when certs follow, so openssl-sm2-verify.sh cannot take
# it apart: this pulls the BasicOCSPResponse out with asn1parse -strparse,
# then takes the first (tbsResponseData) and third (signature) elements.
set -eu
resp=$1 signer=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# OCSPResponse { status, [0] { ResponseBytes { OID, OCTET STRING } } }: the OCTET STRING is at depth 3.
o=$(openssl asn1parse -inform DER -in "$resp" | sed -nE 's/^ *([0-9]+):d=3 +hl= *[0-9]+ +l= *[0-9]+ +prim: OCTET STRING.*/\1/p' | head -n 1)
openssl asn1parse -inform DER -in "$resp" -strparse "$o" -out "$tmp/basic" -noout
openssl asn1parse -inform DER -in "$tmp/basic" |
  sed -nE 's/^ *([0-9]+):d=1 +hl= *([0-9]+) +l= *([0-9]+).*/\1 \2 \3/p' > "$tmp/parts"
read -r o hl l < "$tmp/parts"
dd if="$tmp/basic" of="$tmp/tbs" bs=1 skip="$o" count=$((hl + l)) 2>/dev/null
read -r o hl l <<EOT
$(sed -n 3p "$tmp/parts")
EOT
# The BIT STRING's first content byte counts unused bits (0); the rest is the DER signature.
dd if="$tmp/basic" of="$tmp/sig" bs=1 skip=$((o + hl + 1)) count=$((l - 1)) 2>/dev/null
openssl x509 -in "$signer" -pubkey -noout > "$tmp/pub.pem"
openssl pkeyutl -verify -rawin -digest sm3 -pkeyopt distid:1234567812345678 \
  -pubin -inkey "$tmp/pub.pem" -in "$tmp/tbs" -sigfile "$tmp/sig"
