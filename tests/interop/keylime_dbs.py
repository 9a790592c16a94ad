#!/usr/bin/env python3
"""Create Keylime 7.14.3 verifier + registrar databases holding a small pull-mode fleet,
using Keylime's own code paths wherever Keylime has one.

The interop run (tests/interop/run.sh) imports what this writes with `zest import keylime`.
Run with the interop venv's python:

    ~/.cache/zest-interop/keylime/bin/python keylime_dbs.py OUTDIR              # SQLite: OUTDIR/{cv,reg}_data.sqlite
    ~/.cache/zest-interop/keylime/bin/python keylime_dbs.py OUTDIR --database-url postgresql+psycopg2://zest@127.0.0.1:55432/keylime
    ~/.cache/zest-interop/keylime/bin/python keylime_dbs.py OUTDIR --verifier-url URL --registrar-url URL

Needs, besides keylime 7.14.3 itself: alembic (Keylime's migrations import it; keylime declares no requirements),
and psycopg2-binary for PostgreSQL.  OUTDIR always receives fleet.json (agent ids, private keys are NOT written) and
dump.txt (every row of every table, values shown with repr() so the stored encodings are visible).

What is Keylime's own code here (nothing writes SQL by hand):
  * schema: keylime.common.migrations.apply() -> alembic upgrade head (both engines)
  * registrar rows: keylime.models.RegistrarAgent, driven exactly as web/registrar/agents_controller.py
    create() + activate() drive it (update -> produce_ak_challenge -> commit; verify_ak_response -> commit);
    the agent side of TPM2_ActivateCredential is emulated in software (the EK private key is known here)
    and the auth_tag computed like rust-keylime: hex(HMAC-SHA384(base64(secret), agent_uuid)).
  * tenant side: keylime.cli.policies.process_policy() builds tpm_policy/mask/mb_policy/keys exactly as
    `keylime_tenant -c add` / `-c addruntimepolicy` do, and the JSON bodies have the shape of
    Tenant.do_cvadd() / Tenant.__convert_runtime_policy() (tenant.py:783-815, 1537-1561).
  * verifier rows: the real tornado handlers cloud_verifier_tornado.AllowlistHandler.post() and
    AgentsHandler.post() (what VerifierServer's v2 routes delegate to) are invoked on in-memory requests.
    The polling loop is not started (process_agent is replaced by a stub that captures the agent dict).
  * "it has been attesting for a while": the agent dict is advanced the way process_quote_response() /
    process_agent() advance it and written back with the same query(...).update(agent_db) as
    process_agent(); the IMA state is produced by keylime.ima.ima.process_measurement_list() over a
    synthetic IMA log that matches the agent's runtime policy, then persisted by
    cloud_verifier_tornado.store_attestation_state().
Synthetic (no TPM here): EK/AK key pairs, EK certificate, agent mTLS certificate, NK public key, IMA log, PCR values,
TPM clock info, timestamps.
"""

import argparse
import asyncio
import base64
import copy
import datetime
import hashlib
import hmac
import ipaddress
import json
import os
import shutil
import struct
import sys
import tempfile
import time

# --------------------------------------------------------------------------------------------------------------------
# Configuration: Keylime reads everything through keylime.config; every option can be overridden with
# KEYLIME_<COMPONENT>_<OPTION> environment variables (config.py:_get_env).  Point the component config files at
# an empty file so that a host /etc/keylime cannot leak in.
# --------------------------------------------------------------------------------------------------------------------

AGENT_API_VERSION = "2.2"  # what a rust-keylime agent of the 0.2.x line reports; any 2.x in api_version.VERSIONS works
VERIFIER_API_VERSION = "2.6"  # keylime 7.14.3 api_version.CURRENT_VERSION (v2 routes go to cloud_verifier_tornado)


def configure_environment(verifier_url: str, registrar_url: str, cfgdir: str) -> None:
    empty = os.path.join(cfgdir, "empty.conf")
    with open(empty, "w", encoding="utf-8") as f:
        f.write("# intentionally empty: all options come from KEYLIME_* environment variables\n")
    env = {
        "KEYLIME_VERIFIER_CONFIG": empty,
        "KEYLIME_REGISTRAR_CONFIG": empty,
        "KEYLIME_TENANT_CONFIG": empty,
        "KEYLIME_CA_CONFIG": empty,
        "KEYLIME_DIR": cfgdir,
        # databases
        "KEYLIME_VERIFIER_DATABASE_URL": verifier_url,
        "KEYLIME_REGISTRAR_DATABASE_URL": registrar_url,
        # keylime_db.make_engine() splits this for non-SQLite URLs; config.get() falls back to "" which would crash
        "KEYLIME_VERIFIER_DATABASE_POOL_SZ_OVFL": "5,10",
        "KEYLIME_REGISTRAR_DATABASE_POOL_SZ_OVFL": "5,10",
        # verifier (values of the shipped verifier.conf template)
        "KEYLIME_VERIFIER_MODE": "pull",
        "KEYLIME_VERIFIER_UUID": "default",
        "KEYLIME_VERIFIER_IP": "127.0.0.1",
        "KEYLIME_VERIFIER_PORT": "8881",
        "KEYLIME_VERIFIER_ENABLE_AGENT_MTLS": "False",  # True would make POST build an SSLContext from verifier certs
        "KEYLIME_VERIFIER_REQUIRE_ALLOW_LIST_SIGNATURES": "False",
        "KEYLIME_VERIFIER_DURABLE_ATTESTATION_IMPORT": "",
        "KEYLIME_VERIFIER_SEVERITY_LABELS": '["info", "notice", "warning", "error", "critical", "alert", "emergency"]',
        "KEYLIME_VERIFIER_SEVERITY_POLICY": '[{"event_id": ".*", "severity_label": "emergency"}]',
        "KEYLIME_VERIFIER_MEASURED_BOOT_IMPORTS": "[]",
        # registrar
        "KEYLIME_REGISTRAR_TPM_IDENTITY": "default",
        "KEYLIME_REGISTRAR_MALFORMED_CERT_ACTION": "warn",
        "KEYLIME_REGISTRAR_DURABLE_ATTESTATION_IMPORT": "",
        # tenant (shipped tenant.conf defaults)
        "KEYLIME_TENANT_ACCEPT_TPM_HASH_ALGS": "['sha512', 'sha384', 'sha256']",
        "KEYLIME_TENANT_ACCEPT_TPM_ENCRYPTION_ALGS": "['ecc', 'rsa']",
        "KEYLIME_TENANT_ACCEPT_TPM_SIGNING_ALGS": "['ecschnorr', 'rsassa']",
    }
    os.environ.update(env)


# --------------------------------------------------------------------------------------------------------------------
# Synthetic TPM / certificate material
# --------------------------------------------------------------------------------------------------------------------


def make_keys_and_certs(agent_id: str, with_ekcert: bool, ca: tuple):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    from keylime.tpm import tpm2_objects

    ek_priv = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ak_priv = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    nk_priv = rsa.generate_private_key(public_exponent=65537, key_size=2048)  # agent's mTLS/NK key

    # EK: TCG EK Credential Profile "low range" RSA-2048 template, marshalled by Keylime's own helper
    ek_tpm = tpm2_objects.ek_low_tpm2b_public_from_pubkey(ek_priv.public_key())

    # AK: restricted RSASSA-SHA256 signing key as created by tpm2_createak / rust-keylime.  Keylime has no
    # marshaller for a TPMT_RSA_SCHEME with a hash (NonAsymAlgSpecificParameters.to_bytes drops it), so marshal it
    # here per TPM 2.0 Part 2 and check it with Keylime's parser below.
    n = ak_priv.public_key().public_numbers().n.to_bytes(256, "big")
    tpmt_public = (
        struct.pack(">HHI", tpm2_objects.TPM_ALG_RSA, tpm2_objects.TPM_ALG_SHA256, tpm2_objects.AK_EXPECTED_ATTRS)
        + struct.pack(">H", 0)  # authPolicy: empty
        + struct.pack(">H", tpm2_objects.TPM2_ALG_NULL)  # symmetric: TPM_ALG_NULL
        + struct.pack(">HH", tpm2_objects.TPM_ALG_RSASSA, tpm2_objects.TPM_ALG_SHA256)  # scheme
        + struct.pack(">HI", 2048, 0)  # keyBits, exponent (0 = 65537)
        + struct.pack(">H", len(n))
        + n
    )
    ak_tpm = struct.pack(">H", len(tpmt_public)) + tpmt_public
    assert tpm2_objects.pubkey_from_tpm2b_public(ak_tpm).public_numbers() == ak_priv.public_key().public_numbers()
    assert tpm2_objects.pubkey_from_tpm2b_public(ek_tpm).public_numbers() == ek_priv.public_key().public_numbers()

    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    ekcert_der = None
    if with_ekcert:
        ca_key, ca_cert = ca
        tpm_manuf = x509.Name(
            [
                x509.NameAttribute(x509.ObjectIdentifier("2.23.133.2.1"), "id:53575446"),  # tpmManufacturer
                x509.NameAttribute(x509.ObjectIdentifier("2.23.133.2.2"), "SW   TPM"),  # tpmModel
                x509.NameAttribute(x509.ObjectIdentifier("2.23.133.2.3"), "id:20191023"),  # tpmVersion
            ]
        )
        ekcert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([]))
            .issuer_name(ca_cert.subject)
            .public_key(ek_priv.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=400))
            .not_valid_after(datetime.datetime(9999, 12, 31, 23, 59, 59, tzinfo=datetime.timezone.utc))
            .add_extension(x509.SubjectAlternativeName([x509.DirectoryName(tpm_manuf)]), critical=True)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, True, False, False, False, False, False, False), critical=True
            )  # keyEncipherment
            .add_extension(
                x509.ExtendedKeyUsage([x509.ObjectIdentifier("2.23.133.8.1")]), critical=False
            )  # tcg-kp-EKCertificate
            .sign(ca_key, hashes.SHA256())
        )
        ekcert_der = ekcert.public_bytes(serialization.Encoding.DER)

    mtls = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, agent_id)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, agent_id)]))
        .public_key(nk_priv.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(days=30))
        .not_valid_after(now + datetime.timedelta(days=335))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(nk_priv, hashes.SHA256())
    )
    mtls_pem = mtls.public_bytes(serialization.Encoding.PEM).decode()
    nk_pub_pem = (
        nk_priv.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return {
        "ek_priv": ek_priv,
        "ek_tpm": ek_tpm,
        "ak_tpm": ak_tpm,
        "ekcert_der": ekcert_der,
        "mtls_pem": mtls_pem,
        "nk_pub_pem": nk_pub_pem,
    }


def make_ek_ca():
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Zest Interop Test TPM Manufacturer"),
            x509.NameAttribute(NameOID.COMMON_NAME, "Zest Interop Test EK CA"),
        ]
    )
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=3650))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def software_activate_credential(blob_b64: str, ek_priv, ek_tpm: bytes, ak_tpm: bytes) -> bytes:
    """Inverse of keylime.tpm.tpm_util.makecredential() (what TPM2_ActivateCredential does on the agent)."""
    from cryptography.hazmat.primitives import hmac as chmac
    from cryptography.hazmat.primitives.asymmetric import padding
    from cryptography.hazmat.primitives.ciphers import Cipher, modes

    from keylime.tpm import tpm2_objects, tpm_util

    blob = base64.b64decode(blob_b64)
    magic, version = struct.unpack_from(">II", blob, 0)
    assert magic == 0xBADCC0DE and version == 1, "not a tpm2-tools credential blob"
    (id_obj_len,) = struct.unpack_from(">H", blob, 8)
    id_obj = blob[10 : 10 + id_obj_len]
    (secret_len,) = struct.unpack_from(">H", blob, 10 + id_obj_len)
    enc_seed = blob[12 + id_obj_len : 12 + id_obj_len + secret_len]
    (integrity_len,) = struct.unpack_from(">H", id_obj, 0)
    integrity = id_obj[2 : 2 + integrity_len]
    enc_identity = id_obj[2 + integrity_len :]

    _, name_alg = tpm2_objects.pubkey_parms_from_tpm2b_public(ek_tpm)
    hashfunc = tpm2_objects.HASH_FUNCS[name_alg]
    seed = ek_priv.decrypt(
        enc_seed,
        padding.OAEP(mgf=padding.MGF1(algorithm=hashfunc), algorithm=hashfunc, label=tpm_util.label_to_bytes("IDENTITY")),
    )
    ak_name = bytes.fromhex(tpm2_objects.get_tpm2b_public_name(ak_tpm))
    hmac_key = tpm_util.crypt_kdfa(hashfunc, seed, "INTEGRITY", b"", b"", hashfunc.digest_size << 3)
    h = chmac.HMAC(hmac_key, hashfunc)
    h.update(enc_identity)
    h.update(ak_name)
    h.verify(integrity)
    symkey, sym_alg = tpm_util.compute_protection_key_parms(ek_tpm, hashfunc, ak_name, seed)
    cipher = tpm2_objects.SYMCIPHER_FUNCS[sym_alg](symkey)
    dec = Cipher(cipher, modes.CFB(b"\x00" * (cipher.block_size >> 3))).decryptor()
    plain = dec.update(enc_identity) + dec.finalize()
    (n,) = struct.unpack_from(">H", plain, 0)
    return plain[2 : 2 + n]


# --------------------------------------------------------------------------------------------------------------------
# Registrar: RegistrarAgent model, as web/registrar/agents_controller.py uses it
# --------------------------------------------------------------------------------------------------------------------


def register_and_activate(agent_id: str, mat: dict, contact_port: int) -> dict:
    from keylime import crypto
    from keylime.models import RegistrarAgent

    # POST /v2.x/agents/:agent_id  (agents_controller.create, lines 70-98); body as rust-keylime sends it
    params = {
        "ekcert": base64.b64encode(mat["ekcert_der"]).decode() if mat["ekcert_der"] else None,
        "aik_tpm": base64.b64encode(mat["ak_tpm"]).decode(),
        "ek_tpm": base64.b64encode(mat["ek_tpm"]).decode(),
        "mtls_cert": mat["mtls_pem"],
        "ip": "127.0.0.1",
        "port": contact_port,
    }
    agent = RegistrarAgent.get(agent_id) or RegistrarAgent.empty()
    agent.update({"agent_id": agent_id, **params})
    challenge = agent.produce_ak_challenge()
    if not challenge or not agent.changes_valid:
        raise RuntimeError(f"registrar rejected {agent_id}: {agent.errors}")
    agent.commit_changes()

    # agent side: TPM2_ActivateCredential, then rust-keylime's auth_tag
    secret = software_activate_credential(challenge, mat["ek_priv"], mat["ek_tpm"], mat["ak_tpm"])
    mackey = base64.b64encode(secret)
    auth_tag = hmac.new(mackey, agent_id.encode(), hashlib.sha384).hexdigest()
    assert auth_tag == crypto.do_hmac(mackey, agent_id)

    # PUT /v2.x/agents/:agent_id/activate  (agents_controller.activate, lines 139-150)
    agent = RegistrarAgent.get(agent_id)
    if not agent.verify_ak_response(auth_tag):
        raise RuntimeError("activation failed")
    agent.commit_changes()

    # GET /v2.x/agents/:agent_id as the tenant sees it (render(), registrar_agent.py:465-479)
    agent = RegistrarAgent.get(agent_id)
    return {"auth_tag": auth_tag, "registrar_data": agent.render()}


# --------------------------------------------------------------------------------------------------------------------
# Runtime policies, IMA logs, MB refstate
# --------------------------------------------------------------------------------------------------------------------


def rand_hex(nbytes: int) -> str:
    return os.urandom(nbytes).hex()


FILES_WEB = ["/usr/bin/bash", "/usr/lib/systemd/systemd", "/usr/sbin/nginx", "/usr/lib64/libc.so.6",
             "/usr/lib64/ld-linux-x86-64.so.2", "/usr/bin/ls", "/usr/lib64/libssl.so.3", "/usr/bin/sudo"]
FILES_DB = ["/usr/bin/bash", "/usr/lib/systemd/systemd", "/usr/bin/postgres", "/usr/lib64/libc.so.6",
            "/usr/lib64/ld-linux-x86-64.so.2", "/usr/bin/ls", "/usr/lib64/libpq.so.5"]


def make_runtime_policy(files, boot_aggregate: str, keyring_cert_der=None, excludes=None) -> dict:
    from keylime.ima import ima

    policy = copy.deepcopy(ima.EMPTY_RUNTIME_POLICY)
    policy["meta"]["generator"] = int(ima.RUNTIME_POLICY_GENERATOR.LegacyAllowList)  # what keylime-policy writes
    policy["meta"]["timestamp"] = str(datetime.datetime.now())
    policy["digests"] = {"boot_aggregate": [boot_aggregate]}
    for p in files:
        policy["digests"][p] = [rand_hex(32)]
    policy["excludes"] = sorted(excludes or [])
    policy["ima"]["log_hash_alg"] = "sha1"
    policy["ima"]["ignored_keyrings"] = []
    if keyring_cert_der is not None:
        policy["keyrings"] = {".ima": [hashlib.sha256(keyring_cert_der).hexdigest()]}
    ima.validate_runtime_policy(policy)
    return policy


def ima_line(mode: str, data: str) -> str:
    """Build one ascii_runtime_measurements line; the template hash is computed from Keylime's own parse."""
    from keylime.common.algorithms import Hash
    from keylime.ima import ast

    probe = ast.Entry(f"10 {'11' * 20} {mode} {data}", None, ima_hash_alg=Hash.SHA1, pcr_hash_alg=Hash.SHA256)
    template_hash = hashlib.sha1(probe._bytes).hexdigest()  # pylint: disable=protected-access
    return f"10 {template_hash} {mode} {data}"


def make_ima_log(policy: dict, boot_aggregate: str, rounds: int, keyring_cert_der=None) -> list:
    lines = [ima_line("ima-ng", f"sha256:{boot_aggregate} boot_aggregate")]
    if keyring_cert_der is not None:
        digest = hashlib.sha256(keyring_cert_der).hexdigest()
        lines.append(ima_line("ima-buf", f"sha256:{digest} .ima {keyring_cert_der.hex()}"))
    files = [p for p in policy["digests"] if p != "boot_aggregate"]
    for i in range(rounds):
        p = files[i % len(files)]
        lines.append(ima_line("ima-ng", f"sha256:{policy['digests'][p][0]} {p}"))
    return lines


def make_ima_signing_cert():
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Zest Interop IMA signing key")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=10))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.DER), key


def make_mb_refstate() -> dict:
    """Reference state in the format expected by keylime/mba/elchecking/example.py (create_mb_policy output)."""
    owner = "77fa9abd-0359-4d32-bd60-28f4e78f784b"  # Microsoft's SignatureOwner GUID, as in real db/dbx lists
    hx = lambda n: "0x" + rand_hex(n)  # noqa: E731
    return {
        "has_secureboot": True,
        "scrtm_and_bios": [{"scrtm": {"sha256": hx(32)}, "platform_firmware": [{"sha256": hx(32)}, {"sha256": hx(32)}]}],
        "pk": [{"SignatureOwner": "55555555-0000-0000-0000-000000000000", "SignatureData": hx(64)}],
        "kek": [{"SignatureOwner": owner, "SignatureData": hx(64)}],
        "db": [{"SignatureOwner": owner, "SignatureData": hx(64)}],
        "dbx": [{"SignatureOwner": owner, "SignatureData": hx(32)}],
        "vendor_db": [],
        "mokdig": [{"sha256": hx(32)}],
        "mokxdig": [{"sha256": hx(32)}],
        "kernels": [
            {
                "shim_authcode_sha256": hx(32),
                "grub_authcode_sha256": hx(32),
                "kernel_authcode_sha256": hx(32),
                "initrd_plain_sha256": hx(32),
                "kernel_cmdline": r"\(hd0,gpt2\)/vmlinuz-6\.8\.0-45-generic root=UUID=[0-9a-f-]+ ro quiet splash",
            }
        ],
    }


# --------------------------------------------------------------------------------------------------------------------
# Verifier: the real tornado handlers on in-memory requests
# --------------------------------------------------------------------------------------------------------------------


class _Conn:
    """Minimal tornado.httputil.HTTPConnection stand-in that captures the response."""

    def __init__(self):
        self.context = None
        self.status = None
        self.chunks = []

    def set_close_callback(self, _cb):
        pass

    def _done(self):
        f = asyncio.get_running_loop().create_future()
        f.set_result(None)
        return f

    def write_headers(self, start_line, _headers, chunk=None):
        self.status = start_line.code
        if chunk:
            self.chunks.append(chunk)
        return self._done()

    def write(self, chunk):
        self.chunks.append(chunk)
        return self._done()

    def finish(self):
        pass


def call_handler(handler_cls, method: str, uri: str, body: dict):
    import tornado.httputil
    import tornado.web

    conn = _Conn()
    req = tornado.httputil.HTTPServerRequest(
        start_line=tornado.httputil.RequestStartLine(method, uri, "HTTP/1.1"),
        headers=tornado.httputil.HTTPHeaders({"Content-Type": "application/json", "Host": "127.0.0.1:8881"}),
        body=json.dumps(body).encode(),
        connection=conn,
    )
    handler = handler_cls(tornado.web.Application(), req, override=None)
    handler._transforms = []  # pylint: disable=protected-access  # normally set by RequestHandler._execute()
    getattr(handler, method.lower())()
    response = json.loads(b"".join(conn.chunks) or b"{}")
    return conn.status, response


def tenant_policy_args(**kw) -> dict:
    args = {
        "tpm_policy": None, "mask": None, "ima_sign_verification_keys": [], "allowlist": None,
        "allowlist_name": None, "ima_exclude": None, "runtime_policy": None, "runtime_policy_name": None,
        "runtime_policy_sig_key": None, "runtime_policy_checksum": None, "mb_policy": None, "mb_policy_name": None,
    }  # fmt: skip
    args.update(kw)
    return args


def tenant_cvadd_body(agent_id, reg_data, policies_tuple, v_b64, metadata, revocation_key, agent_port):
    """Body of Tenant.do_cvadd() (tenant.py:783-815)."""
    from keylime import config

    tpm_policy, mb_policy, mb_policy_name, rp_name, ima_keys, runtime_policy, rp_key = policies_tuple
    return {
        "v": v_b64,
        "cloudagent_ip": "127.0.0.1",
        "cloudagent_port": agent_port,
        "verifier_ip": "127.0.0.1",
        "verifier_port": 8881,
        "tpm_policy": json.dumps(tpm_policy),
        "runtime_policy": runtime_policy,
        "runtime_policy_name": rp_name,
        "runtime_policy_key": rp_key,
        "mb_policy": mb_policy,
        "mb_policy_name": mb_policy_name,
        "ima_sign_verification_keys": ima_keys,
        "metadata": json.dumps(metadata),
        "revocation_key": revocation_key,
        "accept_tpm_hash_algs": config.getlist("tenant", "accept_tpm_hash_algs"),
        "accept_tpm_encryption_algs": config.getlist("tenant", "accept_tpm_encryption_algs"),
        "accept_tpm_signing_algs": config.getlist("tenant", "accept_tpm_signing_algs"),
        "ak_tpm": reg_data["aik_tpm"],
        "mtls_cert": reg_data.get("mtls_cert", None),
        "supported_version": AGENT_API_VERSION,
    }


def advance_attestation(cvt, agent: dict, runtime_policy: dict, ima_lines: list, boottime: int, nk_pub_pem: str,
                        quotes: int, clock_ms: int, keyrings_expected: bool) -> None:
    """Bring a freshly POSTed pull-mode agent to 'attesting for a while' (GET_QUOTE, count>0, IMA state)."""
    from keylime.agentstates import TPMClockInfo
    from keylime.common import states
    from keylime.common.algorithms import Hash
    from keylime.ima import ima

    agent_id = agent["agent_id"]
    aas = cvt.get_AgentAttestStates().get_by_agent_id(agent_id)

    # IMA: the verifier walks the log the agent returns, up to the entry matching the quoted PCR 10
    pcr10_hex, failure = ima.process_measurement_list(None, ima_lines, copy.deepcopy(runtime_policy),
                                                      hash_alg=Hash.SHA256)
    assert not failure, failure.get_event_ids()
    aas.set_boottime(boottime)
    _, failure = ima.process_measurement_list(aas, ima_lines, copy.deepcopy(runtime_policy), pcrval=pcr10_hex,
                                              ima_keyrings=aas.get_ima_keyrings(), hash_alg=Hash.SHA256)
    assert not failure, failure.get_event_ids()
    assert aas.get_next_ima_ml_entry() == len(ima_lines)
    assert bool(aas.get_ima_keyrings().to_json()) == keyrings_expected

    # process_quote_response() (cloud_verifier_common.py:103-224) after `quotes` good quotes; process_agent()
    # moved START -> GET_QUOTE -> PROVIDE_V (V delivered) -> GET_QUOTE (cloud_verifier_tornado.py:2691-2730)
    now = int(time.time())
    agent["hash_alg"] = "sha256"
    agent["enc_alg"] = "rsa"
    agent["sign_alg"] = "rsassa"
    agent["public_key"] = nk_pub_pem
    agent["attestation_count"] = quotes
    agent["last_received_quote"] = now
    agent["last_successful_attestation"] = now
    agent["tpm_clockinfo"] = TPMClockInfo(clock=clock_ms, resetcount=3, restartcount=0, safe=1).to_dict()
    agent["operational_state"] = states.GET_QUOTE
    agent["num_retries"] = 0

    # the write process_agent() does ("propagate all state", cloud_verifier_tornado.py:2650-2672)
    agent_db = dict(agent)
    for key in cvt.exclude_db:
        agent_db.pop(key, None)
    with cvt.session_context() as session:
        rows = (
            session.query(cvt.VerfierMain)
            .filter_by(agent_id=agent_id)
            .filter(cvt.VerfierMain.operational_state != states.TERMINATED)
            .filter(cvt.VerfierMain.operational_state != states.TENANT_FAILED)
            .update(agent_db)
        )
    assert rows == 1
    # boottime / ima_pcrs / pcr10 / next_ima_ml_entry / learned_ima_keyrings (cloud_verifier_tornado.py:399-422)
    cvt.store_attestation_state(aas)


def verify_readback(cvt, fleet) -> None:
    """Read the rows back through the consumers Keylime itself uses, to prove the fleet is usable as-is."""
    import ast as pyast

    from keylime import cloud_verifier_common, crypto
    from keylime.ima import file_signatures, ima
    from keylime.models import RegistrarAgent
    from keylime.models.verifier import VerifierAgent
    from sqlalchemy.orm import joinedload

    for a in fleet:
        agent_id = a["agent_id"]
        reg = RegistrarAgent.get(agent_id)
        assert reg.active and reg.regcount == 1
        assert crypto.do_hmac(reg.key.encode(), agent_id) == a["auth_tag"]  # registrar_agent.py:437-443
        assert reg.render()["aik_tpm"] == base64.b64encode(a["mat"]["ak_tpm"]).decode()
        with cvt.session_context() as session:
            row = (
                session.query(cvt.VerfierMain)
                .options(joinedload(cvt.VerfierMain.ima_policy))
                .options(joinedload(cvt.VerfierMain.mb_policy))
                .filter_by(agent_id=agent_id)
                .one()
            )
            d = cvt._from_db_obj(row)  # pylint: disable=protected-access  # what activate_agents() builds
            assert isinstance(d["tpm_policy"], str)  # JSONPickleType hands back the inner JSON *string*
            assert "mask" in pyast.literal_eval(d["tpm_policy"])  # cloud_verifier_common.prepare_get_quote()
            file_signatures.ImaKeyrings.from_json(dict(row.learned_ima_keyrings))  # activate_agents()
            assert ima.deserialize_runtime_policy(row.ima_policy.ima_policy)["meta"]["version"] == 1
            status = cloud_verifier_common.process_get_status(row)
            assert status["attestation_status"] == "PASS", status

    # the new-style model (used by the push-mode code) reads the same rows; its Dictionary type unwraps the double
    # encoding (models/base/types/dictionary.py:89-91).  db_manager is a single global, so rebind it.
    from keylime.models import db_manager

    db_manager.dispose()
    db_manager.make_engine("cloud_verifier")
    for a in fleet:
        va = VerifierAgent.get(a["agent_id"])
        assert isinstance(va.tpm_policy, dict) and "mask" in va.tpm_policy, va.tpm_policy
        assert va.accept_tpm_hash_algs == ["sha512", "sha384", "sha256"]


# --------------------------------------------------------------------------------------------------------------------
# Dump
# --------------------------------------------------------------------------------------------------------------------


def dump(urls: dict, out) -> None:
    import sqlalchemy as sa

    seen = set()
    for label, url in urls.items():
        engine = sa.create_engine(url)
        with engine.connect() as conn:
            insp = sa.inspect(conn)
            for table in sorted(insp.get_table_names()):
                if (url, table) in seen:
                    continue
                seen.add((url, table))
                cols = [c["name"] for c in insp.get_columns(table)]
                rows = conn.execute(sa.text(f'SELECT * FROM "{table}"')).fetchall()
                print(f"===== [{label}] {table}: {len(rows)} row(s)", file=out)
                for i, row in enumerate(rows):
                    print(f"--- row {i}", file=out)
                    for c, v in zip(cols, row):
                        if isinstance(v, memoryview):
                            v = bytes(v)
                        print(f"  {c} = {v!r}", file=out)
        engine.dispose()


# --------------------------------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("outdir")
    ap.add_argument("--database-url", help="one SQLAlchemy URL for both services (tables do not collide)")
    ap.add_argument("--verifier-url")
    ap.add_argument("--registrar-url")
    ap.add_argument("--force", action="store_true", help="replace existing SQLite files in OUTDIR")
    args = ap.parse_args()

    outdir = os.path.abspath(args.outdir)
    os.makedirs(outdir, exist_ok=True)
    if args.database_url:
        ver_url = reg_url = args.database_url
    else:
        ver_url = args.verifier_url or f"sqlite:///{os.path.join(outdir, 'cv_data.sqlite')}"
        reg_url = args.registrar_url or f"sqlite:///{os.path.join(outdir, 'reg_data.sqlite')}"
    for url in {ver_url, reg_url}:
        if url.startswith("sqlite:///"):
            path = url[len("sqlite:///") :]
            if os.path.exists(path):
                if not args.force:
                    sys.exit(f"{path} exists (use --force to replace it)")
                os.unlink(path)

    cfgdir = tempfile.mkdtemp(prefix="klimport-cfg-")
    configure_environment(ver_url, reg_url, cfgdir)

    # ---- schema: Keylime's alembic migrations (keylime/common/migrations.py) ----
    from keylime.common.migrations import apply

    apply("registrar")
    apply("cloud_verifier")

    from keylime import keylime_logging  # noqa: F401  (imported for its logging setup side effects)
    from keylime.cmd.user_data_encrypt import encrypt as user_data_encrypt
    from keylime.mba import mba
    from keylime.models import db_manager

    db_manager.make_engine("registrar")
    mba.load_imports(skip_custom_policies=True)  # as Tenant.__init__ does (tenant.py:167)

    ek_ca = make_ek_ca()
    fleet = [
        {"agent_id": "d432fbb3-d2f1-4a97-9ef7-75bd81c00000", "port": 9002, "ekcert": True, "name": "web-01"},
        {"agent_id": "8c2e6f2a-6b1e-4a0c-9a4d-2f1b3c4d5e6f", "port": 9003, "ekcert": False, "name": "db-01"},
    ]

    # ---- registrar ----
    for a in fleet:
        a["mat"] = make_keys_and_certs(a["agent_id"], a["ekcert"], ek_ca)
        a.update(register_and_activate(a["agent_id"], a["mat"], a["port"]))

    # ---- tenant-side inputs ----
    from keylime.cli import policies as tenant_policies

    work = tempfile.mkdtemp(prefix="klimport-tenant-")
    boot_agg = rand_hex(32)
    ima_cert_der, _ = make_ima_signing_cert()

    web_policy = make_runtime_policy(FILES_WEB, boot_agg, excludes=["/tmp/.*", "/var/log/.*"])
    web_policy_path = os.path.join(work, "web-policy.json")
    with open(web_policy_path, "w", encoding="utf-8") as f:
        json.dump(web_policy, f, indent=2)  # keylime-policy output is pretty-printed; verifier stores file text

    db_policy = make_runtime_policy(FILES_DB, boot_agg, keyring_cert_der=ima_cert_der)
    db_policy_path = os.path.join(work, "db-01-policy.json")
    with open(db_policy_path, "w", encoding="utf-8") as f:
        json.dump(db_policy, f)

    mb_path = os.path.join(work, "mb-refstate.json")
    with open(mb_path, "w", encoding="utf-8") as f:
        json.dump(make_mb_refstate(), f, indent=2)

    # deprecated tenant --sign_verification_key path, to show the ima_sign_verification_keys encoding
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    sigkey_path = os.path.join(work, "ima-pub.pem")
    with open(sigkey_path, "wb") as f:
        f.write(ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))

    from cryptography.hazmat.primitives.asymmetric import rsa

    revocation_pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    ).decode()  # what ca_util writes as RevocationNotifier-private.pem when the tenant uses --cert

    import keylime.cloud_verifier_tornado as cvt

    captured = {}

    async def _capture_process_agent(agent, new_state, *_a, **_k):  # replaces the polling loop entry point
        captured[agent["agent_id"]] = (agent, new_state)

    cvt.process_agent = _capture_process_agent

    async def verifier_side():
        # keylime_tenant -c addruntimepolicy --runtime-policy-name web --runtime-policy web-policy.json
        #                --tpm_policy '{"15":["000...0"]}'
        pol = tenant_policies.process_policy(tenant_policy_args(
            runtime_policy=web_policy_path, runtime_policy_name="web",
            tpm_policy=json.dumps({"15": ["0" * 64]})))
        body = {"tpm_policy": json.dumps(pol[0]), "runtime_policy": pol[5], "runtime_policy_key": pol[6]}
        status, resp = call_handler(cvt.AllowlistHandler, "POST", f"/v{VERIFIER_API_VERSION}/allowlists/web", body)
        assert status == 201, (status, resp)

        # web-01: keylime_tenant -c add -u <id> --runtime-policy-name web --tpm_policy '{"15":["000...0"]}' -k keyfile
        a = fleet[0]
        pol = tenant_policies.process_policy(tenant_policy_args(
            runtime_policy_name="web", tpm_policy=json.dumps({"15": ["0" * 64]})))
        kuv = user_data_encrypt(b"zest interop payload for " + a["agent_id"].encode())
        a["body"] = tenant_cvadd_body(a["agent_id"], a["registrar_data"], pol,
                                      base64.b64encode(kuv["v"]).decode(), {}, "", a["port"])
        # db-01: own (unnamed) runtime policy + measured-boot policy + deprecated verification key + --cert metadata
        b = fleet[1]
        pol = tenant_policies.process_policy(tenant_policy_args(
            runtime_policy=db_policy_path, mb_policy=mb_path, ima_sign_verification_keys=[sigkey_path]))
        kuv = user_data_encrypt(b"zest interop payload for " + b["agent_id"].encode())
        b["body"] = tenant_cvadd_body(
            b["agent_id"], b["registrar_data"], pol, base64.b64encode(kuv["v"]).decode(),
            {"cert_serial": 2, "subject": f"CN={b['agent_id']},OU=53,O=MITLL,L=Lexington,ST=MA,C=US"},
            revocation_pem, b["port"])
        for agent in fleet:
            status, resp = call_handler(cvt.AgentsHandler, "POST",
                                        f"/v{VERIFIER_API_VERSION}/agents/{agent['agent_id']}", agent["body"])
            assert status == 200, (agent["agent_id"], status, resp)
        await asyncio.sleep(0)  # let the captured ensure_future(process_agent(...)) run

    asyncio.run(verifier_side())

    boottime = int(time.time()) - 6 * 3600
    advance_attestation(cvt, captured[fleet[0]["agent_id"]][0], web_policy,
                        make_ima_log(web_policy, boot_agg, 140), boottime, fleet[0]["mat"]["nk_pub_pem"],
                        quotes=9871, clock_ms=21_600_123, keyrings_expected=False)
    advance_attestation(cvt, captured[fleet[1]["agent_id"]][0], db_policy,
                        make_ima_log(db_policy, boot_agg, 57, keyring_cert_der=ima_cert_der), boottime - 86400,
                        fleet[1]["mat"]["nk_pub_pem"], quotes=44_012, clock_ms=108_000_456, keyrings_expected=True)

    verify_readback(cvt, fleet)

    summary = {
        "verifier_url": ver_url,
        "registrar_url": reg_url,
        "agents": [
            {"agent_id": a["agent_id"], "name": a["name"], "contact": f"127.0.0.1:{a['port']}",
             "auth_tag": a["auth_tag"], "has_ekcert": a["ekcert"]}
            for a in fleet
        ],
    }
    with open(os.path.join(outdir, "fleet.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
    with open(os.path.join(outdir, "dump.txt"), "w", encoding="utf-8") as f:
        dump({"verifier": ver_url, "registrar": reg_url} if ver_url != reg_url else {"verifier+registrar": ver_url}, f)
    shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(cfgdir, ignore_errors=True)
    print(json.dumps(summary, indent=2))
    print(f"rows dumped to {os.path.join(outdir, 'dump.txt')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
