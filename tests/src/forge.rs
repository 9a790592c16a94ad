//! Forged evidence for negative tests: logs edited the way an attacker would, keeping what
//! the quote checks (the digests) so that only an event data check can catch them.

use anyhow::{Context, bail};
use zest::evidence::uefi::{EV_EFI_VARIABLE_DRIVER_CONFIG, EventData, EventLog};

/// `log` with the last VariableData byte of the first EV_EFI_VARIABLE_DRIVER_CONFIG event
/// for `variable_name` XORed with 1 (`SecureBoot` 0 ↔ 1), its digests kept: the log still
/// replays to the same PCRs, but its data no longer matches its digests.
pub fn flip_variable_data(log: &[u8], variable_name: &str) -> anyhow::Result<Vec<u8>> {
    let mut parsed = EventLog::parse(log).context("parsing the UEFI event log")?;
    let event = parsed
        .events
        .iter_mut()
        .find(|e| {
            e.event_type == EV_EFI_VARIABLE_DRIVER_CONFIG
                && matches!(&e.decode(), EventData::Variable(v) if v.name == variable_name)
        })
        .with_context(|| format!("no EV_EFI_VARIABLE_DRIVER_CONFIG event for {variable_name}"))?;
    // UEFI_VARIABLE_DATA: GUID (16), UnicodeNameLength (u64), VariableDataLength (u64),
    // the UTF-16 name, then VariableData; bytes after it, if any, are not the value.
    let field = |at: usize| -> anyhow::Result<usize> {
        let bytes = event
            .data
            .get(at..at + 8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .context("truncated UEFI_VARIABLE_DATA")?;
        Ok(usize::try_from(u64::from_le_bytes(bytes))?)
    };
    let (name_units, value_len) = (field(16)?, field(24)?);
    if value_len == 0 {
        bail!("{variable_name} has no data to flip");
    }
    let last = name_units
        .checked_mul(2)
        .and_then(|n| n.checked_add(32))
        .and_then(|n| n.checked_add(value_len - 1))
        .context("UEFI_VARIABLE_DATA lengths overflow")?;
    let byte = event.data.get_mut(last).context("truncated VariableData")?;
    *byte ^= 1;
    Ok(parsed.encode())
}

#[cfg(test)]
mod tests {
    use zest::evidence::uefi::{DataCheck, VariableData};

    use super::*;

    #[test]
    fn flipping_secure_boot_keeps_the_replay_and_breaks_the_data_check() {
        let original = crate::boot::fedora_bytes();
        let forged = flip_variable_data(&original, "SecureBoot").unwrap();
        let (original, forged) = (
            EventLog::parse(&original).unwrap(),
            EventLog::parse(&forged).unwrap(),
        );
        assert_eq!(forged.replay(), original.replay());
        let changed: Vec<_> = original
            .events
            .iter()
            .zip(&forged.events)
            .filter(|(a, b)| a != b)
            .map(|(_, b)| b)
            .collect();
        assert_eq!(changed.len(), 1);
        let EventData::Variable(v) = changed[0].decode() else {
            panic!("the forged event is not a variable")
        };
        assert_eq!(
            (v.name.as_str(), v.decoded),
            ("SecureBoot", VariableData::Boolean(true))
        );
        assert!(matches!(changed[0].check_data(), DataCheck::Mismatch { .. }));
        assert!(flip_variable_data(&crate::boot::fedora_bytes(), "NoSuchVariable").is_err());
    }
}
