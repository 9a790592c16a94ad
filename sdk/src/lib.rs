//! The SDK for zest attestation policies.
//!
//! A policy is a plain Rust type that implements [`RuntimePolicy`] (IMA runtime policies) or
//! [`MeasuredBootPolicy`] (UEFI measured-boot policies) and is exported with one macro,
//! [`export_runtime_policy!`] or [`export_measured_boot_policy!`]. Built for
//! `wasm32-wasip2` it is a WebAssembly component that zest loads; built natively the same
//! type runs under `cargo test`, fed by the helpers in [`testing`] from real IMA logs, event
//! logs and reference states. `sdk/README.md` is the tutorial.
//!
//! Enable exactly one of the features `runtime` and `measured-boot` in a policy crate: each
//! component implements one world.

#[cfg(not(any(feature = "runtime", feature = "measured-boot")))]
compile_error!("enable the `runtime` or the `measured-boot` feature of zest-policy-sdk");

// Lets the generated bindings name this crate the same way inside it and in policy crates.
extern crate self as zest_policy_sdk;

#[doc(hidden)]
pub use wit_bindgen as __wit_bindgen;

/// Generated bindings of the `runtime-policy` world (use the re-exports instead). The
/// bindings are generated once from `wit/` and committed (see `tests/bindings.rs`).
#[cfg(feature = "runtime")]
#[doc(hidden)]
#[allow(
    clippy::all,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
pub mod runtime_bindings {
    include!("bindings/runtime_policy.rs");
}

/// Generated bindings of the `measured-boot-policy` world, sharing the runtime world's
/// `types` and `host` (use the re-exports instead).
#[cfg(all(feature = "measured-boot", feature = "runtime"))]
#[doc(hidden)]
#[allow(
    clippy::all,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
pub mod measured_boot_bindings {
    include!("bindings/measured_boot_policy_shared.rs");
}

/// Generated bindings of the `measured-boot-policy` world (use the re-exports instead).
#[cfg(all(feature = "measured-boot", not(feature = "runtime")))]
#[doc(hidden)]
#[allow(
    clippy::all,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
pub mod measured_boot_bindings {
    include!("bindings/measured_boot_policy.rs");
}

#[cfg(all(feature = "measured-boot", not(feature = "runtime")))]
use measured_boot_bindings::zest::policy as wit;
#[cfg(feature = "runtime")]
use runtime_bindings::zest::policy as wit;

pub use wit::host::{KeyKind, PublicKey};
pub use wit::types::{Digest, Failure, HashAlg, LoadError, LogLevel, Verdict};

pub mod host;
#[cfg(feature = "measured-boot")]
pub mod measured_boot;
pub mod python_regex;
#[cfg(feature = "runtime")]
pub mod runtime;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;

/// A runtime (IMA) policy: one policy document, loaded once, then asked about batches of IMA
/// entries of any number of agents.
#[cfg(feature = "runtime")]
pub trait RuntimePolicy: Sized + 'static {
    /// Parses and checks the policy document (the JSON an operator uploads).
    fn load(document: &[u8]) -> Result<Self, LoadError>;

    /// The algorithm of the template-hash column this policy expects; the host checks
    /// template hashes with it before calling [`RuntimePolicy::evaluate`].
    fn log_hash_alg(&self) -> HashAlg {
        HashAlg::Sha1
    }

    /// Decides about one batch. Per-agent memory travels in `batch.prior_state` and the
    /// returned [`Verdict::state`]; the policy itself must not remember agents.
    fn evaluate(&self, batch: &runtime::Batch) -> Verdict;
}

/// A measured-boot policy: one reference state, loaded once, then asked about boot logs.
#[cfg(feature = "measured-boot")]
pub trait MeasuredBootPolicy: Sized + 'static {
    /// Parses and checks the reference state document.
    fn load(document: &[u8]) -> Result<Self, LoadError>;

    /// PCRs the policy relies on; the host fails an attestation whose quote lacks one.
    fn relevant_pcrs(&self) -> Vec<u32>;

    /// Decides about one boot log.
    fn evaluate(&self, log: &measured_boot::BootLog) -> Verdict;
}

impl Failure {
    /// A failure with Keylime's event id and a context object.
    pub fn new(event_id: impl Into<String>, context: serde_json::Value) -> Self {
        Self {
            event_id: event_id.into(),
            context: context.to_string(),
            recoverable: true,
            entry: None,
        }
    }

    /// A failure whose context is `{"message": message}`, as Keylime turns plain strings.
    pub fn message(event_id: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(event_id, serde_json::json!({ "message": message.into() }))
    }

    /// Names the IMA entry or UEFI event the failure is about.
    pub fn at(mut self, entry: u64) -> Self {
        self.entry = Some(entry);
        self
    }

    /// Marks the failure as one after which the verifier must stop polling.
    pub fn fatal(mut self) -> Self {
        self.recoverable = false;
        self
    }

    /// The context as JSON (for tests and tools).
    pub fn context_json(&self) -> serde_json::Value {
        serde_json::from_str(&self.context).unwrap_or(serde_json::Value::Null)
    }
}

/// `serde_json::from_slice(document)?` in a policy's `load`: text that is not JSON is
/// [`LoadError::InvalidJson`], JSON of the wrong shape is [`LoadError::Schema`]; both carry
/// serde's message with its line and column.
impl From<serde_json::Error> for LoadError {
    fn from(e: serde_json::Error) -> Self {
        use serde_json::error::Category;
        match e.classify() {
            Category::Data => Self::Schema(e.to_string()),
            Category::Syntax | Category::Eof | Category::Io => Self::InvalidJson(e.to_string()),
        }
    }
}

impl Verdict {
    /// No failure, no state.
    pub fn pass() -> Self {
        Self {
            failures: Vec::new(),
            state: None,
        }
    }

    pub fn with_failures(failures: Vec<Failure>) -> Self {
        Self {
            failures,
            state: None,
        }
    }

    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    /// The event ids of the failures, in order.
    pub fn event_ids(&self) -> Vec<&str> {
        self.failures.iter().map(|f| f.event_id.as_str()).collect()
    }
}

impl HashAlg {
    /// Keylime's name of the algorithm (`sha256`, …); `other` for the rest.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sha1 => "sha1",
            Self::Sha256 => "sha256",
            Self::Sha384 => "sha384",
            Self::Sha512 => "sha512",
            Self::Other => "other",
        }
    }

    /// Parses Keylime's name; `None` for names the host cannot hash with.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "sha1" => Some(Self::Sha1),
            "sha256" => Some(Self::Sha256),
            "sha384" => Some(Self::Sha384),
            "sha512" => Some(Self::Sha512),
            _ => None,
        }
    }
}

/// Lowercase hex, as Keylime prints digests.
pub fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        // A nibble is below 16, so `from_digit` always yields a (lowercase) digit.
        out.extend(char::from_digit(u32::from(b >> 4), 16));
        out.extend(char::from_digit(u32::from(b & 15), 16));
    }
    out
}

/// Decodes hex (either case); `None` for odd lengths or other characters.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    bytes
        .as_chunks::<2>()
        .0
        .iter()
        .map(|&[hi, lo]| Some(nibble(hi)? << 4 | nibble(lo)?))
        .collect()
}

/// Installs, once, the panic hook of a component: the panic's message and `file:line` go to
/// the host (`host::panicked`), which logs them and reports them as the failure instead of
/// a bare trap. The export macros call it at every entry.
#[doc(hidden)]
pub fn __install_panic_hook() {
    #[cfg(target_arch = "wasm32")]
    {
        static INSTALLED: std::sync::Once = std::sync::Once::new();
        INSTALLED.call_once(|| {
            std::panic::set_hook(Box::new(|info| {
                let message = info.payload_as_str().unwrap_or("Box<dyn Any>");
                let text = match info.location() {
                    Some(at) => format!(
                        "panicked at {}:{}:{}: {message}",
                        at.file(),
                        at.line(),
                        at.column()
                    ),
                    None => format!("panicked: {message}"),
                };
                wit::host::panicked(&text);
            }));
        });
    }
}

/// Exports a [`RuntimePolicy`] type as the component's `runtime` interface.
#[cfg(feature = "runtime")]
#[macro_export]
macro_rules! export_runtime_policy {
    ($policy:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct ZestRuntimeExport;

            ::std::thread_local! {
                static LOADED: ::core::cell::RefCell<::core::option::Option<$policy>> =
                    const { ::core::cell::RefCell::new(::core::option::Option::None) };
            }

            impl $crate::runtime_bindings::exports::zest::policy::runtime::Guest for ZestRuntimeExport {
                fn load(document: ::std::vec::Vec<u8>) -> ::core::result::Result<(), $crate::LoadError> {
                    $crate::__install_panic_hook();
                    let policy = <$policy as $crate::RuntimePolicy>::load(&document)?;
                    LOADED.with(|slot| *slot.borrow_mut() = ::core::option::Option::Some(policy));
                    ::core::result::Result::Ok(())
                }

                fn log_hash_alg() -> $crate::HashAlg {
                    $crate::__install_panic_hook();
                    LOADED.with(|slot| match slot.borrow().as_ref() {
                        ::core::option::Option::Some(p) => $crate::RuntimePolicy::log_hash_alg(p),
                        ::core::option::Option::None => $crate::HashAlg::Sha1,
                    })
                }

                fn evaluate(batch: $crate::runtime::Batch) -> $crate::Verdict {
                    $crate::__install_panic_hook();
                    LOADED.with(|slot| match slot.borrow().as_ref() {
                        ::core::option::Option::Some(p) => $crate::RuntimePolicy::evaluate(p, &batch),
                        ::core::option::Option::None => $crate::host::not_loaded(),
                    })
                }
            }

            $crate::runtime_bindings::__export_runtime_world!(ZestRuntimeExport with_types_in $crate::runtime_bindings);
        };

        #[cfg(not(target_arch = "wasm32"))]
        const _: fn() = || {
            fn implements<T: $crate::RuntimePolicy>() {}
            implements::<$policy>();
        };
    };
}

/// Exports a [`MeasuredBootPolicy`] type as the component's `measured-boot` interface.
#[cfg(feature = "measured-boot")]
#[macro_export]
macro_rules! export_measured_boot_policy {
    ($policy:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct ZestMeasuredBootExport;

            ::std::thread_local! {
                static LOADED: ::core::cell::RefCell<::core::option::Option<$policy>> =
                    const { ::core::cell::RefCell::new(::core::option::Option::None) };
            }

            impl $crate::measured_boot_bindings::exports::zest::policy::measured_boot::Guest
                for ZestMeasuredBootExport
            {
                fn load(document: ::std::vec::Vec<u8>) -> ::core::result::Result<(), $crate::LoadError> {
                    $crate::__install_panic_hook();
                    let policy = <$policy as $crate::MeasuredBootPolicy>::load(&document)?;
                    LOADED.with(|slot| *slot.borrow_mut() = ::core::option::Option::Some(policy));
                    ::core::result::Result::Ok(())
                }

                fn relevant_pcrs() -> ::std::vec::Vec<u32> {
                    $crate::__install_panic_hook();
                    LOADED.with(|slot| match slot.borrow().as_ref() {
                        ::core::option::Option::Some(p) => $crate::MeasuredBootPolicy::relevant_pcrs(p),
                        ::core::option::Option::None => ::std::vec::Vec::new(),
                    })
                }

                fn evaluate(log: $crate::measured_boot::BootLog) -> $crate::Verdict {
                    $crate::__install_panic_hook();
                    LOADED.with(|slot| match slot.borrow().as_ref() {
                        ::core::option::Option::Some(p) => $crate::MeasuredBootPolicy::evaluate(p, &log),
                        ::core::option::Option::None => $crate::host::not_loaded(),
                    })
                }
            }

            $crate::measured_boot_bindings::__export_measured_boot_world!(
                ZestMeasuredBootExport with_types_in $crate::measured_boot_bindings
            );
        };

        #[cfg(not(target_arch = "wasm32"))]
        const _: fn() = || {
            fn implements<T: $crate::MeasuredBootPolicy>() {}
            implements::<$policy>();
        };
    };
}
