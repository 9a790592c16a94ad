//! Wall-clock dates in UTC, for the few places that print one (Keylime's timestamps), without
//! a date library.

use std::time::{SystemTime, UNIX_EPOCH};

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

/// `2026-11-28T12:46:00.543813+00:00`: RFC 3339 with microseconds, as Keylime's push API
/// writes timestamps.
pub fn rfc3339_micros(micros: u64) -> String {
    let t = Utc::from_unix(micros / 1_000_000);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}+00:00",
        t.year,
        t.month,
        t.day,
        t.hour,
        t.minute,
        t.second,
        micros % 1_000_000
    )
}

/// Unix seconds of an RFC 3339 / ISO 8601 time (`2026-11-28T10:00:00Z`, fractions and
/// `±HH:MM` offsets allowed). `None` for anything else.
pub fn parse_rfc3339(text: &str) -> Option<u64> {
    let b = text.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = text.get(r)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    let at = |i: usize| b.get(i).copied();
    if b.len() < 19
        || at(4) != Some(b'-')
        || at(7) != Some(b'-')
        || !matches!(at(10), Some(b'T' | b't' | b' '))
        || at(13) != Some(b':')
        || at(16) != Some(b':')
    {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut rest = &text[19..];
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        rest = &fraction[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && rest.starts_with(['+', '-']) && rest.get(3..4) == Some(":") => {
            let h: i64 = rest.get(1..3)?.parse().ok()?;
            let m: i64 = rest.get(4..6)?.parse().ok()?;
            let sign = if rest.starts_with('-') { -1 } else { 1 };
            sign * (h * 3600 + m * 60)
        }
        _ => return None,
    };
    // Days from the civil date (Howard Hinnant's days_from_civil).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset;
    u64::try_from(secs).ok()
}

/// A UTC calendar time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Utc {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    /// 0 = Monday … 6 = Sunday.
    pub weekday: u32,
}

impl Utc {
    pub fn now() -> Self {
        Self::from_unix(unix_now())
    }

    /// The calendar date of a Unix time (Howard Hinnant's days-to-civil algorithm).
    pub fn from_unix(secs: u64) -> Self {
        let days = (secs / 86_400) as i64;
        let rem = secs % 86_400;
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        Self {
            year: yoe + era * 400 + i64::from(month <= 2),
            month,
            day,
            hour: (rem / 3600) as u32,
            minute: (rem % 3600 / 60) as u32,
            second: (rem % 60) as u32,
            // 1970-01-01 was a Thursday.
            weekday: ((days + 3).rem_euclid(7)) as u32,
        }
    }

    /// `2026-11-28 12:49:32`, Keylime's `meta.timestamp` shape.
    pub fn timestamp(&self) -> String {
        format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }

    /// `Sat Nov 28 12:49:32 2026`, Python's `time.asctime()`.
    pub fn asctime(&self) -> String {
        const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
        const MONTHS: [&str; 12] = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        // Both indices are reduced modulo the table's length, so neither lookup misses.
        let day = DAYS.get(self.weekday as usize % 7).copied().unwrap_or_default();
        let month = MONTHS
            .get((self.month as usize + 11) % 12)
            .copied()
            .unwrap_or_default();
        format!(
            "{} {} {:2} {:02}:{:02}:{:02} {}",
            day, month, self.day, self.hour, self.minute, self.second, self.year
        )
    }
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
        // 2026-11-28 12:49:32 UTC, a Saturday.
        let t = Utc::from_unix(1_795_870_172);
        assert_eq!(t.timestamp(), "2026-11-28 12:49:32");
        assert_eq!(t.asctime(), "Sat Nov 28 12:49:32 2026");
        assert_eq!(Utc::from_unix(0).asctime(), "Thu Jan  1 00:00:00 1970");
        assert_eq!(Utc::from_unix(951_782_400).timestamp(), "2000-02-29 00:00:00");
    }
}
