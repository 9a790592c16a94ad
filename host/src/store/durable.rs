//! Durable attestation, file backend (Keylime's `durable_attestation_import` with a
//! `file://` `persistent_store_url`): every recorded round is appended as one JSON line to
//! `attestations.jsonl` in that directory, never rewritten. Each line carries the SHA-256
//! of the line before it (`prev`), so an auditor (`zest history verify DIR`) finds any line
//! changed, removed or inserted later; the database's retention never touches this file.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::json;
use thiserror::Error;

use super::history::{HistoryEntry, digest_hex};

/// The file the log lives in, within the configured directory.
pub const LOG_FILE: &str = "attestations.jsonl";

/// What the first line's `prev` names.
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, Error)]
pub enum DurableError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path} line {line}: {why}")]
    Broken { path: String, line: u64, why: String },
}

/// An open durable log: appends under a lock, chaining each line to the last.
pub struct DurableLog {
    path: PathBuf,
    state: Mutex<(File, String)>,
}

impl std::fmt::Debug for DurableLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DurableLog({})", self.path.display())
    }
}

impl DurableLog {
    /// Opens (creating) the log in `dir`, after checking the chain already there: a
    /// verifier does not extend a log that was tampered with.
    pub fn open(dir: &Path) -> Result<Self, DurableError> {
        let path = dir.join(LOG_FILE);
        let io = |source| DurableError::Io {
            path: path.display().to_string(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let (_, last) = if path.exists() {
            verify(&path)?
        } else {
            (0, GENESIS.to_owned())
        };
        use std::os::unix::fs::OpenOptionsExt;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .map_err(io)?;
        Ok(Self {
            path,
            state: Mutex::new((file, last)),
        })
    }

    /// Appends one round, flushed to the file before it returns.
    pub fn append(&self, entry: &HistoryEntry) -> Result<(), DurableError> {
        let io = |source| DurableError::Io {
            path: self.path.display().to_string(),
            source,
        };
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let line = json!({ "prev": state.1, "round": entry }).to_string();
        state.0.write_all(format!("{line}\n").as_bytes()).map_err(io)?;
        state.0.sync_data().map_err(io)?;
        state.1 = digest_hex(line.as_bytes());
        Ok(())
    }
}

/// Checks a log's chain: returns how many rounds it holds and the digest of its last line.
pub fn verify(path: &Path) -> Result<(u64, String), DurableError> {
    let name = path.display().to_string();
    let file = File::open(path).map_err(|source| DurableError::Io {
        path: name.clone(),
        source,
    })?;
    let mut last = GENESIS.to_owned();
    let mut count = 0u64;
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let number = i as u64 + 1;
        let broken = |why: String| DurableError::Broken {
            path: name.clone(),
            line: number,
            why,
        };
        let line = line.map_err(|e| broken(e.to_string()))?;
        let value: serde_json::Value =
            serde_json::from_str(&line).map_err(|e| broken(format!("not JSON: {e}")))?;
        let prev = value.get("prev").and_then(|p| p.as_str()).unwrap_or_default();
        if prev != last {
            return Err(broken(
                "its `prev` is not the digest of the line before: a line was changed, removed or inserted"
                    .into(),
            ));
        }
        serde_json::from_value::<HistoryEntry>(value.get("round").cloned().unwrap_or_default())
            .map_err(|e| broken(format!("not a round: {e}")))?;
        last = digest_hex(line.as_bytes());
        count += 1;
    }
    Ok((count, last))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round(agent: &str, passed: bool) -> HistoryEntry {
        HistoryEntry {
            id: 1,
            tenant: "default".into(),
            agent_id: agent.into(),
            at_ms: 1,
            mode: "pull".into(),
            passed,
            failures: vec![],
            quote_digest: None,
            ima_range: None,
            runtime_policy: None,
            mb_policy: None,
        }
    }

    #[test]
    fn the_chain_finds_a_changed_line() {
        let dir = tempfile::tempdir().unwrap();
        let log = DurableLog::open(dir.path()).unwrap();
        for passed in [true, false, true] {
            log.append(&round("a", passed)).unwrap();
        }
        drop(log);
        let path = dir.path().join(LOG_FILE);
        assert_eq!(verify(&path).unwrap().0, 3);
        // Reopening continues the chain.
        DurableLog::open(dir.path())
            .unwrap()
            .append(&round("b", true))
            .unwrap();
        assert_eq!(verify(&path).unwrap().0, 4);
        // A failure rewritten as a pass breaks it at the next line.
        let text = std::fs::read_to_string(&path).unwrap();
        let forged = text.replacen("\"passed\":false", "\"passed\":true", 1);
        assert_ne!(text, forged);
        std::fs::write(&path, forged).unwrap();
        match verify(&path) {
            Err(DurableError::Broken { line, .. }) => assert_eq!(line, 3),
            other => panic!("{other:?}"),
        }
        assert!(DurableLog::open(dir.path()).is_err());
        // So does a removed line.
        let lines: Vec<&str> = text.lines().collect();
        std::fs::write(&path, format!("{}\n{}\n", lines[0], lines[2])).unwrap();
        assert!(verify(&path).is_err());
    }
}
