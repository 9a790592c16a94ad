//! `zest evidence …` on Keylime's fixtures, as an operator or a script runs it.

// Test code: a failed unwrap is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::process::Command;

use serde_json::Value;

fn fixture(path: &str) -> String {
    let root = std::env::var("ZEST_FIXTURES")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fixtures").to_owned());
    let full = format!("{root}/{path}");
    assert!(std::path::Path::new(&full).exists(), "fixture {full} missing");
    full
}

fn zest(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_zest"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn eventlog_json_maps_banks_to_pcr_indices_to_hex() {
    let log = fixture("keylime/test/data/create-mb-policy/binary_bios_measurements");
    let (ok, stdout, stderr) = zest(&["evidence", "eventlog", &log, "--json"]);
    assert!(ok, "{stderr}");
    let doc: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        doc["pcrs"]["sha256"]["0"],
        "0ee9a7feba8f4172f1a7451594aa5731665a4d353ac61814042ce107a00742f2"
    );
    assert!(doc["pcrs"]["sha1"]["7"].as_str().unwrap().len() == 40);
    assert_eq!(doc["events"].as_array().unwrap().len(), 121);
    assert_eq!(doc["boot_aggregates"]["sha256"].as_array().unwrap().len(), 2);

    let (ok, stdout, _) = zest(&["evidence", "eventlog", &log]);
    assert!(ok);
    assert!(stdout.contains("sha256 PCR  0: 0ee9a7fe"), "{stdout}");
}

#[test]
fn bad_logs_are_a_clear_error() {
    for name in ["binary_bios_measurements-bogus", "binary_bios_measurements-empty"] {
        let (ok, _, stderr) = zest(&[
            "evidence",
            "eventlog",
            &fixture(&format!("keylime/test/data/create-mb-policy/{name}")),
        ]);
        assert!(!ok, "{name}");
        assert!(stderr.contains("is not a valid event log"), "{stderr}");
    }
    let (ok, _, stderr) = zest(&["evidence", "eventlog", "/nonexistent/log"]);
    assert!(!ok);
    assert!(stderr.contains("/nonexistent/log"), "{stderr}");
}

#[test]
fn ima_reports_entries_and_pcr10() {
    let list = fixture("keylime/test/data/create-runtime-policy/ima-log-sha256");
    let (ok, stdout, stderr) = zest(&["evidence", "ima", &list, "--bank", "sha256", "--json"]);
    assert!(ok, "{stderr}");
    let doc: Value = serde_json::from_str(&stdout).unwrap();
    assert!(doc["entries"].as_u64().unwrap() > 0);
    assert_eq!(doc["parse_errors"], serde_json::json!([]));
    assert_eq!(doc["template_hash_mismatches"], serde_json::json!([]));
    assert_eq!(doc["pcr10"].as_str().unwrap().len(), 64);
    let (ok, _, stderr) = zest(&["evidence", "ima", &list, "--bank", "md4"]);
    assert!(!ok && stderr.contains("md4"), "{stderr}");
}

#[test]
fn quote_check_passes_the_tpm2_tools_fixture_and_fails_a_wrong_nonce() {
    let files = "keylime/test-data/files";
    let attest = std::fs::read(fixture(&format!("{files}/quote.out"))).unwrap();
    // extraData sits after magic, type and the 34-byte qualifiedSigner TPM2B.
    let nonce_len = u16::from_be_bytes([attest[6 + 36], attest[6 + 37]]) as usize;
    let nonce = hex::encode(&attest[6 + 38..6 + 38 + nonce_len]);
    let args = |nonce: &str| {
        vec![
            "evidence".to_owned(),
            "quote".into(),
            "--ak".into(),
            fixture(&format!("{files}/ak.pub")),
            "--nonce".into(),
            nonce.into(),
            "--nonce-hex".into(),
            "--message".into(),
            fixture(&format!("{files}/quote.out")),
            "--signature".into(),
            fixture(&format!("{files}/quotesig.out")),
            "--pcrs".into(),
            fixture(&format!("{files}/quotepcr.out")),
        ]
    };
    let a = args(&nonce);
    let (ok, stdout, stderr) = zest(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(ok, "{stdout}{stderr}");
    assert!(
        stdout.contains("ok   magic, type, signature, nonce and PCR digest"),
        "{stdout}"
    );
    let a = args("00112233");
    let (ok, stdout, _) = zest(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!ok);
    assert!(
        stdout.contains("FAIL the quote's nonce does not match"),
        "{stdout}"
    );
}
