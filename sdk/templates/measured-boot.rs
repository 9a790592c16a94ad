//! A measured-boot policy: the machine must boot with Secure Boot on when the document
//! says so. `zest policy new` wrote this as a start; make it yours.

use serde::Deserialize;
use zest_policy_sdk::measured_boot::BootLog;
use zest_policy_sdk::{Failure, LoadError, MeasuredBootPolicy, Verdict};

/// The event id of this policy's failures, as the verifier reports them.
const EVENT_ID: &str = "measured_boot.policy_@NAME@";

/// The policy document (what an operator uploads), e.g. `{"secure_boot": true}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    secure_boot: bool,
}

pub struct Policy {
    document: Document,
}

impl MeasuredBootPolicy for Policy {
    fn load(document: &[u8]) -> Result<Self, LoadError> {
        // Not JSON: LoadError::InvalidJson; JSON of another shape: LoadError::Schema.
        let document = serde_json::from_slice(document)?;
        Ok(Self { document })
    }

    fn relevant_pcrs(&self) -> Vec<u32> {
        // SecureBoot is measured into PCR 7.
        vec![7]
    }

    fn evaluate(&self, log: &BootLog) -> Verdict {
        let mut failures = Vec::new();
        if self.document.secure_boot && log.secure_boot() != Some(true) {
            failures.push(Failure::message(EVENT_ID, "Secure Boot is not enabled"));
        }
        Verdict::with_failures(failures)
    }
}

zest_policy_sdk::export_measured_boot_policy!(Policy);

#[cfg(test)]
mod tests {
    use super::*;
    use zest_policy_sdk::testing::{self, Quote};

    const LOG: &str = "testdata/boot.log";

    fn policy(document: &str) -> Policy {
        Policy::load(document.as_bytes()).unwrap()
    }

    #[test]
    fn passes_a_secure_boot_log() {
        let log = testing::boot_log_from_file(LOG);
        assert!(policy(r#"{"secure_boot": true}"#).evaluate(&log).passed());
    }

    #[test]
    fn a_log_with_forged_data_fails_before_the_policy_runs() {
        // Flip the SecureBoot byte, keep its digests: the verifier sees the data no longer
        // matches what was measured, and the policy is never asked.
        let bytes = testing::read(LOG);
        let secure_boot = testing::boot_log(&bytes)
            .unwrap()
            .events
            .iter()
            .find(|e| e.variable().is_some_and(|v| v.name == "SecureBoot"))
            .map(|e| e.number as usize)
            .unwrap();
        let forged = testing::edit_event(&bytes, secure_boot, |data| *data.last_mut().unwrap() ^= 1);
        let quote = Quote::of_log(&bytes).unwrap();
        let verdict = testing::judge_boot(&policy(r#"{"secure_boot": true}"#), &forged, &quote, None);
        assert_eq!(verdict.event_ids(), ["measured_boot.invalid_event_data"]);
    }

    #[test]
    fn a_pcr_that_was_not_quoted_fails() {
        let bytes = testing::read(LOG);
        let quote = Quote::of_log(&bytes).unwrap().without_pcr(7);
        let verdict = testing::judge_boot(&policy(r#"{"secure_boot": true}"#), &bytes, &quote, None);
        assert_eq!(verdict.event_ids(), ["measured_boot.missing_pcrs"]);
    }

    #[test]
    fn refuses_a_document_that_is_not_its_own() {
        assert!(matches!(Policy::load(b"{"), Err(LoadError::InvalidJson(_))));
        assert!(matches!(Policy::load(b"{}"), Err(LoadError::Schema(_))));
    }
}
