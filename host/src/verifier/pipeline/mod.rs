//! One attestation, whatever asked for it: the pull loop, a push submission and
//! `POST /verify/evidence` all go through the same three steps.
//!
//! 1. **prepare** ([`Expectations::of`]): the agent's record decides what evidence the round
//!    needs (the `tpm_policy` PCRs; PCR 10 and an IMA list for a runtime policy; the boot
//!    PCRs and a UEFI log for a refstate; PCR 16 binding the NK key in pull mode), never
//!    what the agent chose to send. A store, module or record error is an `internal.*`
//!    failure, never a skipped check.
//! 2. **evaluate** ([`evaluate`]): the quote against the AK and nonce, the TPM clock and
//!    reboot rules, the PCR policy, the boot log (event data checked against its digests,
//!    replay compared with the quote) judged by the measured-boot component, the IMA list
//!    replayed into PCR 10 and judged by the runtime component. Every check that could not
//!    run is a failure.
//! 3. **apply** ([`apply`]): the outcome becomes the agent's new state (counts, IMA
//!    position, clock, NK key, severity), written back by the caller only to the record the
//!    round started from.

mod apply;
mod evaluate;
mod failure;
mod prepare;

pub use apply::{RoundResult, apply, record_failures};
pub use evaluate::{
    Judging, MEASURED_BOOT_PCRS, Outcome, evaluate, judge_ima, measured_boot, parse_tpm_policy,
};
pub use failure::Failure;
pub use prepare::{Evidence, Expectations, ImaList, PolicyInUse, policy_in_use, required_pcrs};
