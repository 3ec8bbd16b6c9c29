#!/usr/bin/env bash
# Dev PKI for AOG (never for production). Writes into certs/dev/ (git-ignored):
#   ca.pem ca-key.pem                 the dev agent + server CA
#   server.pem server-key.pem         the gate's certificate (SANs localhost, 127.0.0.1, ::1)
#   agent.pem agent-key.pem           authorized agent, URI SAN spiffe://aog.dev/agent/agent
#   agent2.pem agent2-key.pem         second authorized agent, spiffe://aog.dev/agent/agent2
#   rogue.pem rogue-key.pem           an agent signed by another CA (rogue-ca.pem)
#   expired.pem expired-key.pem       an agent whose certificate has expired
#   revoked.pem revoked-key.pem       an agent listed in crl.pem
#   crl.pem                           CRL of the dev CA listing revoked.pem
#   forward-secret                    a random HMAC secret for forwarded mode
#   assertion-key.pem                 Ed25519 key (PKCS#8) that signs X-AOG-Agent
#   assertion-key-2.pem               P-256 key (PKCS#8), a second assertion key for rotation tests
#   attestation-key.pem               Ed25519 key (PKCS#8) of the development attestation signer
#                                     (aog-agent --attestation-key; it attests nothing about the machine)
#   attestation-jwks.json             its public JWKS, for the gate's --attestation-jwks
#   signing-key.pem                   Ed25519 key (PKCS#8) of a Web Bot Auth agent (aog-agent --sign-key)
#   signing-jwks.json                 its key directory (a JWKS), and signature-agents, the gate's
#   signature-agents                  --signature-agents pinning https://agent.aog.dev to that file
# Idempotent: does nothing when every file exists; when only the attestation or signing files are
# missing (a dev PKI made before they existed), makes just those. --force regenerates everything.
# Usage: certs/gen.sh [--force] [OUT_DIR]
set -euo pipefail
force=0
if [ "${1:-}" = "--force" ]; then force=1; shift; fi
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-"$here/dev"}
files=(ca.pem ca-key.pem server.pem server-key.pem agent.pem agent-key.pem agent2.pem agent2-key.pem
  rogue.pem rogue-key.pem expired.pem expired-key.pem revoked.pem revoked-key.pem crl.pem forward-secret
  assertion-key.pem assertion-key-2.pem)
attestation_files=(attestation-key.pem attestation-jwks.json signing-key.pem signing-jwks.json signature-agents)
command -v openssl >/dev/null || { echo "certs/gen.sh: openssl is required" >&2; exit 1; }

b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }

# An Ed25519 private key file and its public JWKS file: kid is the RFC 7638 thumbprint.
ed25519_jwks() { # key-file jwks-file
  local key=$1 jwks=$2 x kid
  (umask 077; openssl genpkey -algorithm ED25519 -out "$key" 2>/dev/null)
  # The raw public key: the last 32 bytes of its SubjectPublicKeyInfo.
  x=$(openssl pkey -in "$key" -pubout -outform DER 2>/dev/null | tail -c 32 | b64url)
  kid=$(printf '{"crv":"Ed25519","kty":"OKP","x":"%s"}' "$x" | openssl dgst -sha256 -binary | b64url)
  printf '{"keys":[{"kty":"OKP","crv":"Ed25519","x":"%s","kid":"%s","alg":"EdDSA","use":"sig"}]}\n' "$x" "$kid" > "$jwks"
  chmod 600 "$key"
  chmod 644 "$jwks"
}

# The development attestation key and its JWKS, as aog-agent signs with.
attestation() { # dir
  ed25519_jwks "$1/attestation-key.pem" "$1/attestation-jwks.json"
}

# The Web Bot Auth dev agent: its key, its directory (a JWKS) and the gate's allow list pinning the
# directory URL the agent names to that file (no network needed).
signing() { # dir
  ed25519_jwks "$1/signing-key.pem" "$1/signing-jwks.json"
  printf '# The key directories this gate allows (--signature-agents): URL, then a JWKS file pinned to it.\nhttps://agent.aog.dev signing-jwks.json\n' > "$1/signature-agents"
  chmod 644 "$1/signature-agents"
}

if [ $force -eq 0 ]; then
  missing=0
  for f in "${files[@]}"; do [ -s "$out/$f" ] || missing=1; done
  extra=0
  for f in "${attestation_files[@]}"; do [ -s "$out/$f" ] || extra=1; done
  if [ $missing -eq 0 ] && [ $extra -eq 0 ]; then echo "certs/gen.sh: $out is complete, nothing to do" >&2; exit 0; fi
  if [ $missing -eq 0 ]; then
    [ -s "$out/attestation-key.pem" ] && [ -s "$out/attestation-jwks.json" ] || attestation "$out"
    [ -s "$out/signing-key.pem" ] && [ -s "$out/signing-jwks.json" ] && [ -s "$out/signature-agents" ] || signing "$out"
    echo "certs/gen.sh: wrote the development attestation and signing keys to $out" >&2
    exit 0
  fi
fi
mkdir -p "$out"
chmod 700 "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
umask 077

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

# A minimal `openssl ca` setup: it is the only openssl command that both signs with arbitrary
# validity dates (needed for the expired agent) and keeps the database a CRL is generated from.
mkca() { # dir name
  local d=$1 cn=$2
  mkdir -p "$d/newcerts"; : > "$d/index.txt"; echo 1000 > "$d/serial"; echo 1000 > "$d/crlnumber"
  key "$d/ca-key.pem"
  openssl req -x509 -new -key "$d/ca-key.pem" -sha256 -days 3650 -subj "/O=AOG dev/CN=$cn" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$d/ca.pem" 2>/dev/null
  cat > "$d/ca.cnf" <<CNF
[ ca ]
default_ca = dev
[ dev ]
dir = $d
database = $d/index.txt
new_certs_dir = $d/newcerts
serial = $d/serial
crlnumber = $d/crlnumber
certificate = $d/ca.pem
private_key = $d/ca-key.pem
default_md = sha256
default_days = 825
default_crl_days = 3650
policy = any
unique_subject = no
copy_extensions = none
[ any ]
commonName = supplied
organizationName = optional
[ agent_ext ]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = clientAuth
subjectAltName = \${ENV::AOG_SAN}
[ server_ext ]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = \${ENV::AOG_SAN}
CNF
}

sign() { # cadir name ext san [startdate enddate]
  local d=$1 name=$2 ext=$3 san=$4
  key "$work/$name-key.pem"
  openssl req -new -key "$work/$name-key.pem" -subj "/O=AOG dev/CN=$name" -out "$work/$name.csr" 2>/dev/null
  local dates=()
  if [ $# -ge 6 ]; then dates=(-startdate "$5" -enddate "$6"); fi
  AOG_SAN=$san openssl ca -batch -config "$d/ca.cnf" -extensions "$ext" "${dates[@]}" \
    -in "$work/$name.csr" -out "$work/$name.pem" -notext 2>/dev/null
}

mkca "$work/ca" "AOG dev CA"
mkca "$work/rogue-ca" "Rogue CA"
sign "$work/ca" server server_ext "DNS:localhost,IP:127.0.0.1,IP:::1"
for a in agent agent2 revoked; do sign "$work/ca" "$a" agent_ext "URI:spiffe://aog.dev/agent/$a"; done
sign "$work/ca" expired agent_ext "URI:spiffe://aog.dev/agent/expired" 200101000000Z 200201000000Z
sign "$work/rogue-ca" rogue agent_ext "URI:spiffe://aog.dev/agent/rogue"
AOG_SAN=none openssl ca -batch -config "$work/ca/ca.cnf" -revoke "$work/revoked.pem" 2>/dev/null
AOG_SAN=none openssl ca -batch -config "$work/ca/ca.cnf" -gencrl -out "$work/crl.pem" 2>/dev/null

cp "$work/ca/ca.pem" "$work/ca/ca-key.pem" "$work/crl.pem" "$out/"
cp "$work/rogue-ca/ca.pem" "$out/rogue-ca.pem"
for n in server agent agent2 rogue expired revoked; do cp "$work/$n.pem" "$work/$n-key.pem" "$out/"; done
openssl rand -hex 32 > "$out/forward-secret"
openssl genpkey -algorithm ED25519 -out "$out/assertion-key.pem" 2>/dev/null
key "$out/assertion-key-2.pem"
attestation "$out"
signing "$out"
chmod 600 "$out"/*-key.pem "$out"/assertion-key*.pem "$out/forward-secret"
chmod 644 "$out"/ca.pem "$out"/rogue-ca.pem "$out"/crl.pem "$out"/{server,agent,agent2,rogue,expired,revoked}.pem
echo "certs/gen.sh: wrote dev PKI to $out" >&2
