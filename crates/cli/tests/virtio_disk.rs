//! The guest's virtio disk end to end: the `virtblk` extension drives the
//! hypervisor's virtio block device on a host image, data written through
//! `/dev/vda` is on the image after poweroff and back after a new boot,
//! the image is locked against a second VM, and `--disk none` and
//! `--disk-readonly` do what they say.

mod common;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use lazarus_abi::dev::virtblk::{SECTOR, pattern};

const T: Duration = Duration::from_secs(60);

/// init loads the driver at boot, before the kvstore starts.
fn driver_loaded(g: &mut common::Guest) {
    common::driver_loaded(g);
    let out = g.cmd("insmod virtblk");
    assert!(out.contains("already"), "{out}");
}

/// The kvstore's pid, from `ps`.
fn kvstore_pid(g: &mut common::Guest) -> u32 {
    let out = g.cmd("ps");
    out.lines()
        .find(|l| l.trim_end().ends_with(" kvstore"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no kvstore in ps: {out}"))
}

/// Checks sectors `[first, first + count)` of the image hold the pattern
/// of `seed`, and sector `first + count` holds zeros.
fn check_image(image: &Path, first: u64, count: u64, seed: u32) {
    let data = std::fs::read(image).expect("read the disk image");
    let mut expect = [0u8; SECTOR as usize];
    for s in first..first + count {
        pattern(seed, s, &mut expect);
        let at = (s * SECTOR) as usize;
        assert!(
            data[at..at + SECTOR as usize] == expect,
            "sector {s} of the image is not what the guest wrote"
        );
    }
    let after = ((first + count) * SECTOR) as usize;
    assert!(
        data[after..after + SECTOR as usize].iter().all(|&b| b == 0),
        "the guest wrote past what it asked for"
    );
}

#[test]
fn data_written_through_vda_is_on_the_image_and_back_after_a_new_boot() {
    common::require_kvm();
    let dir = common::temp_dir("disk");
    let image = dir.path().join("vm.img");
    let image_arg = common::path_str(&image);

    let mut g = common::boot_with(&["--disk", image_arg, "--disk-size", "16"]);
    assert!(
        g.host.contains("vm.img (16 MiB, new)"),
        "the disk line: {}",
        g.host
    );
    driver_loaded(&mut g);
    let out = g.cmd("run blk info");
    assert!(
        out.contains("blk: ok size 16777216 bytes (16 MiB), id vm.img"),
        "{out}"
    );
    // 300 sectors: several 64 KiB requests and a short last one, into a
    // user buffer the kernel hands to the device page by page.
    for line in [
        "run blk write 0 300 7",
        "run blk verify 0 300 7",
        "run blk write 1000 5 9",
        "run blk flush",
    ] {
        let out = g.cmd_timeout(line, T);
        assert!(out.contains("blk: ok"), "{line}: {out}");
    }
    let out = g.cmd("run blk verify 0 300 8");
    assert!(
        out.contains("blk: FAIL sector 0 differs from the pattern"),
        "a wrong seed must fail: {out}"
    );

    // A second VM on the same image is refused while this one runs.
    let second = Command::new(env!("CARGO_BIN_EXE_lazarus"))
        .args(["run", "--disk", image_arg])
        .env("LAZARUS_DATA_DIR", dir.path())
        .stdin(Stdio::null())
        .output()
        .expect("run a second lazarus");
    let err = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(9), "{err}");
    assert!(
        err.contains("vm.img is in use by another VM"),
        "the refusal names the image: {err}"
    );

    assert!(g.poweroff().success());
    check_image(&image, 0, 300, 7);
    check_image(&image, 1000, 5, 9);

    // A new boot on the same image reads back what the first wrote.
    let mut g = common::boot_with(&["--disk", image_arg]);
    assert!(g.host.contains("vm.img (16 MiB)"), "{}", g.host);
    driver_loaded(&mut g);
    let out = g.cmd_timeout("run blk verify 0 300 7", T);
    assert!(out.contains("blk: ok verified 300 sectors"), "{out}");
    assert!(g.poweroff().success());
}

#[test]
fn no_disk_and_a_read_only_disk() {
    common::require_kvm();
    let mut g = common::boot_with(&["--disk", "none"]);
    assert!(!g.host.contains("lazarus: disk"), "{}", g.host);
    g.cmd("echo sync");
    assert!(
        g.console.contains("virtblk: no virtio block device"),
        "{}",
        g.transcript
    );
    let out = g.cmd("kv stats");
    assert!(out.contains("persistent=0"), "{out}");
    assert!(g.poweroff().success());

    let dir = common::temp_dir("rodisk");
    let image = dir.path().join("ro.img");
    // A read-only disk must exist.
    let missing = Command::new(env!("CARGO_BIN_EXE_lazarus"))
        .args(["run", "--disk-readonly", "--disk", common::path_str(&image)])
        .env("LAZARUS_DATA_DIR", dir.path())
        .stdin(Stdio::null())
        .output()
        .expect("run lazarus");
    assert_eq!(missing.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("does not exist"));

    // An image with the pattern already on it, as a host tool made it.
    let mut data = vec![0u8; 4 << 20];
    let mut sector = [0u8; SECTOR as usize];
    for s in 0..8u64 {
        pattern(3, s, &mut sector);
        data[(s * SECTOR) as usize..((s + 1) * SECTOR) as usize].copy_from_slice(&sector);
    }
    std::fs::write(&image, &data).expect("write the image");
    let mut g = common::boot_with(&["--disk-readonly", "--disk", common::path_str(&image)]);
    assert!(g.host.contains("read-only"), "{}", g.host);
    driver_loaded(&mut g);
    assert!(g.transcript.contains("read-only"), "{}", g.transcript);
    let out = g.cmd("run blk verify 0 8 3");
    assert!(out.contains("blk: ok verified 8 sectors"), "{out}");
    let out = g.cmd("run blk write 0 1 5");
    assert!(
        out.contains("blk: FAIL") && out.contains("read-only"),
        "{out}"
    );
    assert!(g.poweroff().success());
    assert_eq!(
        std::fs::read(&image).expect("read the image"),
        data,
        "a read-only disk was changed"
    );
}

/// Polls `kv stats` until the kvstore has flushed every change.
fn wait_flushed(g: &mut common::Guest) {
    for _ in 0..100 {
        let out = g.cmd("kv stats");
        if out.contains("unflushed=0") {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("the kvstore never flushed its log: {}", g.transcript);
}

#[test]
fn kv_data_survives_kvstore_restarts_and_new_boots_through_its_disk_log() {
    common::require_kvm();
    let dir = common::temp_dir("kvlog");
    let image = dir.path().join("kv.img");
    let image_arg = common::path_str(&image);
    let mut g = common::boot_with(&["--disk", image_arg]);
    let out = g.cmd_timeout("kv fill 200", T);
    assert!(out.contains("200 keys written"), "{out}");
    let out = g.cmd("kv del k7");
    assert!(!out.contains("FAIL"), "{out}");
    wait_flushed(&mut g);
    // Killed, the kvstore comes back with every flushed change.
    let pid = kvstore_pid(&mut g);
    g.cmd(&format!("kill {pid}"));
    g.wait_lines(
        &["kvstore: restored 199 keys from the disk log (201 changes"],
        T,
    );
    let out = g.cmd("kv check");
    assert_eq!(common::kv_check(&out), (199, 0), "{out}");
    let out = g.cmd("kv get k7");
    assert!(!out.contains("k7 ="), "a deleted key came back: {out}");

    // Killed right after more writes: whatever is lost is explained.
    g.cmd_timeout("kv fill 100 late", T);
    let pid = kvstore_pid(&mut g);
    g.cmd(&format!("kill {pid}"));
    let out = g.cmd("kv check");
    let (intact, lost) = common::kv_check(&out);
    assert_eq!(intact + lost, 299, "{out}");
    assert!(intact >= 199, "flushed keys were lost: {out}");
    if lost > 0 {
        assert!(
            out.contains("were written after the log's last flush"),
            "{out}"
        );
    }
    wait_flushed(&mut g);
    let out = g.cmd("kv count");
    let count: u64 = out
        .split_whitespace()
        .find_map(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("kv count: {out}"));
    assert!(g.poweroff().success());

    // The host reads the same store out of the image.
    let (map, changes) = common::kv_log(&image);
    assert_eq!(map.len() as u64, count, "keys in the log");
    assert!(map.contains_key(b"k0".as_slice()) && !map.contains_key(b"k7".as_slice()));
    assert!(changes >= count, "{changes} changes for {count} keys");

    // A new boot on the same disk has the same keys.
    let mut g = common::boot_with(&["--disk", image_arg]);
    // The kvstore answers only once its replay is done, and says so first.
    let out = g.cmd("kv count");
    assert!(out.contains(&format!("kv: {count} keys")), "{out}");
    let restored = format!("kvstore: restored {count} keys");
    assert!(
        g.console.contains(&restored),
        "{restored}: {}",
        g.transcript
    );
    assert!(g.poweroff().success());
}
