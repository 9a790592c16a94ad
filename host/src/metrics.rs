//! Counters and histograms of one service, rendered in Prometheus' text format at
//! `/metrics`. Rates (attestations per second) are Prometheus' `rate()` over the counters;
//! gauges that mirror stored state (agents per state) are read from the store at scrape time
//! and handed to [`Metrics::render`].

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds (seconds) of the latency buckets: verification takes milliseconds; a policy
/// call that reaches the deadline takes seconds.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// One metric family's name, help text and type.
#[derive(Debug, Clone, Copy)]
pub struct Family {
    pub name: &'static str,
    pub help: &'static str,
    kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Family {
    const fn new(kind: Kind, name: &'static str, help: &'static str) -> Self {
        Self { name, help, kind }
    }

    pub const fn counter(name: &'static str, help: &'static str) -> Self {
        Self::new(Kind::Counter, name, help)
    }

    pub const fn gauge(name: &'static str, help: &'static str) -> Self {
        Self::new(Kind::Gauge, name, help)
    }

    pub const fn histogram(name: &'static str, help: &'static str) -> Self {
        Self::new(Kind::Histogram, name, help)
    }
}

// The families zest exports; every `count`/`observe` names one of these.
pub const ATTESTATIONS: Family = Family::counter(
    "zest_verifier_attestations_total",
    "Attestations judged, by mode (pull, push) and result (pass, fail).",
);
pub const ATTESTATION_FAILURES: Family = Family::counter(
    "zest_verifier_attestation_failures_total",
    "Failed attestations by mode and the failure's Keylime event id.",
);
pub const ATTESTATION_SECONDS: Family = Family::histogram(
    "zest_verifier_attestation_duration_seconds",
    "Verification latency: pull, quote request sent to verdict; push, evidence received to verdict.",
);
pub const AGENT_ERRORS: Family = Family::counter(
    "zest_verifier_agent_errors_total",
    "Pull rounds that got no usable answer from the agent, by reason.",
);
pub const VERIFIER_AGENTS: Family = Family::gauge(
    "zest_verifier_agents",
    "Enrolled agents by mode and operational state.",
);
pub const POLICY_SECONDS: Family = Family::histogram(
    "zest_policy_evaluation_seconds",
    "Time of one policy component call, by kind (runtime, measured-boot) and module.",
);
pub const POLICY_ABORTS: Family = Family::counter(
    "zest_policy_aborts_total",
    "Policy component calls that trapped or ran out of time, by kind, module and reason (trap, timeout).",
);
pub const REGISTRAR_AGENTS: Family = Family::gauge(
    "zest_registrar_agents",
    "Registered agents by state (active: credential activated; inactive: waiting).",
);
pub const REGISTRATIONS: Family = Family::counter(
    "zest_registrar_registrations_total",
    "Registration requests by result (ok, refused).",
);
pub const ACTIVATIONS: Family = Family::counter(
    "zest_registrar_activations_total",
    "Activation requests by result (ok, refused).",
);

type Labels = Vec<(&'static str, String)>;

#[derive(Debug, Clone, Default)]
struct Histogram {
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Debug, Default)]
struct Inner {
    counters: BTreeMap<&'static str, (Family, BTreeMap<Labels, u64>)>,
    histograms: BTreeMap<&'static str, (Family, BTreeMap<Labels, Histogram>)>,
}

/// The metrics of one service (each server has its own, so two in one process never mix).
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

fn owned(labels: &[(&'static str, &str)]) -> Labels {
    labels.iter().map(|(k, v)| (*k, (*v).to_owned())).collect()
}

impl Metrics {
    /// Adds one to the counter `family{labels}`.
    pub fn count(&self, family: Family, labels: &[(&'static str, &str)]) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        let (_, series) = inner
            .counters
            .entry(family.name)
            .or_insert_with(|| (family, BTreeMap::new()));
        *series.entry(owned(labels)).or_default() += 1;
    }

    /// Records one observation of `elapsed` in the histogram `family{labels}`.
    pub fn observe(&self, family: Family, labels: &[(&'static str, &str)], elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        let (_, series) = inner
            .histograms
            .entry(family.name)
            .or_insert_with(|| (family, BTreeMap::new()));
        let h = series.entry(owned(labels)).or_default();
        for (bucket, bound) in h.buckets.iter_mut().zip(BUCKETS) {
            if seconds <= bound {
                *bucket += 1;
            }
        }
        h.count += 1;
        h.sum += seconds;
    }

    /// The current value of a counter (tests and the CLI read it).
    pub fn counter_value(&self, family: Family, labels: &[(&'static str, &str)]) -> u64 {
        let Ok(inner) = self.inner.lock() else {
            return 0;
        };
        inner
            .counters
            .get(family.name)
            .and_then(|(_, series)| series.get(&owned(labels)))
            .copied()
            .unwrap_or(0)
    }

    /// Prometheus text format (version 0.0.4) of every series, preceded by `gauges` read
    /// by the caller.
    pub fn render(&self, gauges: &[(Family, Vec<(Labels, f64)>)]) -> String {
        let mut out = String::new();
        for (family, series) in gauges {
            header(&mut out, family);
            for (labels, value) in series {
                let _ = writeln!(
                    out,
                    "{}{} {}",
                    family.name,
                    label_text(labels, None),
                    number(*value)
                );
            }
        }
        let Ok(inner) = self.inner.lock() else {
            return out;
        };
        for (family, series) in inner.counters.values() {
            header(&mut out, family);
            for (labels, value) in series {
                let _ = writeln!(out, "{}{} {value}", family.name, label_text(labels, None));
            }
        }
        for (family, series) in inner.histograms.values() {
            header(&mut out, family);
            for (labels, h) in series {
                for (bound, count) in BUCKETS.iter().zip(h.buckets) {
                    let le = number(*bound);
                    let _ = writeln!(
                        out,
                        "{}_bucket{} {count}",
                        family.name,
                        label_text(labels, Some(&le))
                    );
                }
                let _ = writeln!(
                    out,
                    "{}_bucket{} {}",
                    family.name,
                    label_text(labels, Some("+Inf")),
                    h.count
                );
                let _ = writeln!(
                    out,
                    "{}_sum{} {}",
                    family.name,
                    label_text(labels, None),
                    number(h.sum)
                );
                let _ = writeln!(
                    out,
                    "{}_count{} {}",
                    family.name,
                    label_text(labels, None),
                    h.count
                );
            }
        }
        out
    }
}

/// Labels for a gauge series.
pub fn labels(pairs: &[(&'static str, &str)]) -> Labels {
    owned(pairs)
}

fn header(out: &mut String, family: &Family) {
    let kind = match family.kind {
        Kind::Counter => "counter",
        Kind::Gauge => "gauge",
        Kind::Histogram => "histogram",
    };
    let _ = writeln!(out, "# HELP {} {}", family.name, family.help);
    let _ = writeln!(out, "# TYPE {} {kind}", family.name);
}

fn number(v: f64) -> String {
    if v.is_finite() {
        format!("{v}")
    } else {
        "NaN".into()
    }
}

fn label_text(labels: &Labels, le: Option<&str>) -> String {
    if labels.is_empty() && le.is_none() {
        return String::new();
    }
    let mut parts: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    if let Some(le) = le {
        parts.push(format!("le=\"{le}\""));
    }
    format!("{{{}}}", parts.join(","))
}

/// Label values escape backslash, quote and newline (the text format's rule).
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// The `Content-Type` of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_gauges_and_histograms() {
        let m = Metrics::default();
        m.count(ATTESTATIONS, &[("mode", "pull"), ("result", "pass")]);
        m.count(ATTESTATIONS, &[("mode", "pull"), ("result", "pass")]);
        m.count(ATTESTATION_FAILURES, &[("mode", "push"), ("event_id", "a\"b")]);
        m.observe(ATTESTATION_SECONDS, &[("mode", "pull")], Duration::from_millis(3));
        let text = m.render(&[(VERIFIER_AGENTS, vec![(labels(&[("state", "Get Quote")]), 2.0)])]);
        assert!(
            text.contains("# TYPE zest_verifier_agents gauge\nzest_verifier_agents{state=\"Get Quote\"} 2\n")
        );
        assert!(text.contains("zest_verifier_attestations_total{mode=\"pull\",result=\"pass\"} 2\n"));
        assert!(text.contains("event_id=\"a\\\"b\""));
        assert!(
            text.contains(
                "zest_verifier_attestation_duration_seconds_bucket{mode=\"pull\",le=\"0.0025\"} 0\n"
            )
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
        assert_eq!(
            m.counter_value(ATTESTATIONS, &[("mode", "pull"), ("result", "pass")]),
            2
        );
    }
}
