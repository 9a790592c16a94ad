//! API versions: which we serve and how a path prefix such as `v2.6` maps to one.

use serde_json::{Value, json};

/// The version we advertise as current, like Keylime 7.14.
pub const CURRENT_VERSION: &str = "2.6";

/// What `GET /version` lists: Keylime 7.14.3's `api_version.VERSIONS`, 1.0 included although
/// neither Keylime nor zest routes anything under /v1.0.
pub const SUPPORTED_VERSIONS: [&str; 9] = ["1.0", "2.0", "2.1", "2.2", "2.3", "2.4", "2.5", "2.6", "3.0"];

/// The prefixes with routes: Keylime scopes every v2 route to /v2 and to each 2.x it lists
/// (so /v2.0 answers as /v2.6 does), and the push routes to /v3 and /v3.0.
pub const SERVED_VERSIONS: [&str; 8] = ["2.0", "2.1", "2.2", "2.3", "2.4", "2.5", "2.6", "3.0"];

/// An API version taken from a path prefix (`v2`, `v2.3`, `v3`, `v3.0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiVersion {
    pub major: u8,
    pub minor: u8,
}

impl ApiVersion {
    /// Parses a path segment; `None` for a version we do not serve. A bare major means its
    /// newest minor, as in Keylime (`/v2` = `/v2.6`).
    pub fn from_path_segment(segment: &str) -> Option<Self> {
        let text = match segment.strip_prefix('v')? {
            "2" => "2.6",
            "3" => "3.0",
            exact => exact,
        };
        // Only the exact spellings we list: no "2.06", no "02.6".
        SERVED_VERSIONS.contains(&text).then_some(())?;
        let (major, minor) = text.split_once('.')?;
        Some(Self {
            major: major.parse().ok()?,
            minor: minor.parse().ok()?,
        })
    }

    /// True for the push-era API (3.x).
    pub fn is_v3(self) -> bool {
        self.major == 3
    }
}

/// The body of `GET /version`.
pub fn version_document() -> Value {
    json!({"current_version": CURRENT_VERSION, "supported_versions": SUPPORTED_VERSIONS})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_map_to_served_versions_only() {
        assert_eq!(
            ApiVersion::from_path_segment("v2"),
            Some(ApiVersion { major: 2, minor: 6 })
        );
        assert_eq!(
            ApiVersion::from_path_segment("v2.1"),
            Some(ApiVersion { major: 2, minor: 1 })
        );
        assert_eq!(
            ApiVersion::from_path_segment("v3.0"),
            Some(ApiVersion { major: 3, minor: 0 })
        );
        // Keylime routes its v2 scope under /v2.0 too; 1.0 it advertises but serves not.
        assert_eq!(
            ApiVersion::from_path_segment("v2.0"),
            Some(ApiVersion { major: 2, minor: 0 })
        );
        for bad in [
            "v1.0",
            "v2.7",
            "v3.1",
            "2.6",
            "v",
            "v2.",
            "v2.x",
            "v99999999999.1",
            "v2.06",
        ] {
            assert_eq!(ApiVersion::from_path_segment(bad), None, "{bad}");
        }
    }
}
