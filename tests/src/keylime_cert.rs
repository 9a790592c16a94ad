//! The mTLS server certificate of Keylime's pull agent (rust-keylime `keylime_agent` 0.2.9),
//! reproduced exactly, to test that zest reaches such an agent as Keylime does.
//!
//! The agent builds it with OpenSSL: self-signed, ECDSA P-256, CN = the agent's UUID, serial
//! number 0 (never set), valid for a year, no extension but a subjectAltName
//! (`localhost, localhost.domain, 127.0.0.1, ::1`). It appends the subjectAltName after
//! signing, so its self-signature covers a TBS without it and does not verify.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, ensure};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, KeyPair, PKCS_ECDSA_P256_SHA256, SanType, SerialNumber,
};

/// A certificate shaped like the Keylime agent's for `uuid` (PEM), and its key.
pub fn keylime_agent_certificate(uuid: &str) -> anyhow::Result<(String, KeyPair)> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, uuid);
    params.distinguished_name = name;
    params.serial_number = Some(SerialNumber::from(0u64));
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?;
    params.not_before = rcgen::date_time_ymd(1970, 1, 1) + Duration::from_secs(now.as_secs());
    params.not_after = params.not_before + Duration::from_secs(365 * 24 * 60 * 60);
    // rcgen's defaults (not a CA, no key usages, no authority key identifier) write no
    // extension, so this is the certificate as the agent signs it.
    let as_signed = params.self_signed(&key)?;
    params.subject_alt_names = vec![
        SanType::DnsName("localhost".try_into()?),
        SanType::DnsName("localhost.domain".try_into()?),
        SanType::IpAddress(Ipv4Addr::LOCALHOST.into()),
        SanType::IpAddress(Ipv6Addr::LOCALHOST.into()),
    ];
    let with_san = params.self_signed(&key)?;
    let der = splice(with_san.der(), as_signed.der())?;
    Ok((pem(&der), key))
}

/// A certificate with `body`'s tbsCertificate and signatureAlgorithm and `signature`'s
/// signatureValue.
fn splice(body: &[u8], signature: &[u8]) -> anyhow::Result<Vec<u8>> {
    let [tbs, algorithm, _] = certificate_parts(body)?;
    let [_, _, value] = certificate_parts(signature)?;
    let content = [tbs, algorithm, value].concat();
    let mut out = vec![0x30];
    out.extend(der_length(content.len()));
    out.extend(content);
    Ok(out)
}

/// The three elements of a DER Certificate SEQUENCE, each as a whole TLV.
fn certificate_parts(der: &[u8]) -> anyhow::Result<[&[u8]; 3]> {
    let (header, whole, rest) = tlv(der)?;
    ensure!(
        der.first() == Some(&0x30) && rest.is_empty(),
        "not one DER SEQUENCE"
    );
    let (_, tbs, fields) = tlv(&whole[header..])?;
    let (_, algorithm, fields) = tlv(fields)?;
    let (_, value, fields) = tlv(fields)?;
    ensure!(fields.is_empty(), "trailing data in the certificate");
    Ok([tbs, algorithm, value])
}

/// Splits the first DER TLV off `der`: its header length, the whole TLV, what follows.
fn tlv(der: &[u8]) -> anyhow::Result<(usize, &[u8], &[u8])> {
    let first = *der.get(1).context("truncated DER")?;
    let (header, len) = if first < 0x80 {
        (2, usize::from(first))
    } else {
        let n = usize::from(first & 0x7f);
        ensure!((1..=4).contains(&n), "unsupported DER length of {n} bytes");
        let bytes = der.get(2..2 + n).context("truncated DER")?;
        (
            2 + n,
            bytes.iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b)),
        )
    };
    let end = header + len;
    ensure!(der.len() >= end, "truncated DER");
    let (whole, rest) = der.split_at(end);
    Ok((header, whole, rest))
}

/// A DER length prefix.
fn der_length(len: usize) -> Vec<u8> {
    let bytes = len.to_be_bytes();
    let significant = &bytes[bytes.iter().take_while(|b| **b == 0).count()..];
    match significant {
        [] => vec![0],
        [one] if *one < 0x80 => vec![*one],
        _ => {
            let mut out = vec![0x80 | significant.len() as u8];
            out.extend_from_slice(significant);
            out
        }
    }
}

fn pem(der: &[u8]) -> String {
    let text = B64.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in text.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::prelude::GeneralName;

    #[test]
    fn shaped_like_the_keylime_agents_certificate() {
        let uuid = "d432fbb3-d2f1-4a97-9ef7-75bd81c00000";
        let (pem, key) = keylime_agent_certificate(uuid).unwrap();
        let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        let cert = pem.parse_x509().unwrap();

        assert_eq!(cert.raw_serial(), &[0u8]);
        assert_eq!(cert.version().0, 2, "X.509 v3");
        let cn: Vec<&str> = cert
            .subject()
            .iter_common_name()
            .map(|cn| cn.as_str().unwrap())
            .collect();
        assert_eq!(cn, [uuid]);
        assert_eq!(cert.subject(), cert.issuer());

        let extensions = cert.extensions();
        assert_eq!(extensions.len(), 1, "only the subjectAltName");
        assert_eq!(extensions[0].oid.to_id_string(), "2.5.29.17");
        assert!(!extensions[0].critical);
        let san = cert.subject_alternative_name().unwrap().unwrap();
        let names: Vec<String> = san
            .value
            .general_names
            .iter()
            .map(|n| match n {
                GeneralName::DNSName(d) => d.to_string(),
                GeneralName::IPAddress(ip) if ip.len() == 4 => {
                    Ipv4Addr::from(<[u8; 4]>::try_from(*ip).unwrap()).to_string()
                }
                GeneralName::IPAddress(ip) => Ipv6Addr::from(<[u8; 16]>::try_from(*ip).unwrap()).to_string(),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(names, ["localhost", "localhost.domain", "127.0.0.1", "::1"]);

        let spki = cert.public_key();
        assert_eq!(spki.algorithm.algorithm.to_id_string(), "1.2.840.10045.2.1");
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())
            .map(|oid| oid.to_id_string());
        assert_eq!(curve.as_deref(), Some("1.2.840.10045.3.1.7"), "P-256");
        assert_eq!(
            spki.raw,
            rcgen::PublicKeyData::subject_public_key_info(&key).as_slice()
        );
        assert!(
            cert.verify_signature(None).is_err(),
            "the self-signature must not verify, as the agent's does not"
        );
        // Control: x509-parser does verify a sound self-signed P-256 certificate, so the
        // failure above is the signature's, not a missing algorithm.
        let sound = CertificateParams::default().self_signed(&key).unwrap();
        let (_, sound) = x509_parser::parse_x509_certificate(sound.der()).unwrap();
        assert!(sound.verify_signature(None).is_ok());
    }

    #[test]
    fn der_lengths() {
        assert_eq!(der_length(0), [0]);
        assert_eq!(der_length(0x7f), [0x7f]);
        assert_eq!(der_length(0x80), [0x81, 0x80]);
        assert_eq!(der_length(0x1234), [0x82, 0x12, 0x34]);
        let mut long = vec![0x04];
        long.extend(der_length(300));
        long.extend(vec![7u8; 300]);
        long.push(9);
        let (header, whole, rest) = tlv(&long).unwrap();
        assert_eq!((header, whole.len(), rest), (4, 304, &[9u8][..]));
    }
}
