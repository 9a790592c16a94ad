#!/usr/bin/env bash
# Keylime 7.14.3's own Python registrar and verifier (pull mode) on loopback: the swtpm test
# agent registers with Keylime's registrar, Keylime's tenant enrols it, Keylime's verifier
# attests it (at least twice), then both services are stopped cleanly. Left behind in
# $work/keylime: cv_data.sqlite, reg_data.sqlite and cv_ca (Keylime's own CA, from
# `tls_dir = generate`).
# Env: work=DIR (made if missing), venvs=DIR (holds the keylime venv), target=DIR (holds the
# debug binaries zest-test-agent); KL_KEEP_AGENT=1 leaves the agent serving. Needs swtpm and
# tpm2-tools (the test agent), python3. Called by run.sh (the move of a Keylime fleet to zest).
set -euo pipefail
: "${work:?set work=DIR}" "${venvs:?set venvs=DIR}" "${target:?set target=DIR}"
mkdir -p "$work"
work=$(cd "$work" && pwd)
kl=$venvs/keylime/bin
kdir=$work/keylime          # KEYLIME_DIR: databases, cv_ca
etc=$work/keylime-etc       # Keylime's configuration files
mkdir -p "$kdir" "$etc"
kl_pids=()                  # service PIDs; each one leads its own process group (setsid)
agent_pid=""

kl_log_dump() {
  for log in "$work"/kl-*.log; do [ -f "$log" ] && { echo "--- $log"; tail -n 80 "$log"; }; done >&2
}
kl_fail() { echo "keylime_fleet: $*" >&2; kl_log_dump; exit 1; }

# Keylime's parent process ignores SIGTERM and waits for its workers, which drain on SIGTERM;
# so the whole process group gets SIGTERM (workers drain, parent exits, Manager shuts down).
kl_stop_group() {
  local pid=$1 i
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM -- "-$pid" 2>/dev/null || true
  for i in $(seq 150); do kill -0 -- "-$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 -- "-$pid" 2>/dev/null; then
    echo "keylime_fleet: process group $pid still alive after 15 s, SIGKILL" >&2
    kill -KILL -- "-$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}
kl_cleanup() {
  local p
  if [ -n "$agent_pid" ]; then kill -TERM "$agent_pid" 2>/dev/null || true; wait "$agent_pid" 2>/dev/null || true; fi
  # The agent first, then the verifier (so it stops polling), then the registrar.
  for p in "${kl_pids[@]}"; do kl_stop_group "$p"; done
  kl_pids=()
  agent_pid=""
}
trap kl_cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# setsid only execs in place (same PID, new process group) when the caller is not a group
# leader, which holds in a script without job control (no `set -m`).
kl_check_leader() {
  [ "$(ps -o pgid= -p "$1" | tr -d ' ')" = "$1" ] || kl_fail "$2 does not lead its own process group (job control on?)"
}
wait_port() { # port pid name
  local i
  for i in $(seq 300); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    kill -0 "$2" 2>/dev/null || kl_fail "$3 exited before listening on $1"
    sleep 0.1
  done
  kl_fail "$3 did not listen on $1 within 30 s"
}

command -v swtpm >/dev/null || kl_fail "swtpm not found (apt-get install swtpm swtpm-tools)"
command -v tpm2_startup >/dev/null || kl_fail "tpm2_startup not found (apt-get install tpm2-tools)"
[ -x "$kl/keylime_verifier" ] && [ -x "$kl/keylime_registrar" ] && [ -x "$kl/keylime_tenant" ] \
  || kl_fail "no Keylime venv at $venvs/keylime"
[ -x "$target/zest-test-agent" ] || kl_fail "no $target/zest-test-agent"
site=$("$kl/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
[ -f "$site/gpg.py" ] || echo "# stand-in: signing with GPG is not used by these runs" >"$site/gpg.py"

[ ! -e "$kdir/cv_data.sqlite" ] && [ ! -e "$kdir/reg_data.sqlite" ] \
  || { echo "keylime_fleet: $kdir already holds Keylime databases: give a fresh work=DIR" >&2; exit 1; }

vport=$(free_port); rport=$(free_port); rtls=$(free_port); aport=$(free_port)
uuid=${KL_AGENT_UUID:-6f1e2d3c-4b5a-4978-8a6b-5c4d3e2f1a0b}

# Configuration: the values keylime_upgrade_config --defaults writes from 7.14.3's templates
# (version 2.6), with ports, workers, intervals and the trust store changed for this run.
cat >"$etc/verifier.conf" <<EOF
[verifier]
version = 2.6
uuid = default
ip = 127.0.0.1
port = $vport
registrar_ip = 127.0.0.1
registrar_port = $rtls
enable_agent_mtls = True
tls_dir = generate
server_key = default
server_key_password =
server_cert = default
cert_subject_alternative_names =
trusted_client_ca = default
client_key = default
client_key_password =
client_cert = default
trusted_server_ca = default
authorization_provider = simple
database_url = sqlite
database_pool_sz_ovfl = 5,10
auto_migrate_db = True
num_workers = 1
max_workers = 1
exponential_backoff = False
retry_interval = 1
max_retries = 5
quote_interval = 1
max_upload_size = 104857600
request_timeout = 30.0
measured_boot_policy_name = accept-all
measured_boot_imports = []
measured_boot_evaluate = once
severity_labels = ["info", "notice", "warning", "error", "critical", "alert", "emergency"]
severity_policy = [{"event_id": ".*", "severity_label" : "emergency"}]
ignore_tomtou_errors = False
durable_attestation_import =
persistent_store_url =
transparency_log_url =
time_stamp_authority_url =
time_stamp_authority_certs_path =
persistent_store_format = json
persistent_store_encoding =
transparency_log_sign_algo = sha256
signed_attributes =
require_allow_list_signatures = False
mode = pull
challenge_lifetime = 1800
verification_timeout = 0
session_create_rate_limit_per_ip = 50
session_create_rate_limit_window_ip = 60
session_create_rate_limit_per_agent = 15
session_create_rate_limit_window_agent = 60
session_lifetime = 180
extend_token_on_attestation = True
auto_recover_attestation_failures = False
shutdown_drain_timeout = 2

[revocations]
enabled_revocation_notifications = []
zmq_ip = 127.0.0.1
zmq_port = 0
webhook_url =
EOF
cat >"$etc/registrar.conf" <<EOF
[registrar]
version = 2.6
ip = 127.0.0.1
port = $rport
tls_port = $rtls
tls_dir = default
server_key = default
server_key_password =
server_cert = default
cert_subject_alternative_names =
trusted_client_ca = default
authorization_provider = simple
database_url = sqlite
database_pool_sz_ovfl = 5,10
max_workers = 1
auto_migrate_db = True
durable_attestation_import =
persistent_store_url =
transparency_log_url =
time_stamp_authority_url =
time_stamp_authority_certs_path =
persistent_store_format = json
persistent_store_encoding =
transparency_log_sign_algo = sha256
signed_attributes = ek_tpm,aik_tpm,ekcert
tpm_identity = default
malformed_cert_action = warn
EOF
# The tenant trusts the test agent's EK CA (zest-test-agent copies it into tpm_cert_store).
cat >"$etc/tenant.conf" <<EOF
[tenant]
version = 2.6
verifier_ip = 127.0.0.1
verifier_port = $vport
registrar_ip = 127.0.0.1
registrar_port = $rtls
tls_dir = default
enable_agent_mtls = True
client_key = default
client_key_password =
client_cert = default
trusted_server_ca = default
tpm_cert_store = $kdir/tpm_cert_store
max_payload_size = 1048576
accept_tpm_hash_algs = ['sha512', 'sha384', 'sha256']
accept_tpm_encryption_algs = ['ecc', 'rsa']
accept_tpm_signing_algs = ['ecschnorr', 'rsassa']
exponential_backoff = False
retry_interval = 1
max_retries = 10
request_timeout = 30
require_ek_cert = True
ek_check_script =
mb_refstate =
EOF
cat >"$etc/ca.conf" <<EOF
[ca]
password = default
version = 2.6
cert_country = US
cert_ca_name = Keylime Certificate Authority
cert_state = MA
cert_locality = Lexington
cert_organization = Keylime
cert_org_unit = 53
cert_ca_lifetime = 3650
cert_lifetime = 365
cert_bits = 2048
cert_crl_dist = http://localhost:38080/crl
EOF
cat >"$etc/logging.conf" <<'EOF'
[logging]
version = 2.6

[loggers]
keys = root,keylime

[handlers]
keys = consoleHandler

[formatters]
keys = formatter

[formatter_formatter]
format = %(asctime)s.%(msecs)03d - %(name)s - %(levelname)s - %(message)s
datefmt = %Y-%m-%d %H:%M:%S

[logger_root]
level = INFO
handlers = consoleHandler

[handler_consoleHandler]
class = StreamHandler
level = INFO
formatter = formatter
args = (sys.stdout,)

[logger_keylime]
level = INFO
qualname = keylime
handlers =
EOF
chmod 600 "$etc"/*.conf

# Everything Keylime reads or writes is under $work: its config files by the KEYLIME_*_CONFIG
# variables (nothing from /etc/keylime), its state under KEYLIME_DIR.
klenv=(env KEYLIME_DIR="$kdir"
  KEYLIME_VERIFIER_CONFIG="$etc/verifier.conf" KEYLIME_REGISTRAR_CONFIG="$etc/registrar.conf"
  KEYLIME_TENANT_CONFIG="$etc/tenant.conf" KEYLIME_CA_CONFIG="$etc/ca.conf"
  KEYLIME_LOGGING_CONFIG="$etc/logging.conf")
t0=$SECONDS

# The verifier first: with tls_dir = generate it makes cv_ca (CA, server and client
# certificates), which the registrar (tls_dir = default) and the tenant use.
(cd "$kdir" && exec setsid "${klenv[@]}" "$kl/keylime_verifier") >"$work/kl-verifier.log" 2>&1 &
kl_pids+=($!)
kl_check_leader "${kl_pids[0]}" keylime_verifier
wait_port "$vport" "${kl_pids[0]}" keylime_verifier
[ -f "$kdir/cv_ca/cacert.crt" ] || kl_fail "the verifier made no $kdir/cv_ca/cacert.crt"
(cd "$kdir" && exec setsid "${klenv[@]}" "$kl/keylime_registrar") >"$work/kl-registrar.log" 2>&1 &
kl_pids+=($!)
kl_check_leader "${kl_pids[1]}" keylime_registrar
wait_port "$rport" "${kl_pids[1]}" keylime_registrar
wait_port "$rtls" "${kl_pids[1]}" keylime_registrar

# The agent: registers (HTTP, port) and activates at Keylime's registrar, trusts clients of
# Keylime's cv_ca (--data-dir: $kdir/cv_ca/cacert.crt) and copies its EK CA into
# $kdir/tpm_cert_store; serves what Keylime's keylime_agent serves.
"$target/zest-test-agent" --data-dir "$kdir" --registrar "http://127.0.0.1:$rport" --serve \
  --port "$aport" --uuid "$uuid" --write-policy "$work/kl-policy.json" --like-keylime-agent \
  >"$work/kl-agent.log" 2>&1 &
agent_pid=$!
for _ in $(seq 300); do
  grep -q "serving quotes" "$work/kl-agent.log" && break
  kill -0 "$agent_pid" 2>/dev/null || kl_fail "the test agent exited"
  sleep 0.1
done
grep -q "serving quotes" "$work/kl-agent.log" || kl_fail "the test agent did not register with Keylime's registrar"

tenant() { (cd "$kdir" && "${klenv[@]}" "$kl/keylime_tenant" "$@"); }
tenant -c add -t 127.0.0.1 -tp "$aport" -u "$uuid" --runtime-policy "$work/kl-policy.json" \
  >"$work/kl-tenant-add.log" 2>&1 || kl_fail "keylime_tenant -c add failed"
grep -q "added to Verifier" "$work/kl-tenant-add.log" || kl_fail "the tenant did not enrol the agent"

passed=""
for _ in $(seq 120); do
  if tenant -c status -u "$uuid" >"$work/kl-tenant-status.log" 2>&1 \
    && python3 - "$work/kl-tenant-status.log" <<'PY'
import json, re, sys
text = open(sys.argv[1]).read()
# The tenant logs the verifier's record as one JSON object on a line.
for m in re.finditer(r"\{.*\}", text):
    try:
        rec = json.loads(m.group(0))
    except ValueError:
        continue
    rec = next(iter(rec.values())) if len(rec) == 1 and isinstance(next(iter(rec.values())), dict) else rec
    if rec.get("operational_state") == "Get Quote" and rec.get("attestation_status") == "PASS" \
            and int(rec.get("attestation_count") or 0) >= 2:
        sys.exit(0)
sys.exit(1)
PY
  then
    passed=yes
    break
  fi
  sleep 0.5
done
[ -n "$passed" ] || kl_fail "keylime_tenant -c status never showed Get Quote / PASS with 2 attestations"
status_line=$(grep -o '"attestation_count": [0-9]*' "$work/kl-tenant-status.log" | tail -1)

# With KL_KEEP_AGENT=1 the agent stays up (its PID printed) for another verifier to take over.
if [ "${KL_KEEP_AGENT:-}" = 1 ]; then
  kept_agent=$agent_pid
  agent_pid=""
fi
kl_cleanup
for f in "$kdir/cv_data.sqlite" "$kdir/reg_data.sqlite" "$kdir/cv_ca/cacert.crt"; do
  [ -s "$f" ] || kl_fail "missing after stop: $f"
done
echo "keylime_fleet: Keylime 7.14.3 verifier attested the agent (${status_line}) in $((SECONDS - t0)) s; services stopped"
echo "agent_uuid=$uuid"
echo "agent_port=$aport"
echo "cv_data=$kdir/cv_data.sqlite"
echo "reg_data=$kdir/reg_data.sqlite"
echo "cv_ca=$kdir/cv_ca"
echo "attestation_count=${status_line##*: }"
[ -z "${kept_agent:-}" ] || echo "agent_pid=$kept_agent"
