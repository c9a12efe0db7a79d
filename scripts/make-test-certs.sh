#!/usr/bin/env bash
# Makes a small PKI for trying TLS on one machine (not for production):
#   ca.crt, ca.key           a CA
#   server.crt, server.key   for the client listeners (and as a client certificate, the
#                            way Kubernetes uses etcd's server.crt with etcdctl)
#   peer.crt, peer.key       for the peer listeners and the members' connections to peers
#   client.crt, client.key   a client certificate whose Common Name is CLIENT_CN (default root)
# All server certificates name 127.0.0.1 and localhost. ECDSA P-256 keys, valid DAYS days.
# Usage: scripts/make-test-certs.sh [DIR]   (default ./certs; CLIENT_CN=name DAYS=n to change)
set -euo pipefail
dir="${1:-certs}"
user="${CLIENT_CN:-root}"
days="${DAYS:-365}"
mkdir -p "$dir"
cd "$dir"

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; chmod 600 "$1"; }

key ca.key
openssl req -x509 -new -key ca.key -sha256 -days "$days" -subj "/CN=oxcd test CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out ca.crt

# sign NAME COMMON_NAME: NAME.key and NAME.crt, signed by the CA, for servers and clients.
sign() {
    key "$1.key"
    openssl req -new -key "$1.key" -subj "/CN=$2" -out "$1.csr"
    openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -sha256 \
        -days "$days" -out "$1.crt" -extfile <(printf '%s\n' \
            "subjectAltName=IP:127.0.0.1,DNS:localhost" \
            "keyUsage=critical,digitalSignature,keyEncipherment" \
            "extendedKeyUsage=serverAuth,clientAuth") 2>/dev/null
    rm -f "$1.csr"
}

sign server oxcd-server
sign peer oxcd-peer
sign client "$user"
rm -f ca.srl
echo "certificates in $(pwd): ca.crt server.{crt,key} peer.{crt,key} client.{crt,key}"
