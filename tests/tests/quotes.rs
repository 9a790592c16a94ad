//! Quotes made by swtpm verify natively, and every tampered field fails with its own error.

use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use zest::evidence::{HashAlg, PublicArea, Quote};
use zest::tpm::{AttestationKey, QuoteError, QuoteExpectations, verify_quote};
use zest_tests::{AkKind, EkKind, Swtpm, TestAgent};

const HASHES: &[HashAlg] = &[HashAlg::Sha1, HashAlg::Sha256, HashAlg::Sha384, HashAlg::Sha512];
const SCHEMES: &[&str] = &["rsassa", "rsapss", "ecdsa"];
const NONCE: &[u8] = b"k3yl1m3N0nc3abcdefgh";

fn expect(nonce: &[u8]) -> QuoteExpectations<'_> {
    QuoteExpectations {
        nonce,
        hashes: HASHES,
        schemes: SCHEMES,
    }
}

#[test]
fn swtpm_quotes_verify_for_rsa_and_ecc_aks_over_sha1_and_sha256_banks() {
    let tpm = Swtpm::start().unwrap();
    for ak_kind in [AkKind::RsaSsa, AkKind::EcDsaP256] {
        let mut agent = TestAgent::new(&tpm, "quoter", EkKind::Rsa2048, ak_kind).unwrap();
        agent
            .pcr_extend(
                16,
                &[
                    (HashingAlgorithm::Sha256, vec![7; 32]),
                    (HashingAlgorithm::Sha1, vec![7; 20]),
                ],
            )
            .unwrap();
        let ak = AttestationKey::new(PublicArea::from_tpm2b(&agent.aik_tpm).unwrap());
        for (bank, hash) in [
            (HashingAlgorithm::Sha1, HashAlg::Sha1),
            (HashingAlgorithm::Sha256, HashAlg::Sha256),
        ] {
            let parts = agent.quote(NONCE, &[(bank, &[0, 1, 2, 10, 16])]).unwrap();
            let quote = Quote::from_keylime_string(&parts.keylime_string()).unwrap();
            let verified = verify_quote(&quote, &ak, &expect(NONCE))
                .unwrap_or_else(|e| panic!("{ak_kind:?} {bank:?}: {e}"));
            assert_eq!(verified.pcrs.len(), 5);
            assert_eq!(
                verified.pcr(hash, 16).unwrap(),
                agent.pcr_value(bank, 16).unwrap().as_slice()
            );
            assert!(verified.clock_info.safe);
        }
        // Two banks in one quote.
        let parts = agent
            .quote(
                NONCE,
                &[
                    (HashingAlgorithm::Sha1, &[10]),
                    (HashingAlgorithm::Sha256, &[10, 16]),
                ],
            )
            .unwrap();
        let quote = Quote::from_parts(&parts.attest, &parts.signature, &parts.pcr_blob).unwrap();
        assert_eq!(verify_quote(&quote, &ak, &expect(NONCE)).unwrap().pcrs.len(), 3);
    }
}

#[test]
fn each_tampered_field_fails_with_its_own_error() {
    let tpm = Swtpm::start().unwrap();
    let mut agent = TestAgent::new(&tpm, "tamper", EkKind::Rsa2048, AkKind::RsaSsa).unwrap();
    let ak = AttestationKey::new(PublicArea::from_tpm2b(&agent.aik_tpm).unwrap());
    let parts = agent
        .quote(NONCE, &[(HashingAlgorithm::Sha256, &[0, 10, 16])])
        .unwrap();
    let check = |attest: &[u8], sig: &[u8], blob: &[u8], nonce: &[u8], ak: &AttestationKey| {
        let quote = Quote::from_parts(attest, sig, blob).unwrap();
        verify_quote(&quote, ak, &expect(nonce))
    };
    assert!(check(&parts.attest, &parts.signature, &parts.pcr_blob, NONCE, &ak).is_ok());

    // One bit of the signature (CVE-2023-3674: a bad signature must fail the quote).
    let mut sig = parts.signature.clone();
    let last = sig.len() - 1;
    sig[last] ^= 1;
    assert_eq!(
        check(&parts.attest, &sig, &parts.pcr_blob, NONCE, &ak),
        Err(QuoteError::BadSignature)
    );

    // The nonce the verifier issued differs.
    assert_eq!(
        check(
            &parts.attest,
            &parts.signature,
            &parts.pcr_blob,
            b"another-nonce-000000",
            &ak
        ),
        Err(QuoteError::NonceMismatch)
    );

    // A PCR value in the (unsigned) blob: the last digest's first byte sits 64 bytes after its size.
    let mut blob = parts.pcr_blob.clone();
    blob[132 + 4 + 4 + 2 * 66 + 2] ^= 1;
    assert_eq!(
        check(&parts.attest, &parts.signature, &blob, NONCE, &ak),
        Err(QuoteError::PcrDigestMismatch)
    );

    // The magic and the type.
    let mut attest = parts.attest.clone();
    attest[0] ^= 0x01;
    assert!(matches!(
        check(&attest, &parts.signature, &parts.pcr_blob, NONCE, &ak),
        Err(QuoteError::NotGenerated(_))
    ));
    let mut attest = parts.attest.clone();
    attest[4..6].copy_from_slice(&0x8016u16.to_be_bytes());
    assert_eq!(
        check(&attest, &parts.signature, &parts.pcr_blob, NONCE, &ak),
        Err(QuoteError::NotAQuote(0x8016))
    );

    // A different, valid AK of the same TPM (CVE-2021-3406: only the registered AK counts).
    let registered = AttestationKey::new(ak.public.clone());
    agent.create_ak(AkKind::RsaSsa).unwrap();
    let other = agent
        .quote(NONCE, &[(HashingAlgorithm::Sha256, &[0, 10, 16])])
        .unwrap();
    assert_eq!(
        check(
            &other.attest,
            &other.signature,
            &other.pcr_blob,
            NONCE,
            &registered
        ),
        Err(QuoteError::BadSignature)
    );

    // An ECDSA quote checked against the RSA AK.
    agent.create_ak(AkKind::EcDsaP256).unwrap();
    let ecc = agent.quote(NONCE, &[(HashingAlgorithm::Sha256, &[0])]).unwrap();
    assert!(matches!(
        check(&ecc.attest, &ecc.signature, &ecc.pcr_blob, NONCE, &registered),
        Err(QuoteError::SchemeDoesNotMatchKey { .. })
    ));
}
