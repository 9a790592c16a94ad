//! What the benchmarks share: Keylime's fixtures and a synthetic IMA list.

#![allow(dead_code)] // each bench uses a part
// Benchmark code: a failed unwrap aborts the run.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::Duration;

use zest::evidence::HashAlg;
use zest::evidence::ima::ImaEntry;

pub fn fixture(path: &str) -> Vec<u8> {
    let root = std::env::var("ZEST_FIXTURES")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fixtures").to_owned());
    std::fs::read(format!("{root}/{path}")).unwrap_or_else(|e| panic!("fixture {path}: {e}"))
}

pub fn p50(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// The path of synthetic entry `i`.
pub fn synthetic_path(i: u32) -> String {
    format!("/usr/lib64/libexample-{i}.so.1")
}

/// The file digest of synthetic entry `i`.
pub fn synthetic_digest(i: u32) -> Vec<u8> {
    HashAlg::Sha256.digest(&[&i.to_le_bytes()])
}

/// `n` ima-ng sha256 entries with valid SHA-1 template hashes, as a kernel would list them.
pub fn synthetic_ima_list(n: u32) -> String {
    let mut text = String::new();
    let mut data = Vec::new();
    for i in 0..n {
        let digest = synthetic_digest(i);
        let path = synthetic_path(i);
        let provisional = format!(
            "10 {} ima-ng sha256:{} {path}",
            "00".repeat(20),
            hex::encode(&digest)
        );
        ImaEntry::parse(&provisional, 0)
            .expect("a synthetic line parses")
            .write_template_data(&mut data);
        let hash = HashAlg::Sha1.digest(&[&data]);
        text.push_str(&format!(
            "10 {} ima-ng sha256:{} {path}\n",
            hex::encode(hash),
            hex::encode(&digest)
        ));
    }
    text
}
