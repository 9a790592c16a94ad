//! A runtime (IMA) policy: nothing may be measured from the directories the document
//! forbids. `zest policy new` wrote this as a start; make it yours.

use serde::Deserialize;
use zest_policy_sdk::runtime::Batch;
use zest_policy_sdk::{Failure, LoadError, RuntimePolicy, Verdict};

/// The event id of this policy's failures, as the verifier reports them.
const EVENT_ID: &str = "ima.policy_@NAME@";

/// The policy document (what an operator uploads), e.g. `{"forbidden_prefixes": ["/tmp/"]}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    forbidden_prefixes: Vec<String>,
}

pub struct Policy {
    document: Document,
}

impl RuntimePolicy for Policy {
    fn load(document: &[u8]) -> Result<Self, LoadError> {
        // Not JSON: LoadError::InvalidJson; JSON of another shape: LoadError::Schema.
        let document = serde_json::from_slice(document)?;
        Ok(Self { document })
    }

    fn evaluate(&self, batch: &Batch) -> Verdict {
        let mut failures = Vec::new();
        for entry in batch.files() {
            if let Some(prefix) = self.document.forbidden_prefixes.iter().find(|p| entry.path_starts_with(p)) {
                let why = format!("{} was measured, and nothing under {prefix} may be", entry.path());
                failures.push(Failure::message(EVENT_ID, why).at(entry.index));
            }
        }
        Verdict::with_failures(failures)
    }
}

zest_policy_sdk::export_runtime_policy!(Policy);

#[cfg(test)]
mod tests {
    use super::*;
    use zest_policy_sdk::{HashAlg, testing};

    const LIST: &str = "testdata/ascii_runtime_measurements";

    fn policy(document: &str) -> Policy {
        Policy::load(document.as_bytes()).unwrap()
    }

    #[test]
    fn judges_the_measurement_list() {
        let batch = testing::ima_batch_from_file(LIST, HashAlg::Sha1, HashAlg::Sha256);
        assert!(policy(r#"{"forbidden_prefixes": ["/opt/"]}"#).evaluate(&batch).passed());
        let verdict = policy(r#"{"forbidden_prefixes": ["/tmp/"]}"#).evaluate(&batch);
        assert_eq!(verdict.event_ids(), [EVENT_ID]);
    }

    #[test]
    fn a_second_attestation_sees_only_new_entries() {
        // The verifier hands each attestation the entries since the last one.
        let text = String::from_utf8(testing::read(LIST)).unwrap();
        let (first, second) = testing::ima_batches(&text, HashAlg::Sha1, HashAlg::Sha256, 2);
        assert_eq!(second.replay.start_offset, 2);
        assert_eq!(first.entries.len() + second.entries.len(), batch_len(&text));
    }

    fn batch_len(text: &str) -> usize {
        testing::ima_batch(text, HashAlg::Sha1, HashAlg::Sha256).entries.len()
    }

    #[test]
    fn refuses_a_document_that_is_not_its_own() {
        assert!(matches!(Policy::load(b"["), Err(LoadError::InvalidJson(_))));
        assert!(matches!(Policy::load(b"{}"), Err(LoadError::Schema(_))));
    }
}
