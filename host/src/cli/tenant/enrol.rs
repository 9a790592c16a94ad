//! `zest tenant add`, `update` and `delete`: an agent's enrolment at the verifier, with the
//! registrar's word on the agent, its identity quote and the bootstrap key's U half.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

use super::AddArgs;
use super::connection::{Server, Tenant, join_host_port, member, set_member};
use crate::agent_client::{AgentClient, CURRENT_AGENT_VERSION, KeyHalf, ukey_body};
use crate::bootstrap::BootstrapKey;

/// Keylime's tenant-side check of a runtime policy and its signing key
/// (`ima.read_runtime_policy`): an envelope needs the key, a key needs an envelope, and the
/// signature must verify. Returns `runtime_policy_key` as sent: base64 of the key file.
pub(super) fn signature_key(policy: &Path, document: &[u8], key: Option<&Path>) -> anyhow::Result<String> {
    use crate::dsse::{Envelope, VerifyingKey, is_envelope};
    let failed = |why: &str| {
        anyhow!(
            "Validation for runtime policy {} failed! Error: {why}",
            policy.display()
        )
    };
    match (is_envelope(document), key) {
        (false, None) => Ok(String::new()),
        (true, None) => Err(failed(
            "Runtime policy signature verification required but no key was given! (--runtime-policy-sig-key)",
        )),
        (false, Some(_)) => Err(failed("Runtime policy is not signed!")),
        (true, Some(key)) => {
            let pem =
                std::fs::read(key).with_context(|| format!("reading the signing key {}", key.display()))?;
            let public = VerifyingKey::from_pem(&pem).with_context(|| format!("{}", key.display()))?;
            Envelope::parse(document)
                .map_err(|e| failed(&e.to_string()))?
                .verify(&public)
                .map_err(|_| failed("Runtime policy failed DSSE signature verification!"))?;
            Ok(B64.encode(pem))
        }
    }
}

pub(super) fn read_json_file(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading the {what} {}", path.display()))?;
    serde_json::from_slice::<Value>(&bytes)
        .with_context(|| format!("{}: the {what} is not JSON", path.display()))?;
    Ok(bytes)
}

/// PCRs a measured-boot policy needs quoted (Keylime: 0–9 and 11–15 with a refstate).
pub(super) const MB_PCRS: [u32; 15] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 14, 15];
pub(super) const IMA_PCR: u32 = 10;

/// Keylime's `tpm_policy` with its `mask`: the PCRs it names, PCR 10 with a runtime policy,
/// the boot PCRs with a measured-boot policy.
pub(super) fn tpm_policy(text: &str, runtime: bool, measured_boot: bool) -> anyhow::Result<String> {
    let mut policy: serde_json::Map<String, Value> = serde_json::from_str(text)
        .context("--tpm-policy must be a JSON object such as {\"15\": [\"0000…\"]}")?;
    let mut mask: u32 = 0;
    for key in policy.keys() {
        if key == "mask" {
            continue;
        }
        let pcr: u32 = key
            .parse()
            .ok()
            .filter(|p| *p < 24)
            .ok_or_else(|| anyhow!("--tpm-policy: {key} is not a PCR number (0–23)"))?;
        mask |= 1 << pcr;
    }
    if runtime {
        mask |= 1 << IMA_PCR;
    }
    if measured_boot {
        for pcr in MB_PCRS {
            mask |= 1 << pcr;
        }
    }
    policy.insert("mask".into(), json!(format!("0x{mask:x}")));
    Ok(Value::Object(policy).to_string())
}

pub(super) async fn add_agent(tenant: &Tenant, add: &AddArgs) -> anyhow::Result<()> {
    // The registrar vouches for the agent: its AK, its certificate, where it listens.
    let url = tenant
        .url(Server::Registrar, &format!("agents/{}", add.uuid))
        .await?;
    let reply = tenant.send(Server::Registrar, tenant.http.get(url)).await?;
    match reply.status {
        200 => {}
        404 => bail!(
            "agent {} is not registered (or not activated) at the registrar {}; start the agent first",
            add.uuid,
            tenant.conn.registrar
        ),
        s => bail!(
            "reading agent {} from the registrar: it answered {s}: {}",
            add.uuid,
            member(&reply.body, "status").as_str().unwrap_or("")
        ),
    }
    // Registrars answer 404 for an agent that has not completed activation.
    let reg = reply.results();
    let ak = reg["aik_tpm"]
        .as_str()
        .ok_or_else(|| anyhow!("the registrar's record of {} has no aik_tpm", add.uuid))?;

    let (runtime, runtime_key) = match (&add.runtime_policy, &add.runtime_policy_name) {
        (Some(file), _) => {
            let document = read_json_file(file, "runtime policy")?;
            let key = signature_key(file, &document, add.runtime_policy_sig_key.as_deref())?;
            (Some(B64.encode(document)), key)
        }
        _ => (None, String::new()),
    };
    let mb = match &add.mb_policy {
        Some(file) => Some(String::from_utf8(read_json_file(file, "measured-boot policy")?)?),
        None => None,
    };
    let uses_runtime = runtime.is_some() || add.runtime_policy_name.is_some();
    let uses_mb = mb.is_some() || add.mb_policy_name.is_some();
    if add.verify && add.payload.is_none() && add.cert.is_none() {
        bail!("--verify only works when a payload is delivered to the agent (--payload or --cert)");
    }
    let package = match &add.cert {
        // Keylime's `--cert default`: the tenant's own CA directory.
        Some(dir) if dir.as_os_str() == "default" => {
            let dir = tenant.conn.ca_cert.parent().unwrap_or(Path::new("."));
            Some(crate::cli::cert_package::build(dir, &add.uuid, &add.include)?)
        }
        Some(dir) => Some(crate::cli::cert_package::build(dir, &add.uuid, &add.include)?),
        None => None,
    };
    let payload = match &add.payload {
        None => match &package {
            Some(p) if p.zip.len() > MAX_PAYLOAD => {
                bail!("the certificate package is larger than {MAX_PAYLOAD} bytes: include less")
            }
            Some(p) => Some(p.zip.clone()),
            None => None,
        },
        Some(file) => {
            let bytes =
                std::fs::read(file).with_context(|| format!("reading the payload {}", file.display()))?;
            if bytes.len() > MAX_PAYLOAD {
                bail!(
                    "{}: the payload is larger than {MAX_PAYLOAD} bytes",
                    file.display()
                );
            }
            Some(bytes)
        }
    };
    let mut body = json!({
        "v": null,
        "tpm_policy": tpm_policy(&add.tpm_policy, uses_runtime, uses_mb)?,
        "runtime_policy": runtime.unwrap_or_default(),
        "runtime_policy_name": add.runtime_policy_name.clone().unwrap_or_default(),
        "runtime_policy_key": runtime_key,
        "mb_policy": mb,
        "mb_policy_name": add.mb_policy_name.clone().unwrap_or_default(),
        "ima_sign_verification_keys": "",
        "metadata": package.as_ref().map_or_else(|| "{}".to_owned(), |p| p.metadata.clone()),
        "revocation_key": package.as_ref().map_or("", |p| p.revocation_key.as_str()),
        "accept_tpm_hash_algs": tenant.conn.accept.hash,
        "accept_tpm_encryption_algs": tenant.conn.accept.encryption,
        "accept_tpm_signing_algs": tenant.conn.accept.signing,
        "ak_tpm": ak,
    });
    let mut keys: Option<(AgentClient, String, BootstrapKey)> = None;
    let (mode, place) = if add.push {
        ("push", String::new())
    } else {
        let ip = add
            .ip
            .clone()
            .or_else(|| reg["ip"].as_str().map(str::to_owned))
            .ok_or_else(|| anyhow!("agent {} told the registrar no address; give --ip", add.uuid))?;
        let port = add
            .port
            .or_else(|| reg["port"].as_u64().and_then(|p| u16::try_from(p).ok()))
            .ok_or_else(|| anyhow!("agent {} told the registrar no port; give --port", add.uuid))?;
        let cert = reg["mtls_cert"]
            .as_str()
            .filter(|c| c.contains("BEGIN CERTIFICATE"))
            .ok_or_else(|| {
                anyhow!(
                    "agent {} registered without an mTLS certificate; pull mode needs one (or use --push)",
                    add.uuid
                )
            })?;
        set_member(&mut body, "cloudagent_ip", json!(ip));
        set_member(&mut body, "cloudagent_port", json!(port));
        set_member(&mut body, "mtls_cert", json!(cert));
        // Like Keylime's tenant: the agent must show a quote from the registered AK that binds
        // its NK key (PCR 16) before anything is enrolled or sent to it.
        let (agent, version) = connect_agent(tenant, &ip, port, cert).await?;
        eprintln!(
            "checking agent {}'s identity quote at {}…",
            add.uuid,
            agent.base()
        );
        let nk = agent
            .identity_quote(&version, ak, &tenant.conn.accept)
            .await
            .map_err(agent_error)?;
        eprintln!("identity quote verified: signed by the registered AK, NK key bound in PCR 16");
        if let Some(payload) = &payload {
            let key = BootstrapKey::generate()?;
            let ukey = ukey_body(&add.uuid, &nk, &key, payload).map_err(|e| anyhow!(e))?;
            agent
                .deliver_key(&version, KeyHalf::U, &ukey)
                .await
                .map_err(agent_error)?;
            eprintln!(
                "U and the encrypted payload ({} bytes) delivered to the agent",
                payload.len()
            );
            set_member(&mut body, "v", json!(B64.encode(key.v)));
            keys = Some((agent, version, key));
        }
        ("pull", format!(" at {}", join_host_port(&ip, port)))
    };
    let url = tenant
        .url(Server::Verifier, &format!("agents/{}", add.uuid))
        .await?;
    tenant
        .expect(
            Server::Verifier,
            tenant.http.post(url).json(&body),
            &format!("enrolling {}", add.uuid),
        )
        .await?;
    if let (true, Some((agent, version, key))) = (add.verify, &keys) {
        eprintln!("waiting for the agent to rebuild K (the verifier releases V after a good quote)…");
        if let Err(e) = agent.verify_key(version, &key.k, Duration::from_secs(60)).await {
            // Keylime stops attesting an agent that cannot prove the key.
            let stop = tenant
                .url(Server::Verifier, &format!("agents/{}/stop", add.uuid))
                .await?;
            let _ = tenant.send(Server::Verifier, tenant.http.put(stop)).await;
            return Err(anyhow!(e).context(format!(
                "agent {} did not prove the bootstrap key; attesting it stopped",
                add.uuid
            )));
        }
        eprintln!("the agent proved K: the payload is in its hands");
    }
    println!(
        "agent {} enrolled in {mode} mode{place}; `zest tenant status --uuid {}` shows its attestation",
        add.uuid, add.uuid
    );
    Ok(())
}

pub(super) async fn delete_agent(tenant: &Tenant, uuid: &str, missing_ok: bool) -> anyhow::Result<()> {
    let url = tenant.url(Server::Verifier, &format!("agents/{uuid}")).await?;
    let reply = tenant.send(Server::Verifier, tenant.http.delete(&url)).await?;
    match reply.status {
        200 => {}
        // Keylime's verifier answers 202 while it finishes a round; wait until the agent is gone.
        202 => {
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            loop {
                let r = tenant.send(Server::Verifier, tenant.http.get(&url)).await?;
                if r.status == 404 {
                    break;
                }
                if std::time::Instant::now() > deadline {
                    bail!("agent {uuid} was still on the verifier 30 s after the delete request");
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
        404 if missing_ok => return Ok(()),
        404 => bail!(
            "agent {uuid} is not enrolled at the verifier {}",
            tenant.conn.verifier
        ),
        s => bail!(
            "deleting {uuid}: the verifier answered {s}: {}",
            member(&reply.body, "status").as_str().unwrap_or("")
        ),
    }
    if !missing_ok {
        println!("agent {uuid} removed from the verifier");
    }
    Ok(())
}

/// Largest payload sent to an agent (Keylime's `max_payload_size`).
pub(super) const MAX_PAYLOAD: usize = 1 << 20;

/// The pull agent at `ip:port`, trusting only `cert` (its certificate as the registrar holds
/// it), and the newest API version both speak (2.6 when the agent does not answer
/// `/version`).
pub(super) async fn connect_agent(
    tenant: &Tenant,
    ip: &str,
    port: u16,
    cert: &str,
) -> anyhow::Result<(AgentClient, String)> {
    let identity = tenant.conn.identity_pem()?;
    let agent = AgentClient::connect(ip, port, cert, &identity, Duration::from_secs(30))
        .context("the agent's mTLS connection")?;
    let version = agent
        .negotiate()
        .await
        .unwrap_or_else(|_| CURRENT_AGENT_VERSION.to_owned());
    Ok((agent, version))
}

/// An error of the agent-facing client, with a hint when the agent could not be reached.
pub(super) fn agent_error(why: String) -> anyhow::Error {
    if why.starts_with("cannot reach") {
        anyhow!("{why} (is it running, and does it trust the tenant's CA?)")
    } else {
        anyhow!(why)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_covers_policies() {
        let p: Value = serde_json::from_str(&tpm_policy("{}", true, false).unwrap()).unwrap();
        assert_eq!(p["mask"], "0x400");
        let p: Value = serde_json::from_str(&tpm_policy("{\"15\": [\"00\"]}", false, true).unwrap()).unwrap();
        assert_eq!(p["mask"], "0xfbff");
        assert!(tpm_policy("{\"x\": []}", false, false).is_err());
        assert!(tpm_policy("[]", false, false).is_err());
    }
}
