//! Evidence throughput on one core: quote verification (RSA-2048 from the tpm2-tools
//! fixture, P-256 from a software AK), IMA parse + template hash + PCR 10 replay of 100,000
//! ima-ng entries, and UEFI log parse + replay of Keylime's Fedora log.
//!
//! `cargo bench -p zest --bench evidence` prints one line per figure.

// Benchmark code: a failed unwrap aborts the run.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use zest::evidence::ima::{ImaPosition, replay};
use zest::evidence::uefi::EventLog;
use zest::evidence::{HashAlg, PublicArea, Quote};
use zest::tpm::{AttestationKey, QuoteExpectations, verify_quote};

mod common;
use common::{fixture, synthetic_ima_list};

const HASHES: &[HashAlg] = &[HashAlg::Sha1, HashAlg::Sha256, HashAlg::Sha384, HashAlg::Sha512];
const SCHEMES: &[&str] = &["rsassa", "rsapss", "ecdsa"];

/// Runs `f` repeatedly for about `budget` and returns operations per second.
fn rate(budget: Duration, mut f: impl FnMut()) -> (f64, u64) {
    for _ in 0..10 {
        f();
    }
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < budget {
        f();
        n += 1;
    }
    (n as f64 / start.elapsed().as_secs_f64(), n)
}

fn tpm2b(data: &[u8]) -> Vec<u8> {
    let mut v = (data.len() as u16).to_be_bytes().to_vec();
    v.extend_from_slice(data);
    v
}

/// A quote over sha256 PCRs 0, 10, 16 signed by a software P-256 AK, as a TPM would make it.
fn software_p256_quote(nonce: &[u8]) -> (String, PublicArea) {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
    let point = key.public_key().as_ref();
    let mut tpmt = vec![
        0x00, 0x23, 0x00, 0x0b, 0x00, 0x05, 0x00, 0x72, 0x00, 0x00, 0x00, 0x10, 0x00, 0x18, 0x00, 0x0b,
    ];
    tpmt.extend([0x00, 0x03, 0x00, 0x10]);
    tpmt.extend(tpm2b(&point[1..33]));
    tpmt.extend(tpm2b(&point[33..65]));
    let ak = PublicArea::from_tpmt(&tpmt).unwrap();

    let pcrs: Vec<Vec<u8>> = (0..3u8).map(|i| vec![i; 32]).collect();
    let mut attest = 0xff54_4347u32.to_be_bytes().to_vec();
    attest.extend(0x8018u16.to_be_bytes());
    attest.extend(tpm2b(&zest::tpm::object_name(&ak)));
    attest.extend(tpm2b(nonce));
    attest.extend(1234u64.to_be_bytes());
    attest.extend([0, 0, 0, 1, 0, 0, 0, 0, 1]);
    attest.extend(0u64.to_be_bytes());
    attest.extend([0, 0, 0, 1, 0x00, 0x0b, 3, 0x01, 0x04, 0x01]);
    attest.extend(tpm2b(
        &HashAlg::Sha256.digest(&pcrs.iter().map(Vec::as_slice).collect::<Vec<_>>()),
    ));
    let sig = key.sign(&rng, &attest).unwrap();
    let mut signature = vec![0x00, 0x18, 0x00, 0x0b];
    signature.extend(tpm2b(&sig.as_ref()[..32]));
    signature.extend(tpm2b(&sig.as_ref()[32..]));

    let mut blob = 1u32.to_le_bytes().to_vec();
    for slot in 0..16 {
        let mut entry = [0u8; 8];
        if slot == 0 {
            entry = [0x0b, 0x00, 3, 0x01, 0x04, 0x01, 0, 0];
        }
        blob.extend(entry);
    }
    blob.extend(1u32.to_le_bytes());
    blob.extend(3u32.to_le_bytes());
    for i in 0..8 {
        let mut d = [0u8; 66];
        if let Some(v) = pcrs.get(i) {
            d[..2].copy_from_slice(&32u16.to_le_bytes());
            d[2..34].copy_from_slice(v);
        }
        blob.extend(d);
    }
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    (
        format!(
            "r{}:{}:{}",
            b64.encode(&attest),
            b64.encode(&signature),
            b64.encode(&blob)
        ),
        ak,
    )
}

fn main() {
    let budget = Duration::from_secs(3);

    // RSA-2048: the tpm2-tools fixture quote, parsed from Keylime's string form every time.
    let files = "keylime/test-data/files";
    let attest = fixture(&format!("{files}/quote.out"));
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let rsa_string = format!(
        "r{}:{}:{}",
        b64.encode(&attest),
        b64.encode(fixture(&format!("{files}/quotesig.out"))),
        b64.encode(fixture(&format!("{files}/quotepcr.out")))
    );
    let rsa_ak = AttestationKey::new(PublicArea::from_tpm2b(&fixture(&format!("{files}/ak.pub"))).unwrap());
    let rsa_nonce = Quote::from_keylime_string(&rsa_string).unwrap().attest.extra_data;
    let expect = QuoteExpectations {
        nonce: &rsa_nonce,
        hashes: HASHES,
        schemes: SCHEMES,
    };
    let (per_s, n) = rate(budget, || {
        let q = Quote::from_keylime_string(black_box(&rsa_string)).unwrap();
        black_box(verify_quote(&q, &rsa_ak, &expect).unwrap());
    });
    println!("quote parse+verify, RSA-2048 (RSASSA-SHA256): {per_s:>10.0}/s per core ({n} runs)");

    let nonce = b"abcdefghijklmnopqrst";
    let (p256_string, p256_ak) = software_p256_quote(nonce);
    let p256_ak = AttestationKey::new(p256_ak);
    let expect = QuoteExpectations {
        nonce,
        hashes: HASHES,
        schemes: SCHEMES,
    };
    let (per_s, n) = rate(budget, || {
        let q = Quote::from_keylime_string(black_box(&p256_string)).unwrap();
        black_box(verify_quote(&q, &p256_ak, &expect).unwrap());
    });
    println!("quote parse+verify, P-256 (ECDSA-SHA256):     {per_s:>10.0}/s per core ({n} runs)");

    // IMA: 100,000 ima-ng sha256 entries with valid SHA-1 template hashes.
    let text = synthetic_ima_list(100_000);
    let start = ImaPosition::start(HashAlg::Sha256);
    let (per_s, n) = rate(budget, || {
        let r = replay(black_box(&text), HashAlg::Sha256, HashAlg::Sha1, &start, None);
        assert_eq!(r.entries.len(), 100_000);
        black_box(r);
    });
    println!(
        "IMA parse+template hash+replay, 100k ima-ng:  {:>10.0} entries/s per core ({:.1} ms per list, {n} runs)",
        per_s * 100_000.0,
        1000.0 / per_s
    );

    // UEFI: Keylime's Fedora 41 log (120 events, sha1+sha256).
    let log = fixture("keylime/test/data/create-mb-policy/binary_bios_measurements");
    let (per_s, n) = rate(budget, || {
        let parsed = EventLog::parse(black_box(&log)).unwrap();
        black_box(parsed.replay());
    });
    println!(
        "UEFI log parse+replay, Fedora log:            {:>10.1} µs per log ({n} runs)",
        1e6 / per_s
    );
}
