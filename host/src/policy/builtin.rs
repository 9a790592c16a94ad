//! The built-in policies, compiled from `policies/` by the build script and embedded.

/// Built-in measured-boot policies: (name, component bytes).
pub const BUILTIN_MEASURED_BOOT: &[(&str, &[u8])] = &[
    (
        "accept-all",
        include_bytes!(concat!(env!("OUT_DIR"), "/accept_all.wasm")),
    ),
    (
        "keylime-mb-example",
        include_bytes!(concat!(env!("OUT_DIR"), "/keylime_mb_example.wasm")),
    ),
    (
        "reject-all",
        include_bytes!(concat!(env!("OUT_DIR"), "/reject_all.wasm")),
    ),
];

/// Built-in runtime (IMA) policies: (name, component bytes).
pub const BUILTIN_RUNTIME: &[(&str, &[u8])] = &[(
    "keylime-runtime",
    include_bytes!(concat!(env!("OUT_DIR"), "/keylime_runtime.wasm")),
)];

/// The component of a built-in measured-boot policy.
pub fn builtin_measured_boot(name: &str) -> Option<&'static [u8]> {
    find(BUILTIN_MEASURED_BOOT, name)
}

/// The component of a built-in runtime policy.
pub fn builtin_runtime(name: &str) -> Option<&'static [u8]> {
    find(BUILTIN_RUNTIME, name)
}

/// Names of the built-ins of one kind, for messages.
pub fn builtin_names(table: &[(&str, &[u8])]) -> String {
    table.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
}

fn find(table: &[(&'static str, &'static [u8])], name: &str) -> Option<&'static [u8]> {
    table.iter().find(|(n, _)| *n == name).map(|(_, bytes)| *bytes)
}
