//! Counters and histograms of one service, rendered in Prometheus' text format at
//! `/metrics`. Rates (attestations per second) are Prometheus' `rate()` over the counters;
//! gauges that mirror stored state (agents per state) are read from the store at scrape time
//! and set just before rendering.
//!
//! Each family is a `prometheus-client` family with a typed label set: counting is an atomic
//! add under a shared read lock, with no allocation for labels that are static strings.

use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Upper bounds (seconds) of the latency buckets: verification takes milliseconds; a policy
/// call that reaches the deadline takes seconds.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Makes the latency histograms of a family.
#[derive(Debug, Clone, Copy, Default)]
pub struct LatencyBuckets;

impl MetricConstructor<Histogram> for LatencyBuckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(BUCKETS)
    }
}

/// `mode` (pull, push) and `result` (pass, fail).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ModeResult {
    pub mode: &'static str,
    pub result: &'static str,
}

/// `mode` and a failure's Keylime `event_id`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ModeEvent {
    pub mode: &'static str,
    pub event_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ModeLabel {
    pub mode: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

/// A policy kind (runtime, measured-boot) and module id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct KindModule {
    pub kind: &'static str,
    pub module: String,
}

/// A policy kind, module id and why the call was aborted (trap, panic, timeout).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct KindModuleReason {
    pub kind: &'static str,
    pub module: String,
    pub reason: &'static str,
}

/// An enrolled agent's mode, operational state and attestation status.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct AgentLabels {
    pub mode: &'static str,
    pub operational_state: &'static str,
    pub attestation_status: &'static str,
}

/// A tenant of a shared server and a verdict's result (bounded: tenants are the operator's).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct TenantResult {
    pub tenant: String,
    pub result: &'static str,
}

/// A tenant of a shared server and one of its quotas (bounded: tenants are the operator's).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct TenantQuotaLabels {
    pub tenant: String,
    pub quota: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct StateLabel {
    pub state: &'static str,
}

type Latency<L> = Family<L, Histogram, LatencyBuckets>;

/// The metrics of one service (each server has its own, so two in one process never mix).
pub struct Metrics {
    registry: Registry,
    /// Verdicts by mode and result.
    pub attestations: Family<ModeResult, Counter>,
    /// Failures by mode and event id.
    pub attestation_failures: Family<ModeEvent, Counter>,
    /// Evidence (pull: quote request) to verdict.
    pub attestation_seconds: Latency<ModeLabel>,
    /// Pull rounds without a usable answer.
    pub agent_errors: Family<ReasonLabel, Counter>,
    /// Enrolled agents now (set at scrape time).
    pub verifier_agents: Family<AgentLabels, Gauge>,
    /// One policy component call.
    pub policy_seconds: Latency<KindModule>,
    /// Policy calls that trapped, panicked or ran out of time.
    pub policy_aborts: Family<KindModuleReason, Counter>,
    /// Documents loaded into a new instance (cache misses).
    pub policy_loads: Family<KindLabel, Counter>,
    /// Instances evicted to keep the cache within its bound.
    pub policy_evictions: Family<KindLabel, Counter>,
    /// Policy instances by state (set at scrape time).
    pub policy_instances: Family<StateLabel, Gauge>,
    /// Registered agents by state (set at scrape time).
    pub registrar_agents: Family<StateLabel, Gauge>,
    pub registrations: Family<ResultLabel, Counter>,
    pub activations: Family<ResultLabel, Counter>,
    /// Verdicts by tenant and result.
    pub tenant_attestations: Family<TenantResult, Counter>,
    /// Requests refused because a tenant's quota would be exceeded.
    pub quota_refusals: Family<TenantQuotaLabels, Counter>,
    /// Two scrapes at once would interleave setting and reading the gauges.
    scrape: Mutex<()>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let attestations = Family::<ModeResult, Counter>::default();
        let attestation_failures = Family::<ModeEvent, Counter>::default();
        let attestation_seconds = Latency::<ModeLabel>::new_with_constructor(LatencyBuckets);
        let agent_errors = Family::<ReasonLabel, Counter>::default();
        let verifier_agents = Family::<AgentLabels, Gauge>::default();
        let policy_seconds = Latency::<KindModule>::new_with_constructor(LatencyBuckets);
        let policy_aborts = Family::<KindModuleReason, Counter>::default();
        let policy_loads = Family::<KindLabel, Counter>::default();
        let policy_evictions = Family::<KindLabel, Counter>::default();
        let policy_instances = Family::<StateLabel, Gauge>::default();
        let registrar_agents = Family::<StateLabel, Gauge>::default();
        let registrations = Family::<ResultLabel, Counter>::default();
        let activations = Family::<ResultLabel, Counter>::default();
        let quota_refusals = Family::<TenantQuotaLabels, Counter>::default();
        let tenant_attestations = Family::<TenantResult, Counter>::default();
        registry.register(
            "zest_tenant_attestations",
            "Attestations judged, by tenant of a shared server and result (pass, fail)",
            tenant_attestations.clone(),
        );
        registry.register(
            "zest_verifier_attestations",
            "Attestations judged, by mode (pull, push) and result (pass, fail)",
            attestations.clone(),
        );
        registry.register(
            "zest_verifier_attestation_failures",
            "Failed attestations by mode and the failure's Keylime event id",
            attestation_failures.clone(),
        );
        registry.register(
            "zest_verifier_attestation_duration_seconds",
            "Verification latency: pull, quote request sent to verdict; push, evidence received to verdict",
            attestation_seconds.clone(),
        );
        registry.register(
            "zest_verifier_agent_errors",
            "Pull rounds that got no usable answer from the agent, by reason",
            agent_errors.clone(),
        );
        registry.register(
            "zest_verifier_agents",
            "Enrolled agents by mode and operational state",
            verifier_agents.clone(),
        );
        registry.register(
            "zest_policy_evaluation_seconds",
            "Time of one policy component call, by kind (runtime, measured-boot) and module",
            policy_seconds.clone(),
        );
        registry.register(
            "zest_policy_aborts",
            "Policy component calls that trapped or ran out of time, by kind, module and reason (trap, timeout)",
            policy_aborts.clone(),
        );
        registry.register(
            "zest_policy_loads",
            "Policy documents loaded into a new component instance (cache misses), by kind",
            policy_loads.clone(),
        );
        registry.register(
            "zest_policy_evictions",
            "Loaded policy instances evicted to keep the cache within its bound, by kind",
            policy_evictions.clone(),
        );
        registry.register(
            "zest_policy_instances",
            "Policy instances by state: cached, live (cached, loading or finishing a call), capacity",
            policy_instances.clone(),
        );
        registry.register(
            "zest_registrar_agents",
            "Registered agents by state (active: credential activated; inactive: waiting)",
            registrar_agents.clone(),
        );
        registry.register(
            "zest_registrar_registrations",
            "Registration requests by result (ok, refused)",
            registrations.clone(),
        );
        registry.register(
            "zest_registrar_activations",
            "Activation requests by result (ok, refused)",
            activations.clone(),
        );
        registry.register(
            "zest_tenant_quota_refusals",
            "Requests refused because a tenant's quota would be exceeded, by tenant and quota",
            quota_refusals.clone(),
        );
        Self {
            registry,
            attestations,
            attestation_failures,
            attestation_seconds,
            agent_errors,
            verifier_agents,
            policy_seconds,
            policy_aborts,
            policy_loads,
            policy_evictions,
            policy_instances,
            registrar_agents,
            registrations,
            activations,
            quota_refusals,
            tenant_attestations,
            scrape: Mutex::new(()),
        }
    }
}

impl Metrics {
    /// Prometheus text format (version 0.0.4) of every series that has a value. `set_gauges`
    /// sets the gauges read at scrape time; it runs under the scrape lock, so two scrapes
    /// never mix their readings.
    pub fn render(&self, set_gauges: impl FnOnce(&Self)) -> String {
        let _scrape = self.scrape.lock();
        set_gauges(self);
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }
}

/// Adds one to a counter.
pub fn count<L: EncodeLabelSet + Clone + Eq + std::hash::Hash>(family: &Family<L, Counter>, labels: &L) {
    family.get_or_create(labels).inc();
}

/// Records one latency.
pub fn observe<L: EncodeLabelSet + Clone + Eq + std::hash::Hash>(
    family: &Latency<L>,
    labels: &L,
    elapsed: Duration,
) {
    family.get_or_create(labels).observe(elapsed.as_secs_f64());
}

/// Replaces a gauge family's series with `series` (a state no longer present disappears).
pub fn set_gauges<L: EncodeLabelSet + Clone + Eq + std::hash::Hash>(
    family: &Family<L, Gauge>,
    series: impl IntoIterator<Item = (L, u64)>,
) {
    family.clear();
    for (labels, value) in series {
        family
            .get_or_create(&labels)
            .set(i64::try_from(value).unwrap_or(i64::MAX));
    }
}

/// The current value of a counter (tests and the CLI read it).
pub fn counter_value<L: EncodeLabelSet + Clone + Eq + std::hash::Hash>(
    family: &Family<L, Counter>,
    labels: &L,
) -> u64 {
    family.get(labels).map(|c| c.get()).unwrap_or(0)
}

/// The `Content-Type` of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_gauges_and_histograms() {
        let m = Metrics::default();
        let pass = ModeResult {
            mode: "pull",
            result: "pass",
        };
        count(&m.attestations, &pass);
        count(&m.attestations, &pass);
        count(
            &m.attestation_failures,
            &ModeEvent {
                mode: "push",
                event_id: "a\"b".into(),
            },
        );
        observe(
            &m.attestation_seconds,
            &ModeLabel { mode: "pull" },
            Duration::from_millis(3),
        );
        let text = m.render(|m| {
            set_gauges(
                &m.verifier_agents,
                [(
                    AgentLabels {
                        mode: "pull",
                        operational_state: "Get Quote",
                        attestation_status: "PASS",
                    },
                    2,
                )],
            )
        });
        assert!(text.contains(
            "# TYPE zest_verifier_agents gauge\nzest_verifier_agents{mode=\"pull\",operational_state=\"Get Quote\",attestation_status=\"PASS\"} 2\n"
        ), "{text}");
        assert!(text.contains("zest_verifier_attestations_total{mode=\"pull\",result=\"pass\"} 2\n"));
        assert!(text.contains("event_id=\"a\\\"b\""), "{text}");
        assert!(
            text.contains(
                "zest_verifier_attestation_duration_seconds_bucket{mode=\"pull\",le=\"0.0025\"} 0\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "zest_verifier_attestation_duration_seconds_bucket{mode=\"pull\",le=\"0.005\"} 1\n"
            )
        );
        assert!(
            text.contains("zest_verifier_attestation_duration_seconds_bucket{mode=\"pull\",le=\"+Inf\"} 1\n")
        );
        assert!(text.contains("zest_verifier_attestation_duration_seconds_count{mode=\"pull\"} 1\n"));
        assert_eq!(counter_value(&m.attestations, &pass), 2);
        // A gauge series no longer read disappears.
        let text = m.render(|m| set_gauges(&m.verifier_agents, []));
        assert!(!text.contains("Get Quote"), "{text}");
    }
}
