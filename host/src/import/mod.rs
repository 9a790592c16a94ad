//! Switching a running fleet to zest: reading another attestation server's databases and
//! planning, then writing, the same registrations, enrolments and named policies into zest's
//! store, so that no agent registers or is enrolled again.

pub mod keylime;
mod rows;

pub use keylime::{Change, ImportError, Plan, Source, plan};
