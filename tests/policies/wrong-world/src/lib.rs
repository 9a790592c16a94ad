//! A runtime (IMA) policy that accepts everything and reports what it was given in its
//! state: (entries, entries whose template hash checked out, start offset). Loading it as a
//! measured-boot policy must fail cleanly.

wit_bindgen::generate!({ world: "runtime-policy", path: "../../../wit/0.1" });

use exports::zest::policy::runtime::{Batch, Guest};
use zest::policy::types::{HashAlg, LoadError, Verdict};

struct WrongWorld;

impl Guest for WrongWorld {
    fn load(_document: Vec<u8>) -> Result<(), LoadError> {
        Ok(())
    }

    fn log_hash_alg() -> HashAlg {
        HashAlg::Sha1
    }

    fn evaluate(batch: Batch) -> Verdict {
        let ok = batch.entries.iter().filter(|e| e.template_hash_ok).count();
        let state = [
            batch.entries.len() as u8,
            ok as u8,
            batch.replay.start_offset as u8,
        ];
        Verdict {
            failures: Vec::new(),
            state: Some(state.to_vec()),
        }
    }
}

export!(WrongWorld);
