//! A runtime (IMA) policy: loading it as a measured-boot policy must fail cleanly.

wit_bindgen::generate!({ world: "runtime-policy", path: "../../../wit" });

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

    fn evaluate(_batch: Batch) -> Verdict {
        Verdict {
            failures: Vec::new(),
            state: None,
        }
    }
}

export!(WrongWorld);
