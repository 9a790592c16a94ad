//! A measured-boot policy whose reference state picks how it misbehaves in `evaluate`:
//! `loop`, `alloc`, `trap`, `recurse`, `huge`, or `ok`; `load-fail` fails at load. Two
//! modes check the host's side of the contract: `count` keeps a counter in its state blob
//! and fails when it reaches 3 (or when `first-attestation` disagrees with the state it
//! got); `irrecoverable` fails with an irrecoverable failure about event 1; `describe`
//! fails with the firmware blobs and boot options it was given, as JSON.
//!
//! It is built against the frozen `zest:policy@0.1.0`, so every sandbox test also shows
//! that zest keeps running 0.1.0 components.

use std::sync::atomic::{AtomicU8, Ordering};

wit_bindgen::generate!({ world: "measured-boot-policy", path: "../../../wit/0.1" });

use exports::zest::policy::measured_boot::{BootLog, Guest};
use zest::policy::types::{Failure, LoadError, Verdict};

static MODE: AtomicU8 = AtomicU8::new(0);

struct Hostile;

/// Recursion the optimiser cannot remove: every frame keeps a buffer alive across the call.
#[inline(never)]
fn recurse(depth: u64, limit: u64) -> u64 {
    let mut pad = [depth; 128];
    std::hint::black_box(&mut pad);
    if depth >= limit {
        return pad[7];
    }
    let below = recurse(depth + 1, limit);
    std::hint::black_box(&pad);
    below.wrapping_add(pad[(depth % 128) as usize])
}

impl Guest for Hostile {
    fn load(document: Vec<u8>) -> Result<(), LoadError> {
        // The mode as raw text, or as a JSON string (refstates reach the verifier as JSON).
        let text = document
            .strip_prefix(b"\"")
            .and_then(|d| d.strip_suffix(b"\""))
            .unwrap_or(&document);
        let mode = match text {
            b"ok" => 0,
            b"loop" => 1,
            b"alloc" => 2,
            b"trap" => 3,
            b"recurse" => 4,
            b"huge" => 5,
            b"count" => 6,
            b"irrecoverable" => 7,
            b"describe" => 8,
            b"load-fail" => return Err(LoadError::Schema("this policy refuses its document".into())),
            _ => return Err(LoadError::InvalidJson("unknown mode".into())),
        };
        MODE.store(mode, Ordering::Relaxed);
        Ok(())
    }

    fn relevant_pcrs() -> Vec<u32> {
        vec![0, 7]
    }

    fn evaluate(log: BootLog) -> Verdict {
        match MODE.load(Ordering::Relaxed) {
            1 => {
                let mut x: u64 = log.events.len() as u64;
                loop {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                    std::hint::black_box(x);
                }
            }
            2 => {
                let mut hog: Vec<Vec<u8>> = Vec::new();
                loop {
                    hog.push(vec![1u8; 16 << 20]);
                    std::hint::black_box(&hog);
                }
            }
            3 => panic!("policy bug"),
            4 => {
                std::hint::black_box(recurse(0, std::hint::black_box(u64::MAX)));
                Verdict {
                    failures: Vec::new(),
                    state: None,
                }
            }
            5 => Verdict {
                failures: (0..u32::MAX)
                    .map(|i| Failure {
                        event_id: "x".repeat(1024),
                        context: format!("{i}"),
                        recoverable: false,
                        entry: None,
                    })
                    .collect(),
                state: None,
            },
            6 => {
                let count = log
                    .prior_state
                    .as_deref()
                    .and_then(|s| <[u8; 8]>::try_from(s).ok())
                    .map_or(0, u64::from_le_bytes)
                    + 1;
                let mut failures = Vec::new();
                if log.first_attestation != log.prior_state.is_none() {
                    failures.push(Failure {
                        event_id: "measured_boot.hostile.state_mismatch".into(),
                        context: format!(
                            "{{\"first_attestation\": {}, \"prior_state\": {}}}",
                            log.first_attestation,
                            log.prior_state.is_some()
                        ),
                        recoverable: true,
                        entry: None,
                    });
                }
                if count >= 3 {
                    failures.push(Failure {
                        event_id: "measured_boot.hostile.count_reached".into(),
                        context: format!("{{\"count\": {count}}}"),
                        recoverable: true,
                        entry: None,
                    });
                }
                Verdict {
                    failures,
                    state: Some(count.to_le_bytes().to_vec()),
                }
            }
            7 => Verdict {
                failures: vec![Failure {
                    event_id: "measured_boot.hostile.irrecoverable".into(),
                    context: "{}".into(),
                    recoverable: false,
                    entry: Some(1),
                }],
                state: None,
            },
            8 => {
                use exports::zest::policy::measured_boot::{EventData, VariableData};
                let mut blobs = Vec::new();
                let mut options = Vec::new();
                for event in &log.events {
                    match &event.parsed {
                        EventData::FirmwareBlob((base, length)) => blobs.push(format!("[{base},{length}]")),
                        EventData::Variable(v) => {
                            if let VariableData::BootOption((enabled, description, path)) = &v.parsed {
                                options.push(format!("[{enabled},{description:?},{path:?}]"));
                            }
                        }
                        _ => {}
                    }
                }
                Verdict {
                    failures: vec![Failure {
                        event_id: "measured_boot.hostile.describe".into(),
                        context: format!(
                            "{{\"blobs\": [{}], \"boot_options\": [{}]}}",
                            blobs.join(","),
                            options.join(",")
                        ),
                        recoverable: true,
                        entry: None,
                    }],
                    state: None,
                }
            }
            _ => Verdict {
                failures: Vec::new(),
                state: Some(vec![log.events.len() as u8]),
            },
        }
    }
}

export!(Hostile);
