//! Keylime's severity policy (`[verifier] severity_labels`, `severity_policy`): each failure
//! event gets a label by the first rule whose regex matches its whole id; a failure whose
//! highest label is the last (most severe) one, or that is irrecoverable, stops polling.
//! Labels are numbered from 0, and that number is the agent's `severity_level`.

use regex::Regex;
use serde_json::Value;
use thiserror::Error;

use super::pipeline::Failure;

#[derive(Debug, Error, PartialEq)]
pub enum SeverityError {
    #[error("severity_labels must be a non-empty JSON list of strings")]
    Labels,
    #[error(
        "severity_policy must be a non-empty JSON list of {{\"event_id\": regex, \"severity_label\": label}}"
    )]
    Policy,
    #[error("severity_policy: event_id {0:?} is not a valid regex: {1}")]
    Regex(String, String),
}

/// Labels from least to most severe, and the rules that pick one for an event id.
#[derive(Debug, Clone)]
pub struct SeverityPolicy {
    labels: Vec<String>,
    rules: Vec<(Regex, usize)>,
}

impl PartialEq for SeverityPolicy {
    fn eq(&self, other: &Self) -> bool {
        self.labels == other.labels
            && self.rules.len() == other.rules.len()
            && self
                .rules
                .iter()
                .zip(&other.rules)
                .all(|(a, b)| a.0.as_str() == b.0.as_str() && a.1 == b.1)
    }
}

/// What a round's failures amount to.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// The first event with the highest severity.
    pub event: Failure,
    pub level: i64,
    pub label: String,
    /// Polling stops: an irrecoverable event, or the highest label reached.
    pub stops: bool,
}

impl SeverityPolicy {
    /// Keylime's default: seven syslog-like labels, every event `emergency`.
    pub fn keylime_default() -> Self {
        let labels: Vec<String> = [
            "info",
            "notice",
            "warning",
            "error",
            "critical",
            "alert",
            "emergency",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        let max = labels.len() - 1;
        // A constant pattern that is valid regex syntax: compiling it cannot fail.
        #[allow(clippy::expect_used)]
        let catch_all = Regex::new("^(?:.*)$").expect("a constant regex");
        Self {
            labels,
            rules: vec![(catch_all, max)],
        }
    }

    /// Reads Keylime's option values (JSON lists, as in `verifier.conf`). A rule naming an
    /// unknown label gets the highest one, as Keylime does.
    pub fn from_keylime(labels: &str, policy: &str) -> Result<Self, SeverityError> {
        let labels: Vec<String> =
            serde_json::from_str::<Vec<String>>(labels).map_err(|_| SeverityError::Labels)?;
        if labels.is_empty() {
            return Err(SeverityError::Labels);
        }
        let max = labels.len() - 1;
        let rules: Vec<Value> = serde_json::from_str(policy).map_err(|_| SeverityError::Policy)?;
        if rules.is_empty() {
            return Err(SeverityError::Policy);
        }
        let rules = rules
            .iter()
            .map(|rule| {
                let (Some(id), Some(label)) = (rule["event_id"].as_str(), rule["severity_label"].as_str())
                else {
                    return Err(SeverityError::Policy);
                };
                // Python's re.fullmatch.
                let regex = Regex::new(&format!("^(?:{id})$"))
                    .map_err(|e| SeverityError::Regex(id.to_owned(), e.to_string()))?;
                let level = labels.iter().position(|l| l == label).unwrap_or(max);
                Ok((regex, level))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { labels, rules })
    }

    fn max(&self) -> usize {
        self.labels.len() - 1
    }

    /// The level of an event: irrecoverable events (quote validation and the verifier's own
    /// errors, which skip the remaining checks) always get the highest.
    fn level(&self, event_id: &str) -> usize {
        if irrecoverable(event_id) {
            return self.max();
        }
        self.rules
            .iter()
            .find(|(regex, _)| regex.is_match(event_id))
            .map_or(self.max(), |(_, level)| *level)
    }

    /// Judges a round's failures; `None` when there are none.
    pub fn judge(&self, failures: &[Failure]) -> Option<Verdict> {
        let mut highest: Option<(usize, &Failure)> = None;
        for failure in failures {
            // Keylime forces irrecoverable events to the highest label.
            let level = if !failure.recoverable || irrecoverable(&failure.event_id) {
                self.max()
            } else {
                self.level(&failure.event_id)
            };
            if highest.is_none_or(|(h, _)| level > h) {
                highest = Some((level, failure));
            }
        }
        let (level, event) = highest?;
        Some(Verdict {
            event: event.clone(),
            level: level as i64,
            // Levels are positions in `labels` or `max()`, so the label always exists.
            label: self.labels.get(level).cloned().unwrap_or_default(),
            stops: level == self.max(),
        })
    }
}

/// Keylime marks these events irrecoverable: the quote itself could not be trusted, or the
/// verifier could not do its work.
fn irrecoverable(event_id: &str) -> bool {
    event_id.starts_with("qoute_validation.") || event_id.starts_with("internal.")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn failure(id: &str) -> Failure {
        Failure::new(id, json!({}))
    }

    #[test]
    fn the_default_policy_stops_at_the_first_failure() {
        let verdict = SeverityPolicy::keylime_default()
            .judge(&[failure("ima.validation.ima-ng.not_in_allowlist")])
            .unwrap();
        assert_eq!(
            (verdict.level, verdict.label.as_str(), verdict.stops),
            (6, "emergency", true)
        );
        assert!(SeverityPolicy::keylime_default().judge(&[]).is_none());
    }

    #[test]
    fn rules_match_whole_ids_and_the_first_highest_event_wins() {
        let policy = SeverityPolicy::from_keylime(
            r#"["info", "warning", "emergency"]"#,
            r#"[{"event_id": "ima.*", "severity_label": "warning"},
                {"event_id": "pcr_validation", "severity_label": "info"},
                {"event_id": ".*", "severity_label": "emergency"}]"#,
        )
        .unwrap();
        let verdict = policy
            .judge(&[
                failure("ima.validation.ima-ng.not_in_allowlist"),
                failure("ima.validation.ima-ng.runtime_policy_hash"),
            ])
            .unwrap();
        assert_eq!(verdict.event.event_id, "ima.validation.ima-ng.not_in_allowlist");
        assert_eq!((verdict.level, verdict.stops), (1, false));
        // "pcr_validation" must match the whole id, so the catch-all applies.
        let verdict = policy.judge(&[failure("pcr_validation.invalid_pcr_15")]).unwrap();
        assert_eq!((verdict.label.as_str(), verdict.stops), ("emergency", true));
    }

    #[test]
    fn irrecoverable_events_stop_polling_whatever_their_rule_says() {
        let policy = SeverityPolicy::from_keylime(
            r#"["info", "emergency"]"#,
            r#"[{"event_id": ".*", "severity_label": "info"}]"#,
        )
        .unwrap();
        let verdict = policy
            .judge(&[
                failure("ima.pcr_mismatch"),
                failure("qoute_validation.quote_validation"),
            ])
            .unwrap();
        assert_eq!(verdict.event.event_id, "qoute_validation.quote_validation");
        assert!(verdict.stops);
        assert!(!policy.judge(&[failure("ima.pcr_mismatch")]).unwrap().stops);
    }

    #[test]
    fn bad_options_are_refused_with_their_name() {
        assert_eq!(
            SeverityPolicy::from_keylime("[]", "[]").unwrap_err(),
            SeverityError::Labels
        );
        assert_eq!(
            SeverityPolicy::from_keylime(r#"["a"]"#, r#"[{"event_id": "x"}]"#).unwrap_err(),
            SeverityError::Policy
        );
        assert!(matches!(
            SeverityPolicy::from_keylime(r#"["a"]"#, r#"[{"event_id": "(", "severity_label": "a"}]"#),
            Err(SeverityError::Regex(..))
        ));
    }
}
