//! Shadow-driver recovery on the real guest: when an extension is reset,
//! its clients keep their descriptors, positions, data and configuration,
//! the calls they had in progress are issued again, and `recoveries` says
//! what the kernel handed back. The virtio disk's driver fails in every
//! way `abi::dev::virtblk::FAULTS` names, and nobody notices.

mod common;
use std::time::Duration;

use lazarus_abi::dev::virtblk::{FAULTS, SECTOR, pattern};

const T: Duration = Duration::from_secs(60);

/// The rows of `recoveries` as (kind, replayed, eio, reopened, broken).
fn recovery_rows(table: &str) -> Vec<(String, u32, u32, u32, u32)> {
    table
        .lines()
        .skip_while(|l| !l.contains("REPLAYED"))
        .skip(1)
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let n = w.len();
            if n < 10 {
                return None;
            }
            let num = |s: &str| s.parse::<u32>().ok();
            Some((
                w[2].to_string(),
                num(w[n - 4])?,
                num(w[n - 3])?,
                num(w[n - 2])?,
                num(w[n - 1])?,
            ))
        })
        .collect()
}

#[test]
fn reset_extensions_keep_their_clients_files_data_and_configuration() {
    let mut g = common::boot_with(&["--disk", "none"]);
    g.cmd("insmod rand");
    g.cmd("insmod ramdisk");
    let out = g.cmd("run devtest shadow");
    assert!(out.contains("devtest: ok"), "{}", g.transcript);
    for bad in [
        "EBADF",
        "ENODEV",
        "EINTR",
        "bad file descriptor",
        "no such device",
    ] {
        assert!(!out.contains(bad), "{bad} seen:\n{out}");
    }
    let table = g.cmd("recoveries");
    let rows = recovery_rows(&table);
    assert_eq!(rows.len(), 2, "two resets expected:\n{table}");
    // The ramdisk had one open file (and its duplicate), rand two.
    let reopened: Vec<u32> = rows.iter().map(|r| r.3).collect();
    assert_eq!(reopened, [1, 2], "{table}");
    for (kind, _, eio, _, broken) in &rows {
        assert_eq!(kind, "extension-failure", "{table}");
        assert_eq!((*eio, *broken), (0, 0), "{table}");
    }
    // Nobody was quarantined, and the extensions serve new opens too.
    assert!(!table.contains("devtest"), "{table}");
    let out = g.cmd("run devtest");
    assert!(out.contains("devtest: ok"), "{out}");
    assert!(g.poweroff().success());
}

#[test]
fn a_disabled_extension_fails_its_clients_with_eio_never_wrong_data() {
    // One crash disables an extension: nothing takes its files back.
    let mut g = common::boot_with(&["--disk", "none", "--ext-crash-limit", "1"]);
    g.cmd("insmod rand");
    g.cmd("insmod ramdisk");
    let out = g.cmd("run devtest shadow");
    assert!(
        out.contains("devtest: FAIL read: I/O error"),
        "{}",
        g.transcript
    );
    let table = g.cmd("recoveries");
    let rows = recovery_rows(&table);
    // The ramdisk's one open file (and its duplicate), rand's two.
    let broken: Vec<u32> = rows.iter().map(|r| r.4).collect();
    assert_eq!(broken, [1, 2], "{table}");
    let out = g.cmd("lsmod");
    assert!(out.contains("disabled"), "{out}");
    assert!(g.poweroff().success());
}

#[test]
fn every_virtblk_fault_is_recovered_without_its_caller_noticing() {
    common::require_kvm();
    let dir = common::temp_dir("vfaults");
    let image = dir.path().join("vm.img");
    // Five resets in a few seconds: more than the default limit, which
    // would rightly disable a driver failing that often.
    let mut g = common::boot_with(&[
        "--disk",
        common::path_str(&image),
        "--ext-crash-limit",
        "10",
    ]);
    common::driver_loaded(&mut g);
    let mut seed = 0;
    for (name, _) in FAULTS {
        let out = g.cmd_timeout(&format!("run blk fault {name}"), T);
        assert!(
            out.contains(&format!("blk: ok fault {name}: ")),
            "{name}: {}",
            g.transcript
        );
        seed = out
            .split("seed ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse::<u32>().ok())
            .unwrap_or_else(|| panic!("no seed in {out}"));
    }
    // The device refused the ring with a buffer outside guest RAM instead
    // of reading or writing there, and asked for a reset.
    g.wait_host_lines(&["virtio device needs a reset"], T);
    let table = g.cmd("recoveries");
    let rows = recovery_rows(&table);
    assert_eq!(rows.len(), FAULTS.len(), "one reset per fault:\n{table}");
    for (kind, replayed, eio, _, broken) in &rows {
        // Every fault but the interrupt handler's fails the driver while
        // blk waits in it, and that call is issued again. The interrupt
        // may come on the other vCPU after blk saw its completion.
        match kind.as_str() {
            "extension-failure" => assert!(*replayed >= 1, "{table}"),
            "irq-fault" => {}
            _ => panic!("{kind}:\n{table}"),
        }
        assert_eq!((*eio, *broken), (0, 0), "{table}");
    }
    // Nobody was quarantined (no PROCESS named in any row).
    assert!(!table.contains(" blk "), "{table}");
    // The disk still works, and the kv store never noticed.
    let out = g.cmd_timeout("run blk write 0 64 11", T);
    assert!(out.contains("blk: ok"), "{out}");
    let out = g.cmd("kv stats");
    assert!(!out.contains("error"), "{out}");
    assert!(g.poweroff().success());
    // The last write through the faults is on the image, where it belongs.
    let data = std::fs::read(&image).expect("read the disk image");
    let last = data.len() as u64 / SECTOR - 1;
    let mut expect = [0u8; SECTOR as usize];
    pattern(seed, last, &mut expect);
    assert!(
        data[(last * SECTOR) as usize..] == expect,
        "the last sector is not what blk wrote through the faults"
    );
}

/// Keys each kv writer puts in [`a_disk_driver_crash_under_kv_load_loses_nothing`].
const WRITER_KEYS: u64 = 800;

#[test]
fn a_disk_driver_crash_under_kv_load_loses_nothing() {
    use lazarus_abi::dev::{kv::load_value, virtblk::scratch};
    common::require_kvm();
    let dir = common::temp_dir("kvcrash");
    let image = dir.path().join("vm.img");
    let mut g = common::boot_with(&["--disk", common::path_str(&image)]);
    common::driver_loaded(&mut g);
    let out = g.cmd("kv fill 60");
    assert!(out.contains("60 keys written"), "{out}");
    let out = g.cmd_timeout("run kvload write r 50", T);
    assert!(out.contains("kvload: ok write r"), "{out}");
    let kvstore = g.cmd("ps");
    // Two writers and a reader keep the kv store busy, and a disk writer
    // keeps requests of its own going to the scratch area.
    let mark = g.mark();
    g.cmd(&format!("run kvload write wa {WRITER_KEYS} &"));
    g.cmd(&format!("run kvload write wb {WRITER_KEYS} &"));
    g.cmd("run kvload read r 50 6 &");
    let size = 64 << 20;
    let first = scratch(size).start / SECTOR;
    g.cmd(&format!("run blk write {first} 1500 77 &"));
    // Requests are held in flight in the driver, then it crashes in a
    // timer callback; a sync makes the kv store's own log write one of
    // them.
    g.cmd("run blk fault stall &");
    let out = g.cmd_timeout("kv sync", T);
    assert!(out.contains("kv: synced"), "{}", g.transcript);
    let lines = g.wait_lines_since(
        mark,
        &[
            "kvload: ok write wa",
            "kvload: ok write wb",
            "kvload: ok read r",
            "blk: ok fault stall",
            "blk: ok wrote 1500 sectors",
        ],
        Duration::from_secs(120),
    );
    assert_eq!(lines.len(), 5, "{}", g.transcript);
    assert!(!g.console.contains("kvload: FAIL"), "{}", g.transcript);
    let out = g.cmd("kv check");
    assert_eq!(common::kv_check(&out), (60, 0), "{out}");
    // One repair, nobody quarantined, the requests in flight issued again.
    let table = g.cmd("recoveries");
    let rows = recovery_rows(&table);
    assert_eq!(rows.len(), 1, "{table}");
    let (kind, replayed, eio, _, broken) = &rows[0];
    assert_eq!(kind, "irq-fault", "{table}");
    assert!(*replayed >= 1, "{table}");
    assert_eq!((*eio, *broken), (0, 0), "{table}");
    let ps = g.cmd("ps");
    let pid_of = |ps: &str| {
        ps.lines()
            .find(|l| l.trim_end().ends_with(" kvstore"))
            .and_then(|l| l.split_whitespace().next().map(str::to_string))
    };
    assert_eq!(pid_of(&kvstore), pid_of(&ps), "the kvstore was restarted");
    assert!(g.poweroff().success());

    // The log on the disk, end to end: every key every client wrote.
    let (map, _) = common::kv_log(&image);
    for (prefix, count) in [("wa", WRITER_KEYS), ("wb", WRITER_KEYS), ("r", 50)] {
        for i in 0..count {
            let key = format!("{prefix}{i}");
            assert_eq!(
                map.get(key.as_bytes()).map(Vec::as_slice),
                Some(&load_value(key.as_bytes())[..]),
                "{key} in the disk log"
            );
        }
    }
    for i in 0..60 {
        assert!(map.contains_key(format!("k{i}").as_bytes()), "k{i} lost");
    }
    // And the disk writer's sectors, in the scratch area.
    let data = std::fs::read(&image).expect("read the disk image");
    let mut expect = [0u8; SECTOR as usize];
    for s in first..first + 1500 {
        pattern(77, s, &mut expect);
        let at = (s * SECTOR) as usize;
        assert!(data[at..at + SECTOR as usize] == expect, "sector {s}");
    }
}
