//! Push mode (API 3.0, keylime-api.md §6): agents that open no port authenticate with TPM
//! proof of possession (`sessions.rs`, tokens checked in `auth.rs`) and submit their evidence
//! themselves (`attestations.rs`). Replies use
//! JSON:API shapes, errors as `{"errors": [{"status", "title", "detail"}]}`.

pub mod attestations;
pub mod auth;
pub mod sessions;

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// A JSON:API error reply: `{"errors": [{"status", "title", "detail"}]}`, with
/// `Retry-After` on a 429.
#[derive(Debug, Clone, PartialEq)]
pub struct PushError {
    pub code: StatusCode,
    pub detail: String,
    pub retry_after: Option<Duration>,
}

impl PushError {
    pub fn new(code: StatusCode, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: detail.into(),
            retry_after: None,
        }
    }

    pub fn too_many(wait: Duration) -> Self {
        Self {
            retry_after: Some(wait),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests")
        }
    }
}

impl IntoResponse for PushError {
    fn into_response(self) -> Response {
        let body = json!({"errors": [{
            "status": self.code.as_u16().to_string(),
            "title": self.code.canonical_reason().unwrap_or(""),
            "detail": self.detail,
        }]});
        let mut response = (self.code, Json(body)).into_response();
        if let Some(wait) = self.retry_after
            && let Ok(value) = header::HeaderValue::from_str(&wait.as_secs().max(1).to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
    }
}

/// Sliding-window counters: at most `limit` events per `window` for each key.
pub struct RateLimiter {
    limit: usize,
    window: Duration,
    seen: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl RateLimiter {
    pub fn new(limit: usize, window: Duration) -> Self {
        Self {
            limit,
            window,
            seen: Mutex::default(),
        }
    }

    /// `Err(wait)` when `key`'s window is full, without counting an event.
    pub fn full(&self, key: &str) -> Result<(), Duration> {
        let now = Instant::now();
        let Ok(seen) = self.seen.lock() else {
            return Err(self.window);
        };
        let Some(times) = seen.get(key) else {
            return Ok(());
        };
        let live: Vec<&Instant> = times
            .iter()
            .filter(|t| now.duration_since(**t) < self.window)
            .collect();
        match live.first() {
            Some(oldest) if live.len() >= self.limit => {
                Err(self.window.saturating_sub(now.duration_since(**oldest)))
            }
            _ => Ok(()),
        }
    }

    /// Counts an event for `key`; `Err(wait)` when the window is full.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        let now = Instant::now();
        let Ok(mut seen) = self.seen.lock() else {
            return Err(self.window);
        };
        // Forget keys that have been quiet for a whole window, so the map stays small.
        if seen.len() > 10_000 {
            seen.retain(|_, times| times.back().is_some_and(|t| now.duration_since(*t) < self.window));
        }
        let times = seen.entry(key.to_owned()).or_default();
        while times
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.window)
        {
            times.pop_front();
        }
        if times.len() >= self.limit {
            let oldest = times.front().copied().unwrap_or(now);
            return Err(self.window.saturating_sub(now.duration_since(oldest)));
        }
        times.push_back(now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_window_refuses_until_it_slides() {
        let limiter = RateLimiter::new(2, Duration::from_millis(200));
        assert!(limiter.check("a").is_ok());
        assert!(limiter.check("a").is_ok());
        assert!(limiter.check("a").is_err());
        assert!(limiter.check("b").is_ok(), "keys are counted apart");
        std::thread::sleep(Duration::from_millis(220));
        assert!(limiter.check("a").is_ok());
    }
}
