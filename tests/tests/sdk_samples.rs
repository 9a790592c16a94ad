//! The policy SDK's sample evidence (`sdk/testdata`) is what this generator makes: the UEFI
//! event log of a Secure Boot machine booting Linux through shim and GRUB, and an IMA list
//! of that boot. Everything comes from fixed inputs (no randomness, no clock), so the files
//! are reproducible; `ZEST_WRITE_SAMPLES=1 cargo test -p zest-tests --test sdk_samples`
//! writes them again.

use std::path::{Path, PathBuf};

use aws_lc_rs::signature::Ed25519KeyPair;
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PKCS_ED25519, SerialNumber};
use rustls_pki_types::PrivatePkcs8KeyDer;
use zest::evidence::HashAlg;
use zest::evidence::ima::{ImaPosition, replay};
use zest::evidence::uefi::{
    DataCheck, EV_EFI_ACTION, EV_EFI_VARIABLE_AUTHORITY, EV_EFI_VARIABLE_BOOT, EV_EFI_VARIABLE_DRIVER_CONFIG,
    EV_IPL, EV_NO_ACTION, EV_S_CRTM_VERSION, EV_SEPARATOR, Event, EventData, EventLog, Guid, SignatureEntry,
    SpecId, UefiVariable, VariableData, boot_aggregates,
};
use zest_tests::boot::{covered, event, guid, uefi_variable, utf16};
use zest_tests::ima::ImaLog;

const EV_EFI_BOOT_SERVICES_APPLICATION: u32 = 0x8000_0003;
const EV_EFI_PLATFORM_FIRMWARE_BLOB: u32 = 0x8000_0008;

/// The banks of the log: (TPM_ALG_ID, digest size) of SHA-1 and SHA-256.
const BANKS: [(u16, u16); 2] = [(0x0004, 20), (0x000b, 32)];

/// EFI_GLOBAL_VARIABLE: SecureBoot, PK, KEK, BootOrder, Boot####.
const GLOBAL: &str = "8be4df61-93ca-11d2-aa0d-00e098032b8c";
/// EFI_IMAGE_SECURITY_DATABASE_GUID: db, dbx.
const IMAGE_SECURITY: &str = "d719b2cb-3d3a-4596-a3bc-dad00e67656f";
const CERT_X509: &str = "a5c059a1-94e4-4aa7-87b5-ab155c2bf072";
const CERT_SHA256: &str = "c1c41626-504c-4092-aca9-41f936934328";
/// The owner of every signature in PK, KEK, db and dbx: a zest GUID ("Zest" in its first
/// field), so no sample key passes for a vendor's.
const OWNER: &str = "5a657374-0000-4000-8000-000000000001";
/// The GPT signature of the EFI system partition.
const PARTITION: &str = "5a657374-0000-4000-8000-000000000002";

const SHIM: &str = "\\EFI\\zest\\shimx64.efi";
const GRUB: &str = "\\EFI\\zest\\grubx64.efi";
const KERNEL: &str = "/vmlinuz-6.12.0";
const INITRAMFS: &str = "/initramfs-6.12.0.img";
const CMDLINE: &str = "root=UUID=5c7b1a0e-3f4d-4f7e-9a56-2c1d0e9b8a77 ro quiet";

/// What IMA measured after the boot aggregate, in order. `/tmp/payload.sh` is there for
/// policies that refuse what runs from `/tmp`.
const IMA_FILES: [&str; 7] = [
    "/usr/lib/systemd/systemd",
    "/usr/bin/bash",
    "/usr/bin/ls",
    "/etc/ld.so.cache",
    "/usr/lib64/libc.so.6",
    "/tmp/payload.sh",
    "/usr/bin/cat",
];

/// The PCRs `sdk/testdata/README.md` lists, with what they measure in the sample boot
/// (10 is the IMA list's).
const README_PCRS: [(u32, &str); 6] = [
    (0, "firmware: S-CRTM version, firmware volume"),
    (4, "boot applications: shim, GRUB"),
    (7, "Secure Boot: its state, its keys, what verified shim"),
    (8, "GRUB: its commands and the kernel command line"),
    (9, "files GRUB read: kernel, initramfs"),
    (10, "IMA: the list, from zeros"),
];

/// The two files, and what the tests check them against.
struct Samples {
    log: EventLog,
    boot_log: Vec<u8>,
    ima_list: String,
    /// PCR 10 of the SHA-256 bank after the IMA list, extended from zeros.
    pcr10: Vec<u8>,
    db_certificate: Vec<u8>,
}

fn generate() -> Samples {
    let db_certificate = certificate("zest sample db", 3);
    let log = boot_event_log(&db_certificate);
    let boot_log = log.encode();
    // `boot_aggregates` gives H(PCR 0..7) and H(PCR 0..9). IMA on a TPM 2.0 hashes PCRs 0–9
    // since Linux 5.8 (GRUB's PCRs 8 and 9 included), so the second is what the kernel logs.
    let aggregate = boot_aggregates(&log.replay())[&HashAlg::Sha256][1].clone();
    let (ima_list, pcr10) = ima_list(&aggregate);
    Samples {
        log,
        boot_log,
        ima_list,
        pcr10,
        db_certificate,
    }
}

/// UTF-16LE with its NUL.
fn utf16z(s: &str) -> Vec<u8> {
    let mut out = utf16(s);
    out.extend_from_slice(&[0, 0]);
    out
}

/// EFI_SIGNATURE_DATA: the owner, then the signature (a certificate, a hash).
fn signature_data(data: &[u8]) -> Vec<u8> {
    [guid(OWNER).as_slice(), data].concat()
}

/// One EFI_SIGNATURE_LIST of `signature_type` without a header; its entries are all of one
/// size, as the format requires.
fn signature_list(signature_type: &str, entries: &[Vec<u8>]) -> Vec<u8> {
    let size = entries[0].len();
    assert!(entries.iter().all(|e| e.len() == size));
    let mut out = guid(signature_type).to_vec();
    out.extend_from_slice(&((28 + size * entries.len()) as u32).to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&(size as u32).to_le_bytes());
    for entry in entries {
        out.extend_from_slice(entry);
    }
    out
}

/// The device path of a file on the EFI system partition: a GPT hard drive node
/// (partition 1, from LBA 2048, 1230848 sectors), the file path node, the end node.
fn device_path(file: &str) -> Vec<u8> {
    let mut path = vec![4, 1, 42, 0];
    path.extend_from_slice(&1u32.to_le_bytes());
    path.extend_from_slice(&2048u64.to_le_bytes());
    path.extend_from_slice(&1_230_848u64.to_le_bytes());
    path.extend_from_slice(&guid(PARTITION));
    // MBRType 2 (GPT), SignatureType 2 (GUID).
    path.extend_from_slice(&[2, 2]);
    assert_eq!(path.len(), 42);
    let name = utf16z(file);
    path.extend_from_slice(&[4, 4]);
    path.extend_from_slice(&((4 + name.len()) as u16).to_le_bytes());
    path.extend_from_slice(&name);
    path.extend_from_slice(&[0x7f, 0xff, 4, 0]);
    path
}

/// The text UEFI (and zest) renders [`device_path`] as.
fn device_path_text(file: &str) -> String {
    format!("HD(1,GPT,{PARTITION},0x800,0x12c800)/{file}")
}

/// EFI_LOAD_OPTION, active, booting `file`.
fn load_option(description: &str, file: &str) -> Vec<u8> {
    let path = device_path(file);
    let mut out = 1u32.to_le_bytes().to_vec();
    out.extend_from_slice(&(path.len() as u16).to_le_bytes());
    out.extend_from_slice(&utf16z(description));
    out.extend_from_slice(&path);
    out
}

/// UEFI_IMAGE_LOAD_EVENT of `file` loaded at `location`.
fn image_load(location: u64, length: u64, file: &str) -> Vec<u8> {
    let path = device_path(file);
    let mut out = Vec::new();
    for value in [location, length, 0, path.len() as u64] {
        out.extend_from_slice(&value.to_le_bytes());
    }
    out.extend_from_slice(&path);
    out
}

/// A self-signed Ed25519 certificate for `common_name`. The key comes from a seed derived
/// from the name and Ed25519 signatures are deterministic, so the DER is the same on every
/// run.
fn certificate(common_name: &str, serial: u64) -> Vec<u8> {
    let seed = HashAlg::Sha256.digest(&[format!("zest sample key: {common_name}").as_bytes()]);
    let pkcs8 = Ed25519KeyPair::from_seed_unchecked(&seed)
        .unwrap()
        .to_pkcs8()
        .unwrap();
    let der: &[u8] = pkcs8.as_ref();
    let key = KeyPair::from_pkcs8_der_and_sign_algo(&PrivatePkcs8KeyDer::from(der), &PKCS_ED25519).unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, common_name);
    params.serial_number = Some(SerialNumber::from(serial));
    params.not_before = rcgen::date_time_ymd(2025, 1, 1);
    params.not_after = rcgen::date_time_ymd(2045, 1, 1);
    params.self_signed(&key).unwrap().der().to_vec()
}

/// The text event GRUB logs: `prefix` and `text` with a NUL, its digests of `text` alone.
fn grub(pcr: u32, prefix: &str, text: &str, measured: &[u8]) -> Event {
    let mut data = format!("{prefix}{text}").into_bytes();
    data.push(0);
    event(pcr, EV_IPL, data, measured)
}

/// TCG_EfiSpecIDEvent: both banks, no vendor information.
fn spec_id_event_data() -> Vec<u8> {
    let mut data = b"Spec ID Event03\0".to_vec();
    // platformClass 0 (client).
    data.extend_from_slice(&0u32.to_le_bytes());
    // specVersionMinor 0, specVersionMajor 2, specErrata 0, uintnSize 2 (UINT64).
    data.extend_from_slice(&[0, 2, 0, 2]);
    data.extend_from_slice(&(BANKS.len() as u32).to_le_bytes());
    for (alg, size) in BANKS {
        data.extend_from_slice(&alg.to_le_bytes());
        data.extend_from_slice(&size.to_le_bytes());
    }
    // vendorInfoSize.
    data.push(0);
    data
}

fn boot_event_log(db_certificate: &[u8]) -> EventLog {
    let x509_list =
        |name: &str, serial: u64| signature_list(CERT_X509, &[signature_data(&certificate(name, serial))]);
    let dbx = signature_list(
        CERT_SHA256,
        &[
            signature_data(&HashAlg::Sha256.digest(&[b"zest sample: revoked image 1".as_slice()])),
            signature_data(&HashAlg::Sha256.digest(&[b"zest sample: revoked image 2".as_slice()])),
        ],
    );
    let mut firmware_volume = 0xffc0_0000u64.to_le_bytes().to_vec();
    firmware_volume.extend_from_slice(&0x40_0000u64.to_le_bytes());
    let linux = format!("linux {KERNEL} {CMDLINE}");
    let cmdline = format!("{KERNEL} {CMDLINE}");

    let mut events = vec![
        // The header, in the SHA-1 format: a zero digest, as firmware logs it.
        Event {
            number: 0,
            pcr: 0,
            event_type: EV_NO_ACTION,
            digests: vec![(HashAlg::Sha1.tpm_id(), vec![0; 20])],
            data: spec_id_event_data(),
        },
        covered(0, EV_S_CRTM_VERSION, utf16z("1.0")),
        event(
            0,
            EV_EFI_PLATFORM_FIRMWARE_BLOB,
            firmware_volume,
            b"zest sample: platform firmware",
        ),
        covered(
            7,
            EV_EFI_VARIABLE_DRIVER_CONFIG,
            uefi_variable(GLOBAL, "SecureBoot", &[1]),
        ),
        covered(
            7,
            EV_EFI_VARIABLE_DRIVER_CONFIG,
            uefi_variable(GLOBAL, "PK", &x509_list("zest sample PK", 1)),
        ),
        covered(
            7,
            EV_EFI_VARIABLE_DRIVER_CONFIG,
            uefi_variable(GLOBAL, "KEK", &x509_list("zest sample KEK", 2)),
        ),
        covered(
            7,
            EV_EFI_VARIABLE_DRIVER_CONFIG,
            uefi_variable(
                IMAGE_SECURITY,
                "db",
                &signature_list(CERT_X509, &[signature_data(db_certificate)]),
            ),
        ),
        covered(
            7,
            EV_EFI_VARIABLE_DRIVER_CONFIG,
            uefi_variable(IMAGE_SECURITY, "dbx", &dbx),
        ),
        covered(
            1,
            EV_EFI_VARIABLE_BOOT,
            uefi_variable(GLOBAL, "BootOrder", &1u16.to_le_bytes()),
        ),
        covered(
            1,
            EV_EFI_VARIABLE_BOOT,
            uefi_variable(GLOBAL, "Boot0001", &load_option("zest sample Linux", SHIM)),
        ),
    ];
    events.extend((0..=7).map(|pcr| covered(pcr, EV_SEPARATOR, vec![0; 4])));
    events.extend([
        covered(
            4,
            EV_EFI_ACTION,
            b"Calling EFI Application from Boot Option".to_vec(),
        ),
        event(
            4,
            EV_EFI_BOOT_SERVICES_APPLICATION,
            image_load(0x7d8a_6000, 0x000e_b000, SHIM),
            b"zest sample: shimx64.efi image",
        ),
        // The db certificate that verified shim.
        covered(
            7,
            EV_EFI_VARIABLE_AUTHORITY,
            uefi_variable(IMAGE_SECURITY, "db", &signature_data(db_certificate)),
        ),
        event(
            4,
            EV_EFI_BOOT_SERVICES_APPLICATION,
            image_load(0x7d6f_2000, 0x002a_2000, GRUB),
            b"zest sample: grubx64.efi image",
        ),
        // GRUB measures the command (the command line) without its prefix and NUL.
        grub(8, "grub_cmd: ", &linux, linux.as_bytes()),
        grub(8, "kernel_cmdline: ", &cmdline, cmdline.as_bytes()),
        // Files GRUB reads are measured by content; the log names them.
        grub(9, "", KERNEL, b"zest sample: kernel image"),
        grub(9, "", INITRAMFS, b"zest sample: initramfs"),
        covered(5, EV_EFI_ACTION, b"Exit Boot Services Invocation".to_vec()),
        covered(
            5,
            EV_EFI_ACTION,
            b"Exit Boot Services Returned with Success".to_vec(),
        ),
    ]);
    for (number, e) in events.iter_mut().enumerate() {
        e.number = number;
    }
    EventLog {
        spec_id: SpecId {
            platform_class: 0,
            spec_version: (2, 0, 0),
            uintn_size: 2,
            algorithms: BANKS.to_vec(),
        },
        events,
    }
}

/// The IMA list (ima-ng, SHA-256 file digests) and PCR 10 of the SHA-256 bank after it.
fn ima_list(boot_aggregate: &[u8]) -> (String, Vec<u8>) {
    let mut ima = ImaLog::default();
    let mut extensions = vec![ima.add_ima_ng("boot_aggregate", boot_aggregate)];
    for path in IMA_FILES {
        let content = HashAlg::Sha256.digest(&[format!("zest sample: {path}").as_bytes()]);
        extensions.push(ima.add_ima_ng(path, &content));
    }
    let pcr10 = extensions.iter().fold(vec![0u8; 32], |pcr, e| {
        HashAlg::Sha256.digest(&[pcr.as_slice(), e.sha256.as_slice()])
    });
    (ima.text(), pcr10)
}

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("sdk")
        .join("testdata")
}

#[test]
fn samples_are_what_the_generator_makes() {
    let samples = generate();
    let again = generate();
    assert!(
        again.boot_log == samples.boot_log && again.ima_list == samples.ima_list,
        "the generator is not deterministic"
    );
    let files = [
        ("boot.log", samples.boot_log),
        ("ascii_runtime_measurements", samples.ima_list.into_bytes()),
    ];
    let dir = testdata();
    if std::env::var_os("ZEST_WRITE_SAMPLES").is_some() {
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in &files {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
        return;
    }
    for (name, bytes) in &files {
        let path = dir.join(name);
        let committed = std::fs::read(&path).unwrap_or_default();
        assert!(
            committed == *bytes,
            "{} is not what tests/tests/sdk_samples.rs makes: rerun with ZEST_WRITE_SAMPLES=1 \
             cargo test -p zest-tests --test sdk_samples, and update sdk/testdata/README.md",
            path.display()
        );
    }
}

/// The variable an event of this log carries.
fn decoded_variable(e: &Event) -> UefiVariable {
    match e.decode() {
        EventData::Variable(v) => v,
        other => panic!("event {} is not a variable: {other:?}", e.number),
    }
}

#[test]
fn the_sample_boot_log_decodes_as_meant() {
    for text in [GLOBAL, IMAGE_SECURITY, CERT_X509, CERT_SHA256, OWNER, PARTITION] {
        assert_eq!(Guid(guid(text)).to_string(), text);
    }
    let samples = generate();
    let log = &samples.log;
    assert_eq!(&EventLog::parse(&samples.boot_log).unwrap(), log);
    assert_eq!(log.events.len(), 28);
    assert_eq!(log.events[0].decode(), EventData::SpecId);
    for (number, e) in log.events.iter().enumerate() {
        assert_eq!(e.number, number);
    }

    // Every digest that covers its data is of it: the verifier accepts the data.
    let mut verified = 0;
    for e in &log.events {
        match e.check_data() {
            DataCheck::Verified => verified += 1,
            DataCheck::NotCovered => {}
            DataCheck::Mismatch { alg } => {
                panic!("event {} ({}) mismatches in {alg:?}", e.number, e.type_name())
            }
        }
    }
    // S-CRTM version, 5 driver-config and 2 boot variables, 8 separators, 3 EFI actions,
    // the authority.
    assert_eq!(verified, 20);

    let variable = |event_type: u32, name: &str| -> UefiVariable {
        log.events
            .iter()
            .filter(|e| e.event_type == event_type)
            .map(decoded_variable)
            .find(|v| v.name == name)
            .unwrap_or_else(|| panic!("no variable {name} of type {event_type:#x}"))
    };
    let secure_boot = variable(EV_EFI_VARIABLE_DRIVER_CONFIG, "SecureBoot");
    assert_eq!(secure_boot.decoded, VariableData::Boolean(true));
    assert_eq!(secure_boot.guid.to_string(), GLOBAL);
    for (name, subject, guid_text) in [
        ("PK", "zest sample PK", GLOBAL),
        ("KEK", "zest sample KEK", GLOBAL),
        ("db", "zest sample db", IMAGE_SECURITY),
    ] {
        let v = variable(EV_EFI_VARIABLE_DRIVER_CONFIG, name);
        assert_eq!(v.guid.to_string(), guid_text, "{name}");
        let VariableData::SignatureLists(lists) = &v.decoded else {
            panic!("{name} is not signature lists: {v:?}")
        };
        assert_eq!(lists.len(), 1, "{name}");
        assert_eq!(lists[0].signature_type.to_string(), CERT_X509, "{name}");
        assert_eq!(lists[0].entries.len(), 1, "{name}");
        let entry = &lists[0].entries[0];
        assert_eq!(entry.owner.to_string(), OWNER, "{name}");
        let (rest, cert) = x509_parser::parse_x509_certificate(&entry.data).unwrap();
        assert!(rest.is_empty(), "{name}");
        assert_eq!(cert.subject().to_string(), format!("CN={subject}"));
        if name == "db" {
            assert_eq!(entry.data, samples.db_certificate);
        }
    }
    let dbx = variable(EV_EFI_VARIABLE_DRIVER_CONFIG, "dbx");
    let VariableData::SignatureLists(lists) = &dbx.decoded else {
        panic!("dbx is not signature lists: {dbx:?}")
    };
    assert_eq!(lists.len(), 1);
    assert_eq!(lists[0].signature_type.to_string(), CERT_SHA256);
    assert_eq!(lists[0].entries.len(), 2);
    assert!(lists[0].entries.iter().all(|e| e.data.len() == 32));

    assert_eq!(
        variable(EV_EFI_VARIABLE_BOOT, "BootOrder").decoded,
        VariableData::BootOrder(vec![1])
    );
    assert_eq!(
        variable(EV_EFI_VARIABLE_BOOT, "Boot0001").decoded,
        VariableData::BootOption {
            enabled: true,
            description: "zest sample Linux".into(),
            device_path: device_path_text(SHIM),
        }
    );
    assert_eq!(
        variable(EV_EFI_VARIABLE_AUTHORITY, "db").decoded,
        VariableData::Signature(SignatureEntry {
            owner: Guid(guid(OWNER)),
            data: samples.db_certificate.clone(),
        })
    );

    let images: Vec<String> = log
        .events
        .iter()
        .filter(|e| e.event_type == EV_EFI_BOOT_SERVICES_APPLICATION)
        .map(|e| match e.decode() {
            EventData::ImageLoad(image) => image.device_path_text,
            other => panic!("event {} is not an image load: {other:?}", e.number),
        })
        .collect();
    assert_eq!(images, [device_path_text(SHIM), device_path_text(GRUB)]);

    let firmware: Vec<EventData> = log
        .events
        .iter()
        .filter(|e| e.event_type == EV_EFI_PLATFORM_FIRMWARE_BLOB)
        .map(Event::decode)
        .collect();
    assert_eq!(
        firmware,
        [EventData::FirmwareBlob {
            description: None,
            base: 0xffc0_0000,
            length: 0x40_0000,
        }]
    );

    for pcr in 0..=7 {
        let separators: Vec<EventData> = log
            .events
            .iter()
            .filter(|e| e.pcr == pcr && e.event_type == EV_SEPARATOR)
            .map(Event::decode)
            .collect();
        assert_eq!(separators, [EventData::Separator(vec![0; 4])], "PCR {pcr}");
    }

    let texts = |pcr: u32, event_type: u32| -> Vec<String> {
        log.events
            .iter()
            .filter(|e| e.pcr == pcr && e.event_type == event_type)
            .map(|e| match e.decode() {
                EventData::Text(text) => text,
                other => panic!("event {} is not text: {other:?}", e.number),
            })
            .collect()
    };
    assert_eq!(texts(0, EV_S_CRTM_VERSION), ["1.0"]);
    assert_eq!(
        texts(4, EV_EFI_ACTION),
        ["Calling EFI Application from Boot Option"]
    );
    assert_eq!(
        texts(5, EV_EFI_ACTION),
        [
            "Exit Boot Services Invocation",
            "Exit Boot Services Returned with Success"
        ]
    );
    assert_eq!(
        texts(8, EV_IPL),
        [
            format!("grub_cmd: linux {KERNEL} {CMDLINE}"),
            format!("kernel_cmdline: {KERNEL} {CMDLINE}"),
        ]
    );
    assert_eq!(texts(9, EV_IPL), [KERNEL, INITRAMFS]);
}

#[test]
fn the_sample_ima_list_replays_from_the_boot_aggregate() {
    let samples = generate();
    let lines: Vec<&str> = samples.ima_list.lines().collect();
    assert_eq!(lines.len(), 1 + IMA_FILES.len());
    let aggregate = boot_aggregates(&samples.log.replay())[&HashAlg::Sha256][1].clone();
    assert!(
        lines[0].ends_with(&format!(
            " ima-ng sha256:{} boot_aggregate",
            hex::encode(aggregate)
        )),
        "{}",
        lines[0]
    );
    assert!(lines.iter().any(|l| l.ends_with(" /tmp/payload.sh")));

    // zest's own replay agrees with the PCR 10 computed beside the list; its template-hash
    // column is SHA-1, as the kernel writes it.
    let replayed = replay(
        &samples.ima_list,
        HashAlg::Sha256,
        HashAlg::Sha1,
        &ImaPosition::start(HashAlg::Sha256),
        None,
    );
    assert!(replayed.parse_errors.is_empty());
    assert_eq!(replayed.entries.len(), lines.len());
    assert!(
        replayed
            .entries
            .iter()
            .all(|e| e.template_hash_ok && e.pcr_ok && !e.violation)
    );
    assert_eq!(replayed.final_pcr10, samples.pcr10);
}

#[test]
fn the_readme_states_the_sample_pcrs() {
    let samples = generate();
    let banks = samples.log.replay();
    let sha256 = &banks[&HashAlg::Sha256];
    let rows: Vec<(u32, &str, String)> = README_PCRS
        .iter()
        .map(|&(pcr, what)| {
            let value = if pcr == 10 { &samples.pcr10 } else { &sha256[&pcr] };
            (pcr, what, hex::encode(value))
        })
        .collect();
    let table: String = rows
        .iter()
        .map(|(pcr, what, value)| format!("| {pcr} | {what} | `{value}` |\n"))
        .collect();
    eprintln!("the table of sdk/testdata/README.md:\n\n| PCR | Measures | SHA-256 |\n|---|---|---|\n{table}");
    let readme = std::fs::read_to_string(testdata().join("README.md")).unwrap();
    for (pcr, _, value) in &rows {
        assert!(
            readme.contains(value.as_str()),
            "sdk/testdata/README.md does not give PCR {pcr} as {value} (the table above is current)"
        );
    }
}
