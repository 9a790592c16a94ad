//! Hostile policy components give clean failures, and the host keeps evaluating afterwards.

use std::time::{Duration, Instant};

use zest::evidence::HashAlg;
use zest::evidence::uefi::{EventLog, PcrBanks};
use zest::policy::measured_boot::{BootEvidence, MeasuredBootPolicy};
use zest::policy::{PolicyError, PolicyLimits, PolicyRuntime, PolicySource};
use zest_tests::fixture;
use zest_tests::policies::test_component;

fn fedora_log() -> (EventLog, PcrBanks) {
    let log = EventLog::parse(&fixture(
        "keylime/test/data/create-mb-policy/binary_bios_measurements",
    ))
    .unwrap();
    let replayed = log.replay();
    (log, replayed)
}

/// Every PCR the log extends: the sandbox tests are about the component, not the replay.
fn every_pcr(log: &EventLog) -> std::collections::BTreeSet<u32> {
    log.events.iter().map(|e| e.pcr).collect()
}

fn evidence<'a>(
    log: &'a EventLog,
    replayed: &'a PcrBanks,
    verified_pcrs: &'a std::collections::BTreeSet<u32>,
) -> BootEvidence<'a> {
    BootEvidence {
        log,
        replayed,
        quoted_bank: HashAlg::Sha256,
        quoted: &[],
        verified_pcrs,
        first_attestation: false,
        prior_state: None,
    }
}

fn evaluate(runtime: &PolicyRuntime, mode: &str) -> Result<usize, PolicyError> {
    let (log, replayed) = fedora_log();
    let policy = MeasuredBootPolicy::load(runtime, "hostile", &test_component("hostile"), mode.as_bytes())?;
    policy
        .evaluate(&evidence(&log, &replayed, &every_pcr(&log)))
        .map(|v| v.failures.len())
}

#[test]
fn each_hostile_behaviour_is_a_clean_failure_and_good_evaluations_continue() {
    let limits = PolicyLimits {
        memory_bytes: 64 << 20,
        deadline: Duration::from_millis(300),
    };
    let runtime = PolicyRuntime::new(limits, None).unwrap();
    assert_eq!(evaluate(&runtime, "ok"), Ok(0));

    let started = Instant::now();
    assert_eq!(
        evaluate(&runtime, "loop"),
        Err(PolicyError::Timeout(limits.deadline))
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the deadline did not stop the loop"
    );

    for mode in ["alloc", "trap", "recurse", "huge"] {
        match evaluate(&runtime, mode) {
            Err(PolicyError::Trap(_)) | Err(PolicyError::Timeout(_)) => {}
            other => panic!("{mode}: expected a trap, got {other:?}"),
        }
        assert_eq!(evaluate(&runtime, "ok"), Ok(0), "a good evaluation after {mode}");
    }

    assert!(matches!(evaluate(&runtime, "load-fail"), Err(PolicyError::Load(m)) if m.contains("refuses")));
}

#[test]
fn a_component_of_the_wrong_world_is_refused() {
    let runtime = PolicyRuntime::new(PolicyLimits::default(), None).unwrap();
    match MeasuredBootPolicy::load(&runtime, "wrong", &test_component("wrong_world"), b"{}") {
        Err(PolicyError::WrongWorld { world, .. }) => assert_eq!(world, "measured-boot-policy"),
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("a runtime-policy component was accepted as a measured-boot policy"),
    }
}

#[test]
fn a_trapped_instance_stays_refused_until_reloaded() {
    let runtime = PolicyRuntime::new(PolicyLimits::default(), None).unwrap();
    let (log, replayed) = fedora_log();
    let pcrs = every_pcr(&log);
    let evidence = evidence(&log, &replayed, &pcrs);
    let policy = MeasuredBootPolicy::load(&runtime, "hostile", &test_component("hostile"), b"trap").unwrap();
    assert!(matches!(policy.evaluate(&evidence), Err(PolicyError::Trap(_))));
    assert!(
        policy.evaluate(&evidence).is_err(),
        "a trapped instance must not be reused"
    );
}

#[test]
fn runtime_policies_receive_ima_batches_and_worlds_are_not_mixed() {
    use zest::evidence::ima::{ImaPosition, replay};
    use zest::policy::runtime::{ImaEvidence, RuntimePolicy};

    let runtime = PolicyRuntime::new(PolicyLimits::default(), None).unwrap();
    // `wrong_world` is a runtime policy that accepts everything.
    let policy = RuntimePolicy::load(&runtime, "accepting", &test_component("wrong_world"), b"{}").unwrap();
    assert_eq!(policy.log_hash_alg(), Some(HashAlg::Sha1));
    let text = String::from_utf8(fixture("keylime/test/data/create-runtime-policy/ima-log-sha256")).unwrap();
    let replayed = replay(
        &text,
        HashAlg::Sha256,
        HashAlg::Sha1,
        &ImaPosition::start(HashAlg::Sha256),
        None,
    );
    let evidence = ImaEvidence {
        text: &text,
        replay: &replayed,
        bank: HashAlg::Sha256,
        start_offset: 0,
        boot_aggregates: &[],
        prior_state: None,
    };
    let entries = zest::evidence::ima::lines(&text).count() as u8;
    for _ in 0..3 {
        let verdict = policy.evaluate(&evidence).unwrap();
        assert!(verdict.failures.is_empty());
        assert_eq!(
            verdict.state,
            Some(vec![entries, entries, 0]),
            "the policy saw every entry and its facts"
        );
    }

    let mb = zest::policy::builtin_measured_boot("accept-all").unwrap();
    assert!(matches!(
        RuntimePolicy::load(&runtime, "mb-as-runtime", mb, b"{}"),
        Err(PolicyError::WrongWorld {
            world: "runtime-policy",
            ..
        })
    ));
}

#[test]
fn the_registry_reuses_instances_per_tenant_and_rebuilds_broken_ones() {
    use std::sync::Arc;
    use zest::policy::PolicyRegistry;

    let registry = PolicyRegistry::new(Arc::new(
        PolicyRuntime::new(PolicyLimits::default(), None).unwrap(),
    ));
    let (log, replayed) = fedora_log();
    let pcrs = every_pcr(&log);
    let evidence = evidence(&log, &replayed, &pcrs);
    let hostile = test_component("hostile");

    for _ in 0..3 {
        assert!(
            registry
                .evaluate_measured_boot("tenant-a", &PolicySource::new("ok", &hostile, b"ok"), &evidence)
                .unwrap()
                .failures
                .is_empty()
        );
    }
    assert_eq!(
        registry.loaded(),
        1,
        "one instance serves every evaluation of a document"
    );
    registry
        .evaluate_measured_boot("tenant-b", &PolicySource::new("ok", &hostile, b"ok"), &evidence)
        .unwrap();
    assert_eq!(registry.loaded(), 2, "tenants never share an instance");

    // A trapping instance is dropped, so the next call traps afresh in a new instance rather
    // than failing to enter the broken one.
    for _ in 0..2 {
        match registry.evaluate_measured_boot(
            "tenant-a",
            &PolicySource::new("trap", &hostile, b"trap"),
            &evidence,
        ) {
            Err(PolicyError::Trap(message)) => assert!(!message.contains("cannot enter"), "{message}"),
            other => panic!("expected a trap, got {other:?}"),
        }
    }
    assert_eq!(registry.loaded(), 2);
}

#[test]
fn traps_and_timeouts_are_counted_per_module() {
    use std::sync::Arc;
    use zest::metrics::{KindModuleReason, Metrics, counter_value};
    use zest::policy::PolicyRegistry;

    let metrics = Arc::new(Metrics::default());
    let limits = PolicyLimits {
        deadline: Duration::from_millis(200),
        ..PolicyLimits::default()
    };
    let registry = PolicyRegistry::with_metrics(
        Arc::new(PolicyRuntime::new(limits, None).unwrap()),
        metrics.clone(),
    );
    let (log, replayed) = fedora_log();
    let pcrs = every_pcr(&log);
    let evidence = evidence(&log, &replayed, &pcrs);
    let hostile = test_component("hostile");
    // One module id for every document: the counters are per module.
    let source = |mode: &'static str| {
        PolicySource::new("hostile", &hostile, mode.as_bytes()).known_as("sha256:hostile", mode)
    };
    for _ in 0..2 {
        assert!(matches!(
            registry.evaluate_measured_boot("t", &source("trap"), &evidence),
            Err(PolicyError::Trap(_))
        ));
    }
    assert!(matches!(
        registry.evaluate_measured_boot("t", &source("loop"), &evidence),
        Err(PolicyError::Timeout(_))
    ));
    registry
        .evaluate_measured_boot("t", &source("ok"), &evidence)
        .unwrap();
    let labels = |reason| KindModuleReason {
        kind: "measured-boot",
        module: "sha256:hostile".into(),
        reason,
    };
    assert_eq!(counter_value(&metrics.policy_aborts, &labels("trap")), 2);
    assert_eq!(counter_value(&metrics.policy_aborts, &labels("timeout")), 1);
    let text = metrics.render(|_| {});
    assert!(
        text.contains(
            "zest_policy_evaluation_seconds_count{kind=\"measured-boot\",module=\"sha256:hostile\"} 4\n"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "zest_policy_aborts_total{kind=\"measured-boot\",module=\"sha256:hostile\",reason=\"timeout\"} 1\n"
        ),
        "{text}"
    );
}

#[test]
fn a_file_that_is_not_a_policy_component_says_what_it_is() {
    let runtime = PolicyRuntime::new(PolicyLimits::default(), None).unwrap();
    let refused = |bytes: &[u8]| match MeasuredBootPolicy::load(&runtime, "p", bytes, b"{}") {
        Err(e) => e.to_string(),
        Ok(_) => panic!("{bytes:?} loaded"),
    };
    let garbage = refused(&[0xde, 0xad, 0xbe, 0xef, 0, 1]);
    assert!(
        garbage.contains("not WebAssembly") && garbage.contains("deadbeef"),
        "{garbage}"
    );
    let text = refused(br#"{"secure_boot": true}"#);
    assert!(text.contains("this is text"), "{text}");
    let core = refused(b"\0asm\x01\0\0\0");
    assert!(
        core.contains("core WebAssembly module") && core.contains("wasm32-wasip2"),
        "{core}"
    );
    // A component that exports nothing: built without the SDK's export macro.
    let empty = refused(b"\0asm\x0d\0\x01\0");
    assert!(empty.contains("export_measured_boot_policy!"), "{empty}");
}

/// A call that finds every instance of its document busy gets another instance (up to the
/// pool's bound) instead of waiting behind the busy one; instances that break leave the pool
/// one by one, and the document loads afresh afterwards.
#[test]
fn a_busy_instance_does_not_serialise_another_call_of_its_policy() {
    use std::sync::Arc;
    use zest::metrics::{KindLabel, Metrics, counter_value};
    use zest::policy::PolicyRegistry;

    let metrics = Arc::new(Metrics::default());
    let limits = PolicyLimits {
        deadline: Duration::from_secs(2),
        ..PolicyLimits::default()
    };
    let registry = Arc::new(
        PolicyRegistry::with_metrics(
            Arc::new(PolicyRuntime::new(limits, None).unwrap()),
            metrics.clone(),
        )
        .with_max_per_document(2),
    );
    let (log, replayed) = fedora_log();
    let pcrs = every_pcr(&log);
    let shared = Arc::new((log, replayed, pcrs, test_component("hostile")));
    let loads = || {
        counter_value(
            &metrics.policy_loads,
            &KindLabel {
                kind: "measured-boot",
            },
        )
    };
    let evaluate = {
        let registry = registry.clone();
        move |mode: &'static str| {
            let (log, replayed, pcrs, hostile) = &*shared;
            let evidence = evidence(log, replayed, pcrs);
            let source =
                PolicySource::new("hostile", hostile, mode.as_bytes()).known_as("sha256:hostile", mode);
            registry.evaluate_measured_boot("t", &source, &evidence)
        }
    };
    // The first call enters its instance and stays there until its deadline.
    let first = std::thread::spawn({
        let evaluate = evaluate.clone();
        move || evaluate("loop")
    });
    while registry.busy_instances() == 0 {
        assert!(
            !first.is_finished(),
            "the first call ended before it was seen busy"
        );
        std::thread::yield_now();
    }
    // The second call of the same document does not wait: it loads a second instance.
    assert!(matches!(evaluate("loop"), Err(PolicyError::Timeout(_))));
    assert_eq!(
        loads(),
        2,
        "a second instance was loaded while the first was busy"
    );
    assert!(matches!(first.join().unwrap(), Err(PolicyError::Timeout(_))));
    // Both broke and left the pool; the next call loads the document afresh.
    assert_eq!(registry.cached_instances(), 0);
    assert!(evaluate("ok").is_ok());
    assert_eq!(loads(), 3);
    assert_eq!(registry.cached_instances(), 1);
}

/// A tenant's quota limits its own instances (here the evaluation deadline), not another
/// tenant's; changing it reloads the tenant's instances under the new limit.
#[test]
fn a_tenants_deadline_quota_bounds_its_calls_only() {
    use std::sync::Arc;
    use zest::policy::PolicyRegistry;

    let limits = PolicyLimits {
        deadline: Duration::from_millis(600),
        ..PolicyLimits::default()
    };
    let registry = PolicyRegistry::new(Arc::new(PolicyRuntime::new(limits, None).unwrap()));
    let (log, replayed) = fedora_log();
    let pcrs = every_pcr(&log);
    let evidence = evidence(&log, &replayed, &pcrs);
    let hostile = test_component("hostile");
    let source = PolicySource::new("hostile", &hostile, b"loop").known_as("sha256:hostile", "loop");
    let timeout = |tenant: &str| match registry.evaluate_measured_boot(tenant, &source, &evidence) {
        Err(PolicyError::Timeout(after)) => after,
        other => panic!("{tenant}: {other:?}"),
    };
    registry.set_tenant_limits(
        "tight",
        Some(PolicyLimits {
            deadline: Duration::from_millis(100),
            ..limits
        }),
    );
    assert_eq!(timeout("tight"), Duration::from_millis(100));
    assert_eq!(timeout("roomy"), Duration::from_millis(600));
    // A quota above the server's limit is held to the server's.
    registry.set_tenant_limits(
        "tight",
        Some(PolicyLimits {
            deadline: Duration::from_secs(60),
            ..limits
        }),
    );
    assert_eq!(timeout("tight"), Duration::from_millis(600));
}
