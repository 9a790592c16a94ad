//! Wall-clock dates in UTC, for the few places that print or read one (Keylime's
//! timestamps), with the `time` crate.

use std::time::{SystemTime, UNIX_EPOCH};

use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime, UtcOffset};

/// Seconds since the Unix epoch (0 if the system clock is before it).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Microseconds since the Unix epoch.
pub fn unix_micros_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// The UTC time `micros` after the epoch; past the year 9999 (which no real clock reaches),
/// the last representable microsecond.
fn utc_micros(micros: u64) -> OffsetDateTime {
    let last = PrimitiveDateTime::MAX.assume_utc();
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1000)
        .map(|t| t.min(last))
        .unwrap_or(last)
}

/// `2026-11-28T12:46:00.543813+00:00`: RFC 3339 with microseconds, as Keylime's push API
/// writes timestamps.
pub fn rfc3339_micros(micros: u64) -> String {
    let shape =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]+00:00");
    utc_micros(micros).format(shape).unwrap_or_default()
}

/// Unix seconds of an RFC 3339 / ISO 8601 time (`2026-11-28T10:00:00Z`, fractions and
/// `±HH:MM` offsets allowed, and a space for the `T` as Python's `isoformat(" ")` writes).
/// `None` for anything else, and for times before the epoch.
pub fn parse_rfc3339(text: &str) -> Option<u64> {
    let normalised;
    let text = match text.as_bytes().get(10) {
        Some(b' ') if text.is_char_boundary(10) && text.is_char_boundary(11) => {
            normalised = format!("{}T{}", &text[..10], &text[11..]);
            normalised.as_str()
        }
        _ => text,
    };
    let t = OffsetDateTime::parse(text, &Rfc3339).ok()?;
    u64::try_from(t.unix_timestamp()).ok()
}

/// Now in UTC.
fn now_utc() -> OffsetDateTime {
    OffsetDateTime::now_utc().to_offset(UtcOffset::UTC)
}

/// `2026-11-28 12:49:32`, Keylime's `meta.timestamp` shape.
pub fn timestamp(t: OffsetDateTime) -> String {
    let shape = format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    t.format(shape).unwrap_or_default()
}

/// `Sat Nov 28 12:49:32 2026`, Python's `time.asctime()`.
pub fn asctime(t: OffsetDateTime) -> String {
    let shape = format_description!(
        "[weekday repr:short] [month repr:short] [day padding:space] [hour]:[minute]:[second] [year]"
    );
    t.format(shape).unwrap_or_default()
}

/// [`timestamp`] of now.
pub fn timestamp_now() -> String {
    timestamp(now_utc())
}

/// [`asctime`] of now.
pub fn asctime_now() -> String {
    asctime(now_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_ascii_and_extreme_times_are_refused_without_a_panic() {
        for text in [
            "2026-01-01T00:00:0é",
            "2026-01-01T00:00:00é",
            "2026-01-01T00:00:00.é",
            "2026-01-01T00:00:00+0é:00",
            "2026-01-01T00:00:00…",
            "２０２６-01-01T00:00:00Z",
            "9999999-01-01T00:00:00Z",
        ] {
            assert_eq!(parse_rfc3339(text), None, "{text}");
        }
        // The largest times still format.
        assert!(!rfc3339_micros(u64::MAX).is_empty());
    }

    #[test]
    fn rfc3339_times_parse_and_round_trip() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2026-11-28T10:00:00Z"), Some(1_795_860_000));
        assert_eq!(
            parse_rfc3339("2026-11-28T11:00:00.123456+01:00"),
            Some(1_795_860_000)
        );
        assert_eq!(
            parse_rfc3339(&rfc3339_micros(1_795_860_000_123_456)),
            Some(1_795_860_000)
        );
        for bad in [
            "",
            "2026-11-28",
            "2026-13-01T00:00:00Z",
            "2026-11-28T10:00:00",
            "2026-11-28T10:00:00+1",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn known_dates() {
        let at = |secs: i64| OffsetDateTime::from_unix_timestamp(secs).unwrap();
        // 2026-11-28 12:49:32 UTC, a Saturday.
        assert_eq!(timestamp(at(1_795_870_172)), "2026-11-28 12:49:32");
        assert_eq!(asctime(at(1_795_870_172)), "Sat Nov 28 12:49:32 2026");
        assert_eq!(asctime(at(0)), "Thu Jan  1 00:00:00 1970");
        assert_eq!(timestamp(at(951_782_400)), "2000-02-29 00:00:00");
        assert_eq!(
            rfc3339_micros(1_795_870_172_000_042),
            "2026-11-28T12:49:32.000042+00:00"
        );
        assert_eq!(parse_rfc3339("2026-11-28 12:49:32.5+00:00"), Some(1_795_870_172));
        assert_eq!(parse_rfc3339("1969-12-31T23:59:59Z"), None);
    }
}
