//! Keylime's `excludes`: Python regular expressions, combined as `(a)|(b)|…` and applied
//! with `re.match`, i.e. anchored at the start of the path only. The Rust engine has no
//! look-around or back-references; patterns using them are refused at load with the
//! reason, instead of Keylime's silent "ignore every exclude".

use regex::bytes::{Regex, RegexBuilder};
use zest_policy_sdk::python_regex::translate;

/// The compiled exclude list.
pub struct Excludes {
    combined: Option<Regex>,
}

impl Excludes {
    pub fn compile(patterns: &[String]) -> Result<Self, String> {
        if patterns.is_empty() {
            return Ok(Self { combined: None });
        }
        let mut translated = Vec::with_capacity(patterns.len());
        for (i, pattern) in patterns.iter().enumerate() {
            let rust = translate(pattern).map_err(|why| format!("excludes[{i}] {pattern:?}: {why}"))?;
            build(&rust).map_err(|e| format!("excludes[{i}] {pattern:?}: {}", first_line(&e)))?;
            translated.push(rust);
        }
        let combined = format!("\\A(?:(?:{}))", translated.join(")|(?:"));
        let combined = build(&combined).map_err(|e| format!("excludes: {}", first_line(&e)))?;
        Ok(Self {
            combined: Some(combined),
        })
    }

    /// Whether `name` is excluded (Keylime's `re.match(combined, name)`).
    pub fn matches(&self, name: &[u8]) -> bool {
        self.combined.as_ref().is_some_and(|re| re.is_match(name))
    }
}

fn build(pattern: &str) -> Result<Regex, regex::Error> {
    RegexBuilder::new(pattern).size_limit(64 << 20).build()
}

fn first_line(e: &regex::Error) -> String {
    let text = e.to_string();
    text.lines().last().unwrap_or_default().trim().to_owned()
}
