#!/usr/bin/env bash
# `zest policy create runtime` against Keylime 7.14.3's `keylime-policy create runtime` on the
# same inputs: a root filesystem, initramfs images of every compression, flat allowlists,
# base policies, IMA lists and --algo. Where Keylime is right both must write the same policy
# (up to meta.timestamp and key order, which Keylime's thread pool leaves unordered); where
# Keylime fails silently or on valid input, zest's own outcome is checked.
# Usage: policy_create.sh ZEST KEYLIME_POLICY PYTHON WORKDIR. Run as root: keylime-policy
# refuses anything else, and only root can make the file of another owner it must skip.
set -euo pipefail
zest=$1 kp=$2 py=$3 work=$4
root=$(cd "$(dirname "$0")/../.." && pwd)
mkdir -p "$work" && cd "$work"
T=202401020304.05 # fixed mtimes: reproducible images

# A root filesystem with what Keylime keeps and what it leaves out.
R=rootfs
mkdir -p $R/bin $R/etc/sub $R/usr/lib/deep/nested $R/usr/var $R/var/log $R/tmp $R/proc \
  $R/home/user $R/srv $R/lost+found $R/media $R/opt/run $R/usr/share/empty-dir
printf '#!/bin/sh\necho hi\n' >$R/bin/tool && chmod 0755 $R/bin/tool
printf 'hello\n' >$R/etc/config.txt
: >$R/etc/empty
printf 'spaced\n' >"$R/etc/with space.conf"
printf 'caf\xc3\xa9\n' >"$R/etc/caf$(printf '\xc3\xa9').txt"
printf 'in skip-path dir\n' >$R/etc/sub/skipme.txt
printf 'libdata' >$R/usr/lib/deep/nested/lib.so
printf 'usr/var is not /var\n' >$R/usr/var/kept
printf 'opt/run is not /run\n' >$R/opt/run/kept
for d in var/log tmp proc lost+found media; do printf 'left out\n' >"$R/$d/skipped"; done
printf 'not root\n' >$R/home/user/notroot.txt && chown 1000:1000 $R/home/user/notroot.txt
printf 'root-owned in home\n' >$R/home/user/rootowned.txt
head -c 102400 /dev/urandom >$R/srv/big.bin && chmod 0600 $R/srv/big.bin
ln -s bin/tool $R/link-to-tool
ln -s ../usr $R/etc/dirlink
ln -s /nonexistent $R/etc/dangling
mkfifo $R/etc/fifo

# initramfs images: the same tree with a tag, in every format Keylime reads.
tree() {
  mkdir -p "$1/usr/bin" "$1/etc" "$1/usr/lib/modules"
  printf '#!/bin/sh\n# init %s\n' "$2" >"$1/usr/bin/init" && chmod 0755 "$1/usr/bin/init"
  printf 'NAME=%s\n' "$2" >"$1/etc/initrd-release"
  printf 'shared content\n' >"$1/usr/lib/modules/common.ko"
  printf 'space %s\n' "$2" >"$1/etc/space name.conf"
  : >"$1/etc/empty"
  ln -s usr/bin "$1/bin"
  ln -s init "$1/usr/bin/sh"
}
newc() {
  (cd "$1" && find . -print0 | LC_ALL=C sort -z | xargs -0 touch -h -t $T &&
    find . -print0 | LC_ALL=C sort -z | cpio --quiet -o -H newc --null --reproducible)
}
stage=$work/stage
for tag in gzip zstd xz plain early-main; do tree "$stage/$tag" "$tag"; done
mkdir -p "$stage/early/kernel/x86/microcode" && printf 'FAKE MICROCODE\n' >"$stage/early/kernel/x86/microcode/GenuineIntel.bin"
for d in gzip zstd xz lz4 lz4frame bzip2 plain plain-unpadded early early-zstd multi nodirs; do mkdir "ramdisk-$d"; done
newc "$stage/gzip" | gzip -n -9 >ramdisk-gzip/initramfs-6.1.0-test.img
newc "$stage/zstd" | zstd -q -19 -c >ramdisk-zstd/initramfs-6.1.0-test.img
newc "$stage/xz" | xz -c --check=crc32 >ramdisk-xz/initrd.img-6.1.0-test
newc "$stage/gzip" | lz4 -q -l -c >ramdisk-lz4/initrd.img-lz4
newc "$stage/gzip" | lz4 -q -c >ramdisk-lz4frame/initrd.img-lz4frame
newc "$stage/gzip" | bzip2 -c >ramdisk-bzip2/initrd.img-bz2
newc "$stage/plain" >ramdisk-plain/initrd.img-plain
newc "$stage/plain" | "$py" -c '
import sys; d = sys.stdin.buffer.read(); i = d.rindex(b"TRAILER!!!\0")
sys.stdout.buffer.write(d[:(i + 11 + 3) & ~3])' >ramdisk-plain-unpadded/initrd.img-unpadded
{ newc "$stage/early"; newc "$stage/early-main" | zstd -q -c; } >ramdisk-early-zstd/initrd.img-early-zstd
{ newc "$stage/early"; newc "$stage/early-main" | gzip -n -9; } >ramdisk-early/initrd.img-early
cp ramdisk-gzip/initramfs-6.1.0-test.img ramdisk-multi/initramfs-a.img
cp ramdisk-zstd/initramfs-6.1.0-test.img ramdisk-multi/initrd-b.img
cp ramdisk-xz/initrd.img-6.1.0-test ramdisk-multi/vmlinuz-6.1.0-test
mkdir ramdisk-multi/initrd-subdir && cp ramdisk-gzip/initramfs-6.1.0-test.img ramdisk-multi/initrd-subdir/
ln -s initramfs-a.img ramdisk-multi/initrd-link.img
(cd "$stage/gzip" && find . -type f -print0 | LC_ALL=C sort -z | cpio --quiet -o -H newc --null --reproducible) |
  gzip -n >ramdisk-nodirs/initrd-nodirs.img

# Allowlists as sha256sum/sha1sum write them, base policies, exclude lists, IMA lists.
(cd rootfs && sha256sum bin/tool etc/config.txt "etc/with space.conf" | sed 's#  #  /#') >allowlist-sha256.txt
printf '%s  /usr/bin/other\n' "$(printf 'other\n' | sha256sum | cut -d' ' -f1)" >>allowlist-sha256.txt
printf '%s  /usr/bin/other\n\n   \n' "$(printf 'other2\n' | sha256sum | cut -d' ' -f1)" >>allowlist-sha256.txt
(cd rootfs && sha1sum bin/tool etc/config.txt "etc/with space.conf" | sed 's#  #  /#') >allowlist-sha1.txt
(cd rootfs && sha256sum -b bin/tool | sed 's# \*# */#') >allowlist-binary-marker.txt
printf '%s\t/etc/tabbed\n' "$(printf 'tab\n' | sha256sum | cut -d' ' -f1)" >allowlist-tab.txt
{ echo '# a comment line'; cat allowlist-sha256.txt; } >allowlist-comment.txt
"$py" - <<'PY'
import json, hashlib
h = lambda b, a="sha256": hashlib.new(a, b).hexdigest()
json.dump({
  "meta": {"version": 1, "generator": 1, "timestamp": "2020-01-01 00:00:00"}, "release": 7,
  "digests": {"/bin/tool": [h(b"old tool\n"), h(b"#!/bin/sh\necho hi\n")], "/usr/bin/base-only": [h(b"base\n")]},
  "excludes": ["^/tmp/.*", "^/var/log/.*"], "keyrings": {".ima": [h(b"key")]},
  "ima": {"ignored_keyrings": ["%keyring"], "log_hash_alg": "sha256", "dm_policy": None},
  "ima-buf": {"dm_table_load": [h(b"dm")]}, "verification-keys": "", "extra-field": "dropped",
}, open("base-policy-sha256.json", "w"), indent=2)
json.dump({"digests": {"/bin/tool": [h(b"old tool\n", "sha1")]}, "excludes": ["^/opt/.*"]}, open("base-policy-sha1.json", "w"))
z = "0" * 40
open("ima-sha1.log", "w").write(f"10 {z} ima-ng sha1:{h(b'ba', 'sha1')} boot_aggregate\n"
                                f"10 {z} ima-ng sha1:{h(b'#!/bin/sh' + bytes([10]) + b'echo hi' + bytes([10]), 'sha1')} /bin/tool\n")
PY
cp "$root/sdk/testdata/ascii_runtime_measurements" ima-sha256.log
printf '^/proc/.*\n\n  ^/sys/.*  \n' >excludes.txt

same() { # CASE ARGS…: both write the same policy
  local case=$1
  shift
  "$kp" create runtime "$@" >"kl-$case.json" 2>"kl-$case.err" || { cat "kl-$case.err" >&2; echo "keylime-policy failed on $case" >&2; return 1; }
  "$zest" policy create runtime "$@" >"z-$case.json" 2>"z-$case.err" || { cat "z-$case.err" >&2; echo "zest failed on $case" >&2; return 1; }
  "$py" - "kl-$case.json" "z-$case.json" <<'PY' || { echo "policies differ on $case" >&2; return 1; }
import json, sys
def norm(path):
    d = json.load(open(path, encoding="utf-8"))
    assert isinstance(d["meta"].pop("timestamp"), str), path
    return d
a, b = (norm(p) for p in sys.argv[1:3])
assert a["digests"], "no digests: the case proves nothing"
if a != b:
    for k in sorted(set(a["digests"]) | set(b["digests"])):
        if a["digests"].get(k) != b["digests"].get(k):
            print(f"  {k}: keylime {a['digests'].get(k)} zest {b['digests'].get(k)}", file=sys.stderr)
    print({k: (a[k], b[k]) for k in a if k != "digests" and a[k] != b.get(k)}, file=sys.stderr)
    sys.exit(1)
PY
  cases=$((cases + 1))
}
cases=0
same rootfs --rootfs rootfs
same rootfs-abs --rootfs "$work/rootfs/"
for a in sha1 sha384 sha512; do same "rootfs-$a" --rootfs rootfs --algo $a; done
same rootfs-skip --rootfs rootfs -s rootfs/etc/sub,rootfs/usr/lib
same rootfs-skip-deep --rootfs rootfs -s rootfs/usr/lib/deep/
for d in gzip zstd xz lz4frame bzip2 plain early early-zstd multi; do same "ramdisk-$d" --ramdisk-dir "ramdisk-$d"; done
for a in sha1 sha384 sha512; do same "ramdisk-$a" --ramdisk-dir ramdisk-gzip --algo $a; done
same allowlist-sha256 --allowlist allowlist-sha256.txt
same allowlist-sha1 --allowlist allowlist-sha1.txt
same allowlist-binary-marker --allowlist allowlist-binary-marker.txt
same allowlist-tab --allowlist allowlist-tab.txt
same allowlist-sha1-rootfs --allowlist allowlist-sha1.txt --rootfs rootfs
same allowlist-sha1-algo-sha1 --allowlist allowlist-sha1.txt --algo sha1
same base-sha256 --base-policy base-policy-sha256.json
same base-sha1-rootfs --base-policy base-policy-sha1.json --rootfs rootfs
same base-sha256-allowlist-sha256 --base-policy base-policy-sha256.json --allowlist allowlist-sha256.txt
same ima-sha256-rootfs -m ima-sha256.log --rootfs rootfs
same ima-sha1-rootfs-ramdisk -m ima-sha1.log --rootfs rootfs --ramdisk-dir ramdisk-gzip
same combined-sha256 --base-policy base-policy-sha256.json --allowlist allowlist-sha256.txt -m ima-sha256.log \
  --rootfs rootfs -s rootfs/etc/sub --ramdisk-dir ramdisk-multi -e excludes.txt --ignored-keyrings .builtin_trusted_keys
same combined-sha1 --base-policy base-policy-sha1.json --allowlist allowlist-sha1.txt -m ima-sha1.log --algo sha1 \
  --rootfs rootfs --ramdisk-dir ramdisk-early -e excludes.txt
same rootfs-ramdisk-sha512 --algo sha512 --rootfs rootfs --ramdisk-dir ramdisk-zstd

# Both refuse: algorithms that disagree, a JSON file given as an allowlist.
refused() { # CASE ARGS…
  local case=$1
  shift
  if "$kp" create runtime "$@" >/dev/null 2>"kl-$case.err"; then echo "keylime-policy accepted $case" >&2; return 1; fi
  if "$zest" policy create runtime "$@" >"z-$case.out" 2>"z-$case.err" || [ -s "z-$case.out" ]; then
    echo "zest accepted $case" >&2
    return 1
  fi
  cases=$((cases + 1))
}
refused base-sha1-allowlist-sha256 --base-policy base-policy-sha1.json --allowlist allowlist-sha256.txt
refused ima-sha1-algo-sha256 -m ima-sha1.log --algo sha256 --rootfs rootfs
refused allowlist-sha1-algo-sha256 --allowlist allowlist-sha1.txt --algo sha256
refused allowlist-json --allowlist base-policy-sha256.json

# Where Keylime fails on valid input, zest reads it; each must give the same files as the
# same tree in a form both read.
"$py" - "$zest" <<'PY'
import json, subprocess, sys
zest = sys.argv[1]
def digests(*args):
    out = subprocess.run([zest, "policy", "create", "runtime", *args], check=True, capture_output=True).stdout
    return json.loads(out)["digests"]
gzip = digests("--ramdisk-dir", "ramdisk-gzip")
for d in ("lz4", "nodirs"):  # legacy lz4 (the kernel's format), an archive without directories
    assert digests("--ramdisk-dir", f"ramdisk-{d}") == gzip, d
plain = digests("--ramdisk-dir", "ramdisk-plain")
assert digests("--ramdisk-dir", "ramdisk-plain-unpadded") == plain, "unpadded"
# SHA-256 allowlists and base policies: Keylime refuses --algo sha256 with them, and leaves the
# rootfs out without it (64 hex digits might be SM3). zest hashes the rootfs with SHA-256.
rootfs = digests("--rootfs", "rootfs")
for extra in (["--allowlist", "allowlist-sha256.txt"], ["--base-policy", "base-policy-sha256.json"]):
    for algo in ([], ["--algo", "sha256"]):
        got = digests(*extra, *algo, "--rootfs", "rootfs")
        assert all(set(v) <= set(got[k]) for k, v in rootfs.items()), (extra, algo)
PY
for case in ramdisk-lz4 ramdisk-nodirs ramdisk-plain-unpadded; do
  if "$kp" create runtime --ramdisk-dir "$case" >/dev/null 2>&1; then
    echo "keylime-policy now reads $case: compare it with 'same' instead" >&2
    exit 1
  fi
done
echo "interop: keylime-policy create runtime and zest policy create runtime wrote the same policy in $cases cases;" \
  "zest also read the legacy-lz4, directory-less and unpadded images and the SHA-256 allowlists Keylime cannot"
