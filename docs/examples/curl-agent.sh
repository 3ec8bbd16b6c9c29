#!/usr/bin/env bash
# Pass the gate with curl, openssl and python3 only: docs/protocol.md is all an agent needs.
set -euo pipefail
GATE=${GATE:-https://localhost:8443}
CERTS=${CERTS:-certs/dev}
TLS=(--silent --show-error --cacert "$CERTS/ca.pem" --cert "$CERTS/agent.pem" --key "$CERTS/agent-key.pem")

# F: lowercase hex SHA-256 of the certificate's DER encoding.
F=$(openssl x509 -in "$CERTS/agent.pem" -outform DER | openssl dgst -sha256 -r | cut -d' ' -f1)

challenge=$(curl "${TLS[@]}" "$GATE/challenge")
body=$(CHALLENGE="$challenge" F="$F" python3 -c '
import base64, hashlib, json, os, time
c, F = json.loads(os.environ["CHALLENGE"]), os.environ["F"]
t0 = time.monotonic()
assert c["algorithm"] == "sha256-chain-v2", c["algorithm"]
h = hashlib.sha256(b"aog-sha256-chain-v2\x00" + bytes.fromhex(c["seed"])
                   + base64.urlsafe_b64decode(c["nonce"] + "==") + bytes.fromhex(F)).digest()
K = int.from_bytes(hashlib.sha256(b"aog-sha256-chain-v2/key\x00" + h).digest(), "big")
k, cps = c["checkpoint_interval"], []
for i in range(1, c["iterations"] + 1):
    h = hashlib.sha256((int.from_bytes(h, "big") ^ K).to_bytes(32, "big")).digest()
    if i % k == 0:
        cps.append(h)
print(json.dumps({"nonce": c["nonce"], "result_hash": h.hex(), "client_fingerprint": F,
                  "runtime_ms": round((time.monotonic() - t0) * 1000, 3),
                  "trace_hash": hashlib.sha256(b"".join(cps)).hexdigest(),
                  "checkpoints": [x.hex() for x in cps]}))')
curl "${TLS[@]}" -H 'content-type: application/json' --data "$body" "$GATE/task"
echo
