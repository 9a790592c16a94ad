//! IMA lists written by the test agent and extended into swtpm's PCR 10 replay to the quoted
//! value, incrementally, also when the list runs ahead of the quote.

use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use zest::evidence::ima::{ImaPosition, replay};
use zest::evidence::{HashAlg, PublicArea, Quote};
use zest::tpm::{AttestationKey, QuoteExpectations, verify_quote};
use zest_tests::ima::{Extension, ImaLog};
use zest_tests::{AkKind, EkKind, Swtpm, TestAgent};

fn extend(agent: &mut TestAgent, e: &Extension) {
    agent
        .pcr_extend(
            10,
            &[
                (HashingAlgorithm::Sha1, e.sha1.clone()),
                (HashingAlgorithm::Sha256, e.sha256.clone()),
            ],
        )
        .unwrap();
}

/// Quotes PCR 10 of `bank` and returns the authenticated value.
fn quoted_pcr10(agent: &mut TestAgent, bank: HashingAlgorithm, hash: HashAlg) -> Vec<u8> {
    let ak = AttestationKey::new(PublicArea::from_tpm2b(&agent.aik_tpm).unwrap());
    let parts = agent.quote(b"nonce-for-ima-replay", &[(bank, &[10])]).unwrap();
    let quote = Quote::from_parts(&parts.attest, &parts.signature, &parts.pcr_blob).unwrap();
    let expect = QuoteExpectations {
        nonce: b"nonce-for-ima-replay",
        hashes: &[HashAlg::Sha256],
        schemes: &["rsassa"],
    };
    verify_quote(&quote, &ak, &expect)
        .unwrap()
        .pcr(hash, 10)
        .unwrap()
        .to_vec()
}

fn file_digest(i: usize) -> Vec<u8> {
    zest::evidence::HashAlg::Sha256.digest(&[format!("file {i}").as_bytes()])
}

#[test]
fn lists_replay_to_the_quote_incrementally_and_when_running_ahead() {
    let tpm = Swtpm::start().unwrap();
    let mut agent = TestAgent::new(&tpm, "ima", EkKind::Rsa2048, AkKind::RsaSsa).unwrap();
    let mut log = ImaLog::default();
    for i in 0..5 {
        let e = if i == 2 {
            log.add_violation("/tmp/open-writer")
        } else {
            log.add_ima_ng(&format!("/usr/bin/tool{i}"), &file_digest(i))
        };
        extend(&mut agent, &e);
    }

    for (bank, hash) in [
        (HashingAlgorithm::Sha256, HashAlg::Sha256),
        (HashingAlgorithm::Sha1, HashAlg::Sha1),
    ] {
        let pcr10 = quoted_pcr10(&mut agent, bank, hash);
        let r = replay(
            &log.text_from(0),
            hash,
            HashAlg::Sha1,
            &ImaPosition::start(hash),
            Some(&pcr10),
        );
        assert!(r.parse_errors.is_empty());
        assert_eq!(r.matched_after, Some(5), "{hash:?}");
        assert!(
            r.entries
                .iter()
                .all(|e| e.template_hash_ok && e.pcr_ok && e.covered_by_quote)
        );
        assert!(r.entries[2].violation);
        assert_eq!(r.next_position.as_ref().unwrap().next_entry, 5);
    }

    // Saved state after the first round (sha256 bank).
    let pcr10 = quoted_pcr10(&mut agent, HashingAlgorithm::Sha256, HashAlg::Sha256);
    let mut position = replay(
        &log.text_from(0),
        HashAlg::Sha256,
        HashAlg::Sha1,
        &ImaPosition::start(HashAlg::Sha256),
        Some(&pcr10),
    )
    .next_position
    .unwrap();

    // Three new entries reach the list, but only one reaches PCR 10 before the quote.
    let pending: Vec<Extension> = (5..8)
        .map(|i| log.add_ima_ng(&format!("/usr/lib/lib{i}.so"), &file_digest(i)))
        .collect();
    extend(&mut agent, &pending[0]);
    let pcr10 = quoted_pcr10(&mut agent, HashingAlgorithm::Sha256, HashAlg::Sha256);
    let r = replay(
        &log.text_from(5),
        HashAlg::Sha256,
        HashAlg::Sha1,
        &position,
        Some(&pcr10),
    );
    assert_eq!(r.matched_after, Some(1), "the quote lags the list by two entries");
    assert_eq!(r.entries.iter().filter(|e| e.covered_by_quote).count(), 1);
    assert_eq!(
        r.entries.len(),
        3,
        "entries after the match are still parsed and checked"
    );
    position = r.next_position.unwrap();
    assert_eq!(position.next_entry, 6);

    // The kernel catches up; the next round resumes at entry 6.
    extend(&mut agent, &pending[1]);
    extend(&mut agent, &pending[2]);
    let pcr10 = quoted_pcr10(&mut agent, HashingAlgorithm::Sha256, HashAlg::Sha256);
    let r = replay(
        &log.text_from(6),
        HashAlg::Sha256,
        HashAlg::Sha1,
        &position,
        Some(&pcr10),
    );
    assert_eq!(r.matched_after, Some(2));
    assert_eq!(r.next_position.unwrap().next_entry, 8);
    assert_eq!(r.final_pcr10, pcr10);
}

#[test]
fn a_tampered_line_breaks_the_replay_and_its_template_hash() {
    let tpm = Swtpm::start().unwrap();
    let mut agent = TestAgent::new(&tpm, "ima-tamper", EkKind::Rsa2048, AkKind::RsaSsa).unwrap();
    let mut log = ImaLog::default();
    for i in 0..4 {
        let e = log.add_ima_ng(&format!("/usr/bin/tool{i}"), &file_digest(i));
        extend(&mut agent, &e);
    }
    let pcr10 = quoted_pcr10(&mut agent, HashingAlgorithm::Sha256, HashAlg::Sha256);
    // Swap the file digest of line 1 for another one: the line still parses.
    let forged = log
        .line(1)
        .replace(&hex::encode(file_digest(1)), &hex::encode(file_digest(99)));
    log.set_line(1, forged);
    let r = replay(
        &log.text_from(0),
        HashAlg::Sha256,
        HashAlg::Sha1,
        &ImaPosition::start(HashAlg::Sha256),
        Some(&pcr10),
    );
    assert_eq!(r.matched_after, None);
    assert!(r.next_position.is_none());
    assert!(!r.entries[1].template_hash_ok);
    assert!(r.entries.iter().all(|e| !e.covered_by_quote));

    // A line that does not parse is reported and not folded in.
    log.set_line(2, "10 garbage".into());
    let r = replay(
        &log.text_from(0),
        HashAlg::Sha256,
        HashAlg::Sha1,
        &ImaPosition::start(HashAlg::Sha256),
        Some(&pcr10),
    );
    assert_eq!(r.parse_errors.len(), 1);
    assert_eq!(r.parse_errors[0].line, 2);
    assert_eq!(r.entries.len(), 3);
}
