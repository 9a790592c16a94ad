#!/usr/bin/env bash
# Interop runs against a real `zest serve` on loopback, with clients zest did not write:
#  1. Keylime 7.14.3's own Python tenant enrols the swtpm test agent in pull mode, reads its
#     status until it attests, and deletes it (`keylime_tenant -c add|status|delete`).
#  2. Signed runtime policies (DSSE) both ways: keylime-policy signs and zest verifies, zest
#     signs and Keylime's own code verifies.
#  3. keylime-policy create runtime and zest policy create runtime make the same runtime
#     policies from the same rootfs, initramfs images, allowlists and base policies.
#  4. `zest import keylime` takes databases Keylime's own code wrote (tests/interop/keylime_dbs.py),
#     and a fleet Keylime's own registrar, tenant and verifier attested moves to zest, which
#     attests the same running agent (tests/interop/keylime_fleet.sh).
#  5. schemathesis fuzzes every route of /openapi.json on the verifier and the registrar:
#     no 5xx, every reply as documented (errors in the envelope).
# Needs the debug binaries `zest` and `zest-test-agent` (cargo test builds both).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
target=${CARGO_TARGET_DIR:-$root/target}/debug
work=$(mktemp -d /tmp/zest-interop.XXXXXX)
venvs=${ZEST_INTEROP_VENVS:-$HOME/.cache/zest-interop}
fuzz_seconds=${ZEST_FUZZ_SECONDS:-60}
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
fail() {
  echo "interop: $*" >&2
  for log in "$work"/*.log; do echo "--- $log"; tail -n 60 "$log"; done >&2
  # Whole logs stay in the target directory for a look after the run.
  mkdir -p "$root/target/interop-logs" && cp "$work"/*.log "$root/target/interop-logs/" 2>/dev/null || true
  exit 1
}

# Python clients in venvs, pinned; reused between runs.
venv() {
  local name=$1 requirements=$2
  if [ ! -x "$venvs/$name/bin/python" ] || ! cmp -s "$requirements" "$venvs/$name/requirements.txt"; then
    rm -rf "${venvs:?}/$name"
    python3 -m venv "$venvs/$name"
    "$venvs/$name/bin/pip" install -q --disable-pip-version-check -r "$requirements"
    cp "$requirements" "$venvs/$name/requirements.txt"
  fi
}
venv keylime tests/interop/requirements-keylime.txt
venv schemathesis tests/interop/requirements-schemathesis.txt
# Keylime imports the GPGME binding at module level for a deprecated option the tenant never
# uses here; it does not build from PyPI without libgpgme-dev, so an empty module stands in.
site=$("$venvs/keylime/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
[ -f "$site/gpg.py" ] || echo "# stand-in: signing with GPG is not used by these runs" >"$site/gpg.py"
command -v tpm2_startup >/dev/null || fail "tpm2_startup not found (apt-get install tpm2-tools)"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
vport=$(free_port); rport=$(free_port); rtls=$(free_port); aport=$(free_port)
data=$work/data
"$target/zest" serve --data-dir "$data" --quote-interval 1 --verifier-port "$vport" \
  --registrar-port "$rport" --registrar-tls-port "$rtls" >"$work/zest.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do [ -f "$data/cv_ca/client-private.pem" ] && curl -s -o /dev/null "http://127.0.0.1:$rport/version" && break; sleep 0.1; done

# Python >= 3.13 verifies X.509 strictly (Keylime's tenant on current distributions): zest's
# generated certificates must pass that too, with a client certificate from `zest ca issue`.
"$target/zest" --data-dir "$data" ca issue --name strict-client --client --out "$work" >/dev/null
python3 - "$data/cv_ca" "$work" "$vport" "$rtls" <<'PY' || fail "strict X.509 verification refused zest's certificates"
import socket, ssl, sys
ca, out, *ports = sys.argv[1:]
for port in ports:
    ctx = ssl.create_default_context(cafile=f"{ca}/cacert.crt")
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    ctx.load_cert_chain(f"{out}/strict-client-cert.crt", f"{out}/strict-client-private.pem")
    with socket.create_connection(("127.0.0.1", int(port))) as s, ctx.wrap_socket(s, server_hostname="127.0.0.1") as t:
        t.sendall(b"GET /version HTTP/1.1\r\nHost: zest\r\nConnection: close\r\n\r\n")
        assert t.recv(64).startswith(b"HTTP/1.1 200"), port
PY
echo "interop: strict X.509 verification (Python's VERIFY_X509_STRICT) accepts zest's certificates"

uuid=9c1f0a57-5f0e-4e8b-9a3b-1d2c3e4f5a6b
# The agent serves what Keylime's keylime_agent 0.2.9 serves: its self-signed certificate
# whose signature does not verify, and quote replies without boottime.
"$target/zest-test-agent" --data-dir "$data" --registrar "http://127.0.0.1:$rport" --serve \
  --port "$aport" --uuid "$uuid" --write-policy "$work/policy.json" --like-keylime-agent >"$work/agent.log" 2>&1 &
pids+=($!)
for _ in $(seq 200); do grep -q "serving quotes" "$work/agent.log" && break; sleep 0.1; done
grep -q "serving quotes" "$work/agent.log" || fail "the test agent did not register"

# 1. Keylime's tenant.
cat >"$work/tenant.conf" <<EOF
[tenant]
version = 2.5
verifier_ip = 127.0.0.1
verifier_port = $vport
registrar_ip = 127.0.0.1
registrar_port = $rtls
tls_dir = $data/cv_ca
enable_agent_mtls = True
client_cert = client-cert.crt
client_key = client-private.pem
client_key_password =
trusted_server_ca = ["cacert.crt"]
tpm_cert_store = $data/tpm_cert_store
max_payload_size = 1048576
accept_tpm_hash_algs = ["sha512", "sha384", "sha256"]
accept_tpm_encryption_algs = ["ecc", "rsa"]
accept_tpm_signing_algs = ["ecschnorr", "rsassa"]
exponential_backoff = False
retry_interval = 1
max_retries = 10
request_timeout = 30
require_ek_cert = False
ek_check_script =
mb_refstate =
EOF
: >"$work/logging.conf"
tenant() {
  KEYLIME_TENANT_CONFIG="$work/tenant.conf" KEYLIME_LOGGING_CONFIG="$work/logging.conf" \
    "$venvs/keylime/bin/keylime_tenant" "$@"
}
echo "a payload for the agent" >"$work/payload.txt"
tenant -c add -t 127.0.0.1 -tp "$aport" -u "$uuid" --runtime-policy "$work/policy.json" \
  -f "$work/payload.txt" --verify >"$work/keylime-add.log" 2>&1 || fail "keylime_tenant -c add failed"
grep -q "Quote from Agent $uuid .* validated" "$work/keylime-add.log" || fail "the tenant did not validate the identity quote"
grep -q "added to Verifier" "$work/keylime-add.log" || fail "the tenant did not enrol the agent"
# U from the tenant, V from zest's verifier after a good quote: the agent proves K.
grep -q "Successful key derivation for Agent $uuid" "$work/keylime-add.log" || fail "the agent did not prove the bootstrap key"
# (The agent reports it from a task that looks every 200 ms.)
for _ in $(seq 50); do grep -q "payload of 24 bytes decrypted" "$work/agent.log" && break; sleep 0.1; done
grep -q "payload of 24 bytes decrypted" "$work/agent.log" || fail "the agent did not decrypt the payload"
passed=""
for _ in $(seq 60); do
  if tenant -c status -u "$uuid" >"$work/keylime-status.log" 2>&1 \
    && grep -q '"operational_state": "Get Quote"' "$work/keylime-status.log" \
    && grep -q '"attestation_status": "PASS"' "$work/keylime-status.log"; then
    passed=yes
    break
  fi
  sleep 0.5
done
[ -n "$passed" ] || fail "keylime_tenant -c status never showed Get Quote / PASS"
tenant -c delete -u "$uuid" >"$work/keylime-delete.log" 2>&1 || fail "keylime_tenant -c delete failed"
grep -q "deleted from the CV" "$work/keylime-delete.log" || fail "the tenant did not report the deletion"
if tenant -c status -u "$uuid" >"$work/keylime-status-after.log" 2>&1; then
  fail "keylime_tenant -c status still succeeds after delete"
fi
grep -q "does not exist on Verifier" "$work/keylime-status-after.log" || fail "status after delete: unexpected output"
echo "interop: Keylime 7.14.3 tenant enrolled (identity quote, payload, key derivation), read (Get Quote, PASS) and deleted the agent"

# The README's flow with zest's own tenant, on the same agent.
zt() { "$target/zest" --data-dir "$data" tenant --verifier "127.0.0.1:$vport" --registrar "127.0.0.1:$rtls" "$@"; }
zt add --uuid "$uuid" --ip 127.0.0.1 --port "$aport" --runtime-policy "$work/policy.json" \
  --payload "$work/payload.txt" --verify >"$work/zest-add.log" 2>&1 || fail "zest tenant add failed"
passed=""
for _ in $(seq 60); do
  zt status --uuid "$uuid" >"$work/zest-status.log" 2>&1 && grep -q "attestation status *PASS" "$work/zest-status.log" && passed=yes && break
  sleep 0.5
done
[ -n "$passed" ] || fail "zest tenant status never showed PASS"
zt status --uuid "$uuid" --json | python3 -c 'import json,sys; r=json.load(sys.stdin); assert r["attestation_status"] == "PASS" and r["operational_state"] == 3, r' \
  || fail "zest tenant status --json is not the verifier's record"
zt delete --uuid "$uuid" >>"$work/zest-add.log" 2>&1 || fail "zest tenant delete failed"
echo "interop: zest tenant enrolled (payload, key derivation), showed PASS and deleted the agent"

# Keylime's tenant with --cert: its own CA (ca_util, keystore private.yml) makes the
# certificate package and sends its RevocationNotifier key, which zest's verifier takes.
cat >"$work/ca.conf" <<EOF
[ca]
version = 2.0
password = zest-interop
cert_country = US
cert_ca_name = Keylime Certificate Authority
cert_state = MA
cert_locality = Lexington
cert_organization = MITLL
cert_org_unit = 53
cert_ca_lifetime = 3650
cert_lifetime = 365
cert_bits = 2048
cert_crl_dist = http://localhost:38080/crl
EOF
mkdir -p "$work/include" && printf '#!/bin/sh\necho unpacked\n' >"$work/include/autorun.sh"
KEYLIME_CA_CONFIG="$work/ca.conf" tenant -c add -t 127.0.0.1 -tp "$aport" -u "$uuid" --runtime-policy "$work/policy.json" \
  --cert "$work/kl-ca" --include "$work/include" --verify >"$work/keylime-cert-add.log" 2>&1 || fail "keylime_tenant -c add --cert failed"
grep -q "Successful key derivation for Agent $uuid" "$work/keylime-cert-add.log" || fail "the agent did not prove K for the certificate package"
[ -f "$work/kl-ca/RevocationNotifier-private.pem" ] || fail "Keylime's tenant made no RevocationNotifier key"
tenant -c delete -u "$uuid" >>"$work/keylime-cert-add.log" 2>&1 || fail "keylime_tenant -c delete after --cert failed"
echo "interop: Keylime 7.14.3 tenant enrolled with --cert/--include (its package, its RevocationNotifier key) and deleted the agent"

# 2. Signed runtime policies (DSSE), both ways. Keylime's keylime-policy signs, zest's verifier
#    verifies (uploaded by both tenants); zest signs, Keylime's own code verifies and its
#    tenant uploads; a tampered envelope is refused with Keylime's 401.
kp() { "$venvs/keylime/bin/keylime-policy" "$@"; }
kpy() { "$venvs/keylime/bin/python" "$@"; }
kp sign runtime -r "$work/policy.json" -p "$work/kl-key.pem" -o "$work/kl-signed.json" >"$work/kl-sign.log" 2>&1 \
  || fail "keylime-policy sign runtime failed"
kpy - "$work/kl-key.pem" "$work/kl-key.pub" <<'PY' || fail "could not derive the public key"
import sys
from cryptography.hazmat.primitives import serialization as s
key = s.load_pem_private_key(open(sys.argv[1], "rb").read(), None)
open(sys.argv[2], "wb").write(key.public_key().public_bytes(s.Encoding.PEM, s.PublicFormat.SubjectPublicKeyInfo))
PY
zt runtime-policy create -n signed-by-keylime -f "$work/kl-signed.json" --sig-key "$work/kl-key.pub" \
  >"$work/dsse.log" 2>&1 || fail "zest refused a policy signed by keylime-policy"
tenant -c addruntimepolicy --runtime-policy-name signed-by-keylime-2 --runtime-policy "$work/kl-signed.json" \
  --runtime-policy-sig-key "$work/kl-key.pub" >>"$work/dsse.log" 2>&1 || fail "keylime_tenant could not upload a signed policy to zest"
kpy - "$work/kl-signed.json" "$work/kl-tampered.json" <<'PY'
import base64, json, sys
env = json.load(open(sys.argv[1]))
policy = json.loads(base64.b64decode(env["payload"]))
policy["excludes"] = [".*"]
env["payload"] = base64.b64encode(json.dumps(policy).encode()).decode()
json.dump(env, open(sys.argv[2], "w"))
PY
code=$(kpy - "$work/kl-tampered.json" "$work/kl-key.pub" <<'PY' | curl -s -o "$work/dsse-tampered.json" -w '%{http_code}' \
  --cacert "$data/cv_ca/cacert.crt" --cert "$data/cv_ca/client-cert.crt" --key "$data/cv_ca/client-private.pem" \
  -H 'Content-Type: application/json' --data-binary @- "https://127.0.0.1:$vport/v2.6/allowlists/tampered"
import base64, json, sys
print(json.dumps({"runtime_policy": base64.b64encode(open(sys.argv[1], "rb").read()).decode(),
                  "runtime_policy_key": base64.b64encode(open(sys.argv[2], "rb").read()).decode()}))
PY
)
[ "$code" = 401 ] && grep -q "failed DSSE signature verification" "$work/dsse-tampered.json" \
  || fail "a tampered envelope got $code: $(cat "$work/dsse-tampered.json")"
"$target/zest" policy sign runtime -r "$work/policy.json" -p "$work/z-key.pem" --pubkey-outfile "$work/z-key.pub" \
  -o "$work/z-signed.json" 2>>"$work/dsse.log" || fail "zest policy sign runtime failed"
"$target/zest" policy sign runtime -r "$work/policy.json" -b x509 -p "$work/z-x509-key.pem" -c "$work/z-cert.pem" \
  -o "$work/z-signed-x509.json" 2>>"$work/dsse.log" || fail "zest policy sign runtime --backend x509 failed"
kpy - "$work" <<'PY' >>"$work/dsse.log" 2>&1 || fail "Keylime's code refused an envelope zest signed"
import base64, hashlib, json, sys
from cryptography import x509
from cryptography.hazmat.primitives import serialization as s
from keylime import signing
from keylime.ima import ima
w = sys.argv[1]
policy = json.dumps(json.load(open(f"{w}/policy.json")))
pub = open(f"{w}/z-key.pub", "rb").read()
env = open(f"{w}/z-signed.json", "rb").read()
assert signing.verify_dsse_envelope(env, pub), "ecdsa envelope"
ima.verify_runtime_policy(env, pub, verify_sig=True)
e = json.loads(env)
assert base64.b64decode(e["payload"]).decode() == policy, "payload is json.dumps of the policy"
assert e["signatures"][0]["keyid"] == hashlib.sha256(pub).hexdigest(), "ecdsa keyid"
cert_pem = open(f"{w}/z-cert.pem", "rb").read()
cert_pub = x509.load_pem_x509_certificate(cert_pem).public_key().public_bytes(s.Encoding.PEM, s.PublicFormat.SubjectPublicKeyInfo)
env = open(f"{w}/z-signed-x509.json", "rb").read()
assert signing.verify_dsse_envelope(env, cert_pub), "x509 envelope"
assert json.loads(env)["signatures"][0]["keyid"] == base64.b64encode(cert_pem).decode(), "x509 keyid"
PY
tenant -c addruntimepolicy --runtime-policy-name signed-by-zest --runtime-policy "$work/z-signed.json" \
  --runtime-policy-sig-key "$work/z-key.pub" >>"$work/dsse.log" 2>&1 || fail "keylime_tenant refused a policy zest signed"
echo "interop: DSSE: zest verified keylime-policy's envelope (both tenants), refused a tampered one (401); Keylime verified zest's (ecdsa, x509)"

# 3. Runtime policies made from a rootfs, initramfs images, allowlists, base policies and
#    --algo: keylime-policy create runtime and zest policy create runtime on the same inputs.
[ "$(id -u)" = 0 ] || fail "keylime-policy runs as root only: run the interop tests as root"
bash tests/interop/policy_create.sh "$target/zest" "$venvs/keylime/bin/keylime-policy" "$venvs/keylime/bin/python" \
  "$work/policy-create" 2>"$work/policy-create.log" || fail "policy create runtime differs from keylime-policy"

# An existing Keylime PKI: a cv_ca made by Keylime's ca_util as its verifier's
# `tls_dir = generate` makes it (CA key only in private.yml, server and client keys encrypted
# PKCS#8), used unchanged by a zest verifier given Keylime's two password options.
kdata=$work/keylime-data
KEYLIME_CA_CONFIG="$work/ca.conf" kpy - "$kdata/cv_ca" <<'PY' >"$work/keylime-pki.log" 2>&1 || fail "Keylime's ca_util could not make a cv_ca"
import os, sys
from keylime import ca_util
d = sys.argv[1]
os.makedirs(d, 0o700)
ca_util.read_password("zest-interop")
ca_util.cmd_init(d)
ca_util.cmd_mkcert(d, "server", password="kl-server-pw", san_dns=["localhost"], san_ips=["127.0.0.1"])
ca_util.cmd_mkcert(d, "client", password="kl-client-pw")
PY
[ ! -e "$kdata/cv_ca/ca-private.pem" ] && grep -q "ENCRYPTED PRIVATE KEY" "$kdata/cv_ca/server-private.pem" \
  || fail "Keylime's cv_ca is not what this check expects"
kport=$(free_port)
mkdir -p "$work/kl-etc"
printf '[verifier]\nserver_key_password = kl-server-pw\nclient_key_password = kl-client-pw\n' >"$work/kl-etc/verifier.conf"
chmod 600 "$work/kl-etc/verifier.conf"
"$target/zest" --config-dir "$work/kl-etc" --data-dir "$kdata" verifier --verifier-port "$kport" >"$work/zest-keylime-pki.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$kport") 2>/dev/null && break; sleep 0.1; done
curl -sf --cacert "$kdata/cv_ca/cacert.crt" --cert "$kdata/cv_ca/client-cert.crt" --key "$kdata/cv_ca/client-private.pem" \
  --pass kl-client-pw "https://localhost:$kport/v2.6/agents/" >"$work/keylime-pki-agents.json" \
  || fail "a zest verifier on Keylime's cv_ca did not answer Keylime's client certificate"
grep -q '"uuids"' "$work/keylime-pki-agents.json" || fail "unexpected reply: $(cat "$work/keylime-pki-agents.json")"
echo "interop: a zest verifier served with a cv_ca made by Keylime's ca_util (encrypted keys, no ca-private.pem) and took its client certificate"

# 4. Switching from Keylime: databases Keylime's own code wrote (its migrations, its registrar
#    model, its verifier's handlers) brought over by `zest import keylime`: a dry run writes
#    nothing, --apply writes, and a second run finds everything in place.
"$venvs/keylime/bin/python" tests/interop/keylime_dbs.py "$work/keylime-dbs" >"$work/keylime-dbs.log" 2>&1 \
  || fail "Keylime's code did not make its databases"
import_keylime() {
  "$target/zest" --data-dir "$work/imported" import keylime --verifier-db "$work/keylime-dbs/cv_data.sqlite" \
    --registrar-db "sqlite:///$work/keylime-dbs/reg_data.sqlite" "$@" 2>>"$work/import.log"
}
import_keylime >"$work/import-dry.txt" || fail "zest import keylime (dry run) failed"
grep -q "would add enrolment of d432fbb3-d2f1-4a97-9ef7-75bd81c00000 (pull mode; runtime policy web" "$work/import-dry.txt" \
  && grep -q "dry run: nothing written" "$work/import-dry.txt" || fail "unexpected dry run: $(cat "$work/import-dry.txt")"
import_keylime --apply >"$work/import-apply.txt" || fail "zest import keylime --apply failed"
grep -q "written: 4 policies, 2 enrolments, 2 registrations" "$work/import-apply.txt" \
  || fail "unexpected import: $(cat "$work/import-apply.txt")"
import_keylime --apply >"$work/import-again.txt" || fail "zest import keylime --apply (again) failed"
grep -q "0 to add, 8 unchanged" "$work/import-again.txt" && grep -q "written: 0 policies, 0 enrolments, 0 registrations" \
  "$work/import-again.txt" || fail "a second import changed something: $(cat "$work/import-again.txt")"
echo "interop: zest import keylime took Keylime 7.14.3's own databases (2 agents, their policies and registrations), and a second run changed nothing"

# A fleet Keylime attested moves to zest: Keylime 7.14.3's own registrar and verifier attest
# the agent (enrolled by Keylime's tenant) and stop; zest imports their databases and, on
# Keylime's cv_ca, attests the same running agent, which neither registers nor is enrolled again.
KL_KEEP_AGENT=1 work="$work/kl-fleet" venvs="$venvs" target="$target" bash tests/interop/keylime_fleet.sh \
  >"$work/kl-fleet.out" 2>"$work/kl-fleet.err" || fail "Keylime's own verifier did not attest the agent: $(tail -n 40 "$work/kl-fleet.err")"
fleet() { sed -n "s/^$1=//p" "$work/kl-fleet.out"; }
pids+=("$(fleet agent_pid)")
moved=$work/moved
mkdir -p "$moved"
cp -r "$(fleet cv_ca)" "$moved/cv_ca"
"$target/zest" --data-dir "$moved" import keylime --verifier-db "$(fleet cv_data)" --registrar-db "$(fleet reg_data)" \
  --apply >"$work/moved-import.txt" 2>>"$work/import.log" || fail "zest import keylime of Keylime's fleet failed"
grep -q "written: 2 policies, 1 enrolments, 1 registrations" "$work/moved-import.txt" \
  || fail "unexpected import of Keylime's fleet: $(cat "$work/moved-import.txt")"
mport=$(free_port)
"$target/zest" --data-dir "$moved" verifier --verifier-port "$mport" --quote-interval 1 >"$work/zest-moved.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$mport") 2>/dev/null && break; sleep 0.1; done
before=$(fleet attestation_count)
moved_ok=""
for _ in $(seq 60); do
  if "$target/zest" --data-dir "$moved" tenant --verifier "127.0.0.1:$mport" status --uuid "$(fleet agent_uuid)" --json \
    >"$work/moved-status.json" 2>>"$work/moved-status.err" \
    && python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); sys.exit(0 if r["attestation_status"] == "PASS" and r["attestation_count"] > int(sys.argv[2]) else 1)' \
      "$work/moved-status.json" "$before"; then
    moved_ok=yes
    break
  fi
  sleep 0.5
done
[ -n "$moved_ok" ] || fail "zest did not attest the agent Keylime had attested: $(cat "$work/moved-status.json" 2>/dev/null)"
echo "interop: a fleet Keylime 7.14.3 attested (its registrar, tenant and verifier) is attested by zest after zest import keylime, on Keylime's cv_ca, with no new registration or enrolment"

# 5. API fuzzing of both services, with the tenant certificate. One worker: schemathesis'
#    generators are not thread-safe on CPython 3.11 (an AST recursion-depth SystemError).
for service in verifier:$vport registrar:$rtls; do
  name=${service%%:*} port=${service##*:}
  "$venvs/schemathesis/bin/st" run "https://127.0.0.1:$port/openapi.json" \
    --tls-verify "$data/cv_ca/cacert.crt" \
    --request-cert "$data/cv_ca/client-cert.crt" --request-cert-key "$data/cv_ca/client-private.pem" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
    --max-time "$fuzz_seconds" --workers 1 --seed 1 >"$work/fuzz-$name.log" 2>&1 \
    || fail "schemathesis found failures on the $name"
  echo "interop: schemathesis on the $name: $(grep -Eo '[0-9]+ generated, [0-9]+ passed' "$work/fuzz-$name.log" | tail -1)"
done
# The fuzzer must not have broken the server: it still answers.
curl -sf --cacert "$data/cv_ca/cacert.crt" --cert "$data/cv_ca/client-cert.crt" --key "$data/cv_ca/client-private.pem" \
  "https://127.0.0.1:$vport/version" >/dev/null || fail "the verifier stopped answering after the fuzz run"
