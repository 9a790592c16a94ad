//! A measured-boot policy whose reference state picks how it misbehaves in `evaluate`:
//! `loop`, `alloc`, `trap`, `recurse`, `huge`, or `ok`; `load-fail` fails at load.

use std::sync::atomic::{AtomicU8, Ordering};

wit_bindgen::generate!({ world: "measured-boot-policy", path: "../../../wit" });

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
        let mode = match document.as_slice() {
            b"ok" => 0,
            b"loop" => 1,
            b"alloc" => 2,
            b"trap" => 3,
            b"recurse" => 4,
            b"huge" => 5,
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
            _ => Verdict {
                failures: Vec::new(),
                state: Some(vec![log.events.len() as u8]),
            },
        }
    }
}

export!(Hostile);
