//! Keylime's `reject-all` measured-boot policy: every boot log fails with
//! `measured_boot.policy_reject-all`.

wit_bindgen::generate!({ world: "measured-boot-policy", path: "../../wit" });

use exports::zest::policy::measured_boot::{BootLog, Guest};
use zest::policy::types::{Failure, LoadError, Verdict};

struct RejectAll;

impl Guest for RejectAll {
    fn load(_document: Vec<u8>) -> Result<(), LoadError> {
        Ok(())
    }

    fn relevant_pcrs() -> Vec<u32> {
        Vec::new()
    }

    fn evaluate(_log: BootLog) -> Verdict {
        Verdict {
            failures: vec![Failure {
                event_id: "measured_boot.policy_reject-all".into(),
                context: r#"{"context": "Boot attestation failed", "policy": "reject-all", "reason": "reject all"}"#
                    .into(),
                recoverable: false,
                entry: None,
            }],
            state: None,
        }
    }
}

export!(RejectAll);
