//! A measured-boot policy built with the SDK (`zest:policy@0.2.0`) whose reference state
//! picks what it does in `evaluate`, for the tests of what the SDK and the host give a
//! guest: `panic` panics with a message; `env` reports the environment std sees; `hash`
//! reports the host's SHA-256 of `abc`; `describe` reports the firmware blobs and boot
//! options it was given (as `hostile`, a 0.1.0 component, does); `ok` passes.

use zest_policy_sdk::measured_boot::{BootLog, EventData, VariableData};
use zest_policy_sdk::{Failure, HashAlg, LoadError, MeasuredBootPolicy, Verdict, host};

enum Mode {
    Panic,
    Env,
    Hash,
    Describe,
    Ok,
}

struct SdkGuest(Mode);

fn report(what: serde_json::Value) -> Verdict {
    Verdict::with_failures(vec![Failure::new("measured_boot.sdk_guest.report", what)])
}

impl MeasuredBootPolicy for SdkGuest {
    fn load(document: &[u8]) -> Result<Self, LoadError> {
        let mode: String = serde_json::from_slice(document)?;
        Ok(Self(match mode.as_str() {
            "panic" => Mode::Panic,
            "env" => Mode::Env,
            "hash" => Mode::Hash,
            "describe" => Mode::Describe,
            "ok" => Mode::Ok,
            other => return Err(LoadError::Schema(format!("unknown mode {other}"))),
        }))
    }

    fn relevant_pcrs(&self) -> Vec<u32> {
        vec![0]
    }

    fn evaluate(&self, log: &BootLog) -> Verdict {
        match self.0 {
            Mode::Panic => {
                let events = log.events.len();
                panic!("the policy gave up after {events} events")
            }
            Mode::Env => report(serde_json::json!({
                "vars": std::env::vars().count(),
                "args": std::env::args().count(),
            })),
            Mode::Hash => report(serde_json::json!({
                "sha256": host::hash(HashAlg::Sha256, b"abc").map(|d| zest_policy_sdk::hex(&d)),
                "other": host::hash(HashAlg::Other, b"abc"),
            })),
            Mode::Describe => {
                let mut blobs = Vec::new();
                let mut options = Vec::new();
                for event in &log.events {
                    match &event.parsed {
                        EventData::FirmwareBlob(b) => blobs.push(serde_json::json!([b.base, b.length])),
                        EventData::Variable(v) => {
                            if let VariableData::BootOption(o) = &v.parsed {
                                options.push(serde_json::json!([o.enabled, o.description, o.device_path]));
                            }
                        }
                        _ => {}
                    }
                }
                report(serde_json::json!({"blobs": blobs, "boot_options": options}))
            }
            Mode::Ok => Verdict::pass(),
        }
    }
}

zest_policy_sdk::export_measured_boot_policy!(SdkGuest);
