//! The built-in policies, compiled from `policies/` by the build script and embedded.

/// Built-in measured-boot policies: (name, component bytes).
pub const BUILTIN_MEASURED_BOOT: &[(&str, &[u8])] = &[
    (
        "accept-all",
        include_bytes!(concat!(env!("OUT_DIR"), "/accept_all.wasm")),
    ),
    (
        "reject-all",
        include_bytes!(concat!(env!("OUT_DIR"), "/reject_all.wasm")),
    ),
];

/// The component of a built-in measured-boot policy.
pub fn builtin_measured_boot(name: &str) -> Option<&'static [u8]> {
    BUILTIN_MEASURED_BOOT
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, bytes)| *bytes)
}
