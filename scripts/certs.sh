#!/usr/bin/env bash
# A development CA and one certificate per region for the peer link's mutual TLS.
#   scripts/certs.sh [DIR] [REGION...]     (default: $EXDR_VAR_DIR/certs, primary standby)
# Writes DIR/ca.pem, DIR/ca.key and DIR/<region>.pem, DIR/<region>.key; every certificate is
# valid for 127.0.0.1, ::1, localhost and the region's name, as server and as client.
# Skips what already exists; never for production (the CA key sits beside the certificates).
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
DIR="${1:-$VAR_DIR/certs}"
shift || true
REGIONS=("$@")
[[ ${#REGIONS[@]} -gt 0 ]] || REGIONS=(primary standby)
DAYS="${EXDR_CERT_DAYS:-825}"

command -v openssl >/dev/null || die "certs: openssl not found (apt-get install openssl)"
mkdir -p "$DIR"
chmod 700 "$DIR"
cd "$DIR"

if [[ ! -s ca.pem || ! -s ca.key ]]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -sha256 \
        -days "$DAYS" -subj "/CN=exchange-dr development CA" \
        -keyout ca.key.tmp -out ca.pem.tmp \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    mv ca.key.tmp ca.key
    mv ca.pem.tmp ca.pem
    echo "certs: CA $DIR/ca.pem"
fi

for region in "${REGIONS[@]}"; do
    [[ -s "$region.pem" && -s "$region.key" ]] && continue
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -sha256 \
        -subj "/CN=$region" -keyout "$region.key.tmp" -out "$region.csr" 2>/dev/null
    printf '%s\n' \
        "basicConstraints=critical,CA:FALSE" \
        "keyUsage=critical,digitalSignature,keyEncipherment" \
        "extendedKeyUsage=serverAuth,clientAuth" \
        "subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost,DNS:$region" > "$region.ext"
    openssl x509 -req -in "$region.csr" -CA ca.pem -CAkey ca.key -CAcreateserial \
        -days "$DAYS" -sha256 -extfile "$region.ext" -out "$region.pem.tmp" 2>/dev/null
    rm -f "$region.csr" "$region.ext"
    mv "$region.key.tmp" "$region.key"
    mv "$region.pem.tmp" "$region.pem"
    echo "certs: $region $DIR/$region.pem"
done
chmod 600 ./*.key
