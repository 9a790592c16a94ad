//! Components built against `zest:policy@0.1.0` (`wit/0.1/policy.wit`), which zest keeps
//! running beside 0.2.0 ones. The host builds every batch and boot log in the 0.2.0 shape
//! and converts it here; the interfaces differ only in records that were tuples in 0.1.0
//! and in imports 0.1.0 lacks, so the conversions are field for field.

use super::HostState;
use super::measured_boot::bindings as v2;

/// The 0.1.0 measured-boot world. Its `types` and `host` interfaces are shared with the
/// 0.1.0 runtime world below, so the 0.1.0 imports are implemented once.
pub(super) mod mb {
    wasmtime::component::bindgen!({ world: "measured-boot-policy", path: "../wit/0.1" });
}

/// The 0.1.0 runtime world.
pub(super) mod rt {
    wasmtime::component::bindgen!({
        world: "runtime-policy",
        path: "../wit/0.1",
        with: {
            "zest:policy/types": super::mb::zest::policy::types,
            "zest:policy/host": super::mb::zest::policy::host,
        },
    });
}

use mb::zest::policy::host as old_host;
use mb::zest::policy::types as old;
use v2::zest::policy::host as new_host;
use v2::zest::policy::types as new;

impl old::Host for HostState {}

impl old_host::Host for HostState {
    fn verify_prehashed(
        &mut self,
        spki_der: Vec<u8>,
        hash: old::HashAlg,
        digest: Vec<u8>,
        signature: Vec<u8>,
    ) -> bool {
        new_host::Host::verify_prehashed(self, spki_der, hash_alg(hash), digest, signature)
    }

    fn parse_key(&mut self, data: Vec<u8>) -> Option<old_host::PublicKey> {
        new_host::Host::parse_key(self, data).map(|k| old_host::PublicKey {
            kind: match k.kind {
                new_host::KeyKind::Rsa => old_host::KeyKind::Rsa,
                new_host::KeyKind::Ec => old_host::KeyKind::Ec,
                new_host::KeyKind::Other => old_host::KeyKind::Other,
            },
            spki_der: k.spki_der,
            key_id: k.key_id,
        })
    }

    fn log(&mut self, level: old::LogLevel, message: String) {
        let level = match level {
            old::LogLevel::Error => new::LogLevel::Error,
            old::LogLevel::Warn => new::LogLevel::Warn,
            old::LogLevel::Info => new::LogLevel::Info,
            old::LogLevel::Debug => new::LogLevel::Debug,
        };
        new_host::Host::log(self, level, message);
    }
}

pub(super) fn hash_alg(h: old::HashAlg) -> new::HashAlg {
    match h {
        old::HashAlg::Sha1 => new::HashAlg::Sha1,
        old::HashAlg::Sha256 => new::HashAlg::Sha256,
        old::HashAlg::Sha384 => new::HashAlg::Sha384,
        old::HashAlg::Sha512 => new::HashAlg::Sha512,
        old::HashAlg::Other => new::HashAlg::Other,
    }
}

fn old_hash_alg(h: new::HashAlg) -> old::HashAlg {
    match h {
        new::HashAlg::Sha1 => old::HashAlg::Sha1,
        new::HashAlg::Sha256 => old::HashAlg::Sha256,
        new::HashAlg::Sha384 => old::HashAlg::Sha384,
        new::HashAlg::Sha512 => old::HashAlg::Sha512,
        new::HashAlg::Other => old::HashAlg::Other,
    }
}

fn digest(d: new::Digest) -> old::Digest {
    old::Digest {
        alg: old_hash_alg(d.alg),
        alg_name: d.alg_name,
        value: d.value,
    }
}

/// A 0.1.0 verdict in the host's (0.2.0) types.
pub(super) fn verdict(v: old::Verdict) -> new::Verdict {
    new::Verdict {
        failures: v
            .failures
            .into_iter()
            .map(|f| new::Failure {
                event_id: f.event_id,
                context: f.context,
                recoverable: f.recoverable,
                entry: f.entry,
            })
            .collect(),
        state: v.state,
    }
}

pub(super) fn load_error(e: old::LoadError) -> new::LoadError {
    match e {
        old::LoadError::InvalidJson(m) => new::LoadError::InvalidJson(m),
        old::LoadError::Schema(m) => new::LoadError::Schema(m),
        old::LoadError::Unsupported(m) => new::LoadError::Unsupported(m),
    }
}

/// The runtime batch in 0.1.0's types.
pub(super) fn batch(b: super::runtime::WitBatch) -> rt::exports::zest::policy::runtime::Batch {
    use super::runtime::WitTemplate as T;
    use rt::exports::zest::policy::runtime as o;
    o::Batch {
        entries: b
            .entries
            .into_iter()
            .map(|e| o::Entry {
                index: e.index,
                pcr: e.pcr,
                template: match e.template {
                    T::Ima => o::Template::Ima,
                    T::ImaNg => o::Template::ImaNg,
                    T::ImaSig => o::Template::ImaSig,
                    T::ImaBuf => o::Template::ImaBuf,
                },
                violation: e.violation,
                template_hash_ok: e.template_hash_ok,
                file_digest: digest(e.file_digest),
                name: e.name,
                signature_raw: e.signature_raw,
                signature: e.signature.map(|s| o::ImaSignature {
                    xattr_type: s.xattr_type,
                    hash_algo: s.hash_algo,
                    key_id: s.key_id,
                    signature: s.signature,
                }),
                buffer: e.buffer,
                after_quote: e.after_quote,
            })
            .collect(),
        replay: o::ReplayFacts {
            bank: old_hash_alg(b.replay.bank),
            start_offset: b.replay.start_offset,
            matched: b.replay.matched,
        },
        boot_aggregates: b.boot_aggregates.into_iter().map(digest).collect(),
        prior_state: b.prior_state,
    }
}

/// The boot log in 0.1.0's types: `boot-option` and `firmware-blob` become tuples again.
pub(super) fn boot_log(
    l: v2::exports::zest::policy::measured_boot::BootLog,
) -> mb::exports::zest::policy::measured_boot::BootLog {
    use mb::exports::zest::policy::measured_boot as o;
    use v2::exports::zest::policy::measured_boot as n;
    let pcr = |p: n::PcrValue| o::PcrValue {
        index: p.index,
        value: p.value,
    };
    let entry = |e: n::SignatureEntry| o::SignatureEntry {
        owner: e.owner,
        data: e.data,
    };
    let variable = |v: n::VariableData| match v {
        n::VariableData::Raw => o::VariableData::Raw,
        n::VariableData::Boolean(b) => o::VariableData::Boolean(b),
        n::VariableData::SignatureLists(lists) => o::VariableData::SignatureLists(
            lists
                .into_iter()
                .map(|l| o::SignatureList {
                    signature_type: l.signature_type,
                    entries: l.entries.into_iter().map(entry).collect(),
                })
                .collect(),
        ),
        n::VariableData::Signature(e) => o::VariableData::Signature(entry(e)),
        n::VariableData::BootOrder(order) => o::VariableData::BootOrder(order),
        n::VariableData::BootOption(b) => {
            o::VariableData::BootOption((b.enabled, b.description, b.device_path))
        }
    };
    let data = |d: n::EventData| match d {
        n::EventData::Raw => o::EventData::Raw,
        n::EventData::SpecId => o::EventData::SpecId,
        n::EventData::StartupLocality(l) => o::EventData::StartupLocality(l),
        n::EventData::Text(t) => o::EventData::Text(t),
        n::EventData::Separator(s) => o::EventData::Separator(s),
        n::EventData::FirmwareBlob(b) => o::EventData::FirmwareBlob((b.base, b.length)),
        n::EventData::Variable(v) => o::EventData::Variable(o::EfiVariable {
            guid: v.guid,
            name: v.name,
            data: v.data,
            parsed: variable(v.parsed),
        }),
        n::EventData::Image(i) => o::EventData::Image(o::ImageLoad {
            location: i.location,
            length: i.length,
            link_time_address: i.link_time_address,
            device_path: i.device_path,
        }),
    };
    o::BootLog {
        quoted_bank: old_hash_alg(l.quoted_bank),
        quoted: l.quoted.into_iter().map(pcr).collect(),
        replayed: l.replayed.into_iter().map(pcr).collect(),
        events: l
            .events
            .into_iter()
            .map(|e| o::Event {
                number: e.number,
                pcr: e.pcr,
                event_type: e.event_type,
                type_name: e.type_name,
                digests: e
                    .digests
                    .into_iter()
                    .map(|d| o::EventDigest {
                        value: digest(d.value),
                        authenticated: d.authenticated,
                    })
                    .collect(),
                data: e.data,
                parsed: data(e.parsed),
            })
            .collect(),
        first_attestation: l.first_attestation,
        prior_state: l.prior_state,
    }
}
