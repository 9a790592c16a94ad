//! Policy sandbox costs on one core: compiling a new component and loading it from the disk
//! cache; Keylime's `example` measured-boot policy (`keylime-mb-example`) on the Fedora
//! log; and IMA evaluation of 100,000 ima-ng entries against a 100,000-path policy through
//! `keylime-runtime`, native parse and replay included.
//!
//! `cargo bench -p zest --bench policy` prints one line per figure (p50 over the runs).

// Benchmark code: a failed unwrap aborts the run.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::{Duration, Instant};

use serde_json::json;
use zest::evidence::HashAlg;
use zest::evidence::ima::{ImaPosition, replay};
use zest::evidence::uefi::{EventData, EventLog};
use zest::policy::create::measured_boot_refstate;
use zest::policy::measured_boot::{BootEvidence, MeasuredBootPolicy};
use zest::policy::runtime::{ImaEvidence, RuntimePolicy};
use zest::policy::{PolicyLimits, PolicyRuntime, builtin_measured_boot, builtin_runtime};

mod common;
use common::{fixture, p50, synthetic_digest, synthetic_ima_list, synthetic_path};

fn timed<R>(runs: usize, mut f: impl FnMut() -> R) -> Duration {
    p50((0..runs)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(f());
            t.elapsed()
        })
        .collect())
}

/// The Fedora log minus the firmware events `example` does not know (as in the tests), so
/// that an evaluation walks every event instead of stopping at the first.
fn example_compatible_log() -> EventLog {
    let mut log = EventLog::parse(&fixture(
        "keylime/test/data/create-mb-policy/binary_bios_measurements",
    ))
    .unwrap();
    let header = log.events.remove(0);
    log.events.retain(|e| match (e.pcr, e.type_name().as_str()) {
        (0, "EV_NO_ACTION" | "EV_POST_CODE" | "EV_NONHOST_INFO" | "EV_S_CRTM_CONTENTS") => false,
        (1, "EV_EFI_VARIABLE_DRIVER_CONFIG") => false,
        (4, "EV_EFI_BOOT_SERVICES_APPLICATION") => {
            !matches!(e.decode(), EventData::ImageLoad(i) if i.device_path_text.starts_with("FvVol("))
        }
        _ => true,
    });
    log.events.insert(0, header);
    EventLog::parse(&log.encode()).unwrap()
}

fn main() {
    let limits = PolicyLimits {
        memory_bytes: 1 << 30,
        deadline: Duration::from_secs(30),
    };
    for (name, module) in [
        ("reject-all", builtin_measured_boot("reject-all").unwrap()),
        (
            "keylime-mb-example",
            builtin_measured_boot("keylime-mb-example").unwrap(),
        ),
        ("keylime-runtime", builtin_runtime("keylime-runtime").unwrap()),
    ] {
        let compile = timed(5, || {
            PolicyRuntime::new(limits, None)
                .unwrap()
                .component(module)
                .unwrap();
        });
        let cache = tempfile::tempdir().unwrap();
        let dir = Some(cache.path().to_path_buf());
        PolicyRuntime::new(limits, dir.clone())
            .unwrap()
            .component(module)
            .unwrap();
        let cached = timed(21, || {
            let runtime = PolicyRuntime::new(limits, dir.clone()).unwrap();
            let t = Instant::now();
            runtime.component(module).unwrap();
            t.elapsed()
        });
        println!(
            "{name:<19} ({:>4} KiB): compile p50 {compile:>10.2?}, load from disk cache p50 {cached:>8.2?}",
            module.len() / 1024
        );
    }

    // keylime-mb-example on the Fedora log, with the refstate zest makes from it.
    let runtime = PolicyRuntime::new(limits, None).unwrap();
    let module = builtin_measured_boot("keylime-mb-example").unwrap();
    let log = example_compatible_log();
    let mut refstate = measured_boot_refstate(&log, true).unwrap();
    refstate["dbx"] = json!([]);
    let refstate = refstate.to_string();
    let replayed = log.replay();
    let quoted: Vec<(u32, Vec<u8>)> = replayed[&HashAlg::Sha256]
        .iter()
        .map(|(i, v)| (*i, v.clone()))
        .collect();
    let verified_pcrs = quoted.iter().map(|(i, _)| *i).collect();
    let evidence = BootEvidence {
        log: &log,
        replayed: &replayed,
        quoted_bank: HashAlg::Sha256,
        quoted: &quoted,
        verified_pcrs: &verified_pcrs,
        first_attestation: true,
        prior_state: None,
    };
    let policy =
        MeasuredBootPolicy::load(&runtime, "keylime-mb-example", module, refstate.as_bytes()).unwrap();
    assert!(policy.evaluate(&evidence).unwrap().failures.is_empty());
    let cold = timed(201, || {
        let policy =
            MeasuredBootPolicy::load(&runtime, "keylime-mb-example", module, refstate.as_bytes()).unwrap();
        policy.evaluate(&evidence).unwrap()
    });
    let warm = timed(2001, || policy.evaluate(&evidence).unwrap());
    println!(
        "keylime-mb-example, Fedora log ({} events, PASS): evaluate on a loaded instance p50 {warm:.2?}; \
         instantiate + load refstate + evaluate p50 {cold:.2?}",
        log.events.len()
    );

    // keylime-runtime: 100,000 entries against a policy listing 100,000 paths.
    const N: u32 = 100_000;
    let text = synthetic_ima_list(N);
    let digests: serde_json::Map<String, serde_json::Value> = (0..N)
        .map(|i| (synthetic_path(i), json!([hex::encode(synthetic_digest(i))])))
        .collect();
    let document = json!({
        "meta": {"version": 1, "generator": 3},
        "release": 0,
        "digests": digests,
        "excludes": ["/tmp/.*", "/var/log/.*", "/home/[^/]+/\\.cache/.*"],
        "keyrings": {},
        "ima": {"ignored_keyrings": [], "log_hash_alg": "sha1", "dm_policy": null},
        "ima-buf": {},
        "verification-keys": "",
    })
    .to_string();
    let module = builtin_runtime("keylime-runtime").unwrap();
    let t = Instant::now();
    let policy = RuntimePolicy::load(&runtime, "keylime-runtime", module, document.as_bytes()).unwrap();
    let load = t.elapsed();
    let start = ImaPosition::start(HashAlg::Sha256);
    let quoted = replay(&text, HashAlg::Sha256, HashAlg::Sha1, &start, None).final_pcr10;
    let evaluate = || {
        let replayed = replay(&text, HashAlg::Sha256, HashAlg::Sha1, &start, Some(&quoted));
        let verdict = policy
            .evaluate(&ImaEvidence {
                text: &text,
                replay: &replayed,
                bank: HashAlg::Sha256,
                start_offset: 0,
                boot_aggregates: &[],
                prior_state: None,
            })
            .unwrap();
        assert!(verdict.failures.is_empty());
    };
    let whole = timed(9, evaluate);
    let native = timed(9, || {
        replay(&text, HashAlg::Sha256, HashAlg::Sha1, &start, Some(&quoted))
    });
    println!(
        "keylime-runtime, {N} ima-ng entries vs a {N}-path policy ({:.1} MB JSON, loaded in {load:.0?}): \
         p50 {whole:.1?} per list = {:.2}M entries/s per core (native parse+replay alone {native:.1?})",
        document.len() as f64 / 1e6,
        f64::from(N) / whole.as_secs_f64() / 1e6
    );
}
