//! Shadow-driver recovery on the real guest: when an extension is reset,
//! its clients keep their descriptors, positions, data and configuration,
//! and `recoveries` says what the kernel handed back.

mod common;

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
