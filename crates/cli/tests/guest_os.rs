//! The real guest under KVM: processes, pipes, the kv store, extensions
//! and preemption, all driven through the shell on the serial console.

mod common;
use common::kv_check;
use std::time::Duration;

#[test]
fn piped_console_runs_commands_and_powers_off() {
    common::require_kvm();
    let data = common::temp_dir("piped");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lazarus"))
        .arg("run")
        .env("LAZARUS_DATA_DIR", data.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin
                .take()
                .expect("stdin")
                .write_all(b"ps\npoweroff\n")?;
            c.wait_with_output()
        })
        .expect("run lazarus");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "exit {:?}; console:\n{text}",
        out.status
    );
    for name in ["init", "shell", "kvstore"] {
        assert!(text.contains(name), "ps lacks {name}:\n{text}");
    }
}

#[test]
fn processes_spawn_exit_and_show_in_ps() {
    let mut g = common::boot();
    let out = g.cmd("run echo hello from a process");
    assert!(out.contains("hello from a process"), "{out}");
    let ps = g.cmd("ps");
    assert!(
        ps.contains("kvstore") && ps.contains("shell") && ps.contains("init"),
        "{ps}"
    );
    // A process that exits is reaped: no zombie echo left behind.
    assert!(!ps.contains("echo"), "echo not reaped:\n{ps}");
    assert!(g.poweroff().success());
}

#[test]
fn pipes_connect_processes() {
    let mut g = common::boot();
    let out = g.cmd("run echo lazarus rises | upper");
    assert!(out.contains("LAZARUS RISES"), "{out}");
    let out = g.cmd("run pipetest");
    assert!(out.contains("pipetest: ok"), "{out}");
    // Bad pointers in system calls: EFAULT, no half-sent message, and the
    // kernel carries on (no crash, no resurrection).
    let out = g.cmd("run sysprobe");
    assert!(out.contains("sysprobe: ok"), "{out}");
    assert!(!out.contains("resurrect"), "{out}");
    let out = g.cmd("recoveries");
    assert!(
        out.contains("no recoveries"),
        "a bad pointer cost a repair: {out}"
    );
    assert!(g.poweroff().success());
}

#[test]
fn kv_put_get_check() {
    let mut g = common::boot();
    g.cmd("kv put alpha one");
    g.cmd("kv put beta two");
    let out = g.cmd("kv get alpha");
    assert!(out.contains("one"), "{out}");
    g.cmd("kv fill 200");
    let (intact, lost) = kv_check(&g.cmd("kv check"));
    assert_eq!((intact, lost), (202, 0));
    g.cmd("kv del beta");
    let (intact, lost) = kv_check(&g.cmd("kv check"));
    assert_eq!((intact, lost), (201, 0));
    assert!(g.poweroff().success());
}

#[test]
fn extensions_load_serve_devices_and_unload() {
    let mut g = common::boot();
    let out = g.cmd("insmod rand");
    assert!(!out.contains("rand:"), "insmod failed: {out}");
    g.cmd("insmod ramdisk");
    let ls = g.cmd("lsmod");
    assert!(ls.contains("rand") && ls.contains("ramdisk"), "{ls}");
    let out = g.cmd("run devtest");
    assert!(out.contains("devtest: ok"), "{out}");
    let out = g.cmd("insmod rand");
    assert!(
        out.to_lowercase().contains("exists"),
        "double insmod must fail: {out}"
    );
    g.cmd("rmmod rand");
    let ls = g.cmd("lsmod");
    assert!(!ls.contains("rand ") && ls.contains("ramdisk"), "{ls}");
    // The device is gone with its module.
    let out = g.cmd("run devtest");
    assert!(!out.contains("devtest: ok"), "{out}");
    // Reloading works (fresh code and data).
    g.cmd("insmod rand");
    assert!(g.cmd("lsmod").contains("rand"));
    assert!(g.poweroff().success());
}

#[test]
fn timer_preempts_cpu_bound_processes() {
    let mut g = common::boot();
    g.cmd("run worker alpha 3 &");
    g.cmd("run worker beta 3 &");
    let done = g.wait_lines(
        &["worker alpha: done", "worker beta: done"],
        Duration::from_secs(60),
    );
    let rounds = |line: &str| -> u64 {
        line.split_whitespace()
            .find_map(|w| w.parse().ok())
            .unwrap_or(0)
    };
    let (ra, rb) = (rounds(&done[0]), rounds(&done[1]));
    assert!(
        ra > 0 && rb > 0,
        "both must progress: {done:?}\n{}",
        g.transcript
    );
    // They ran at the same time: each reported progress before either
    // finished. Neither yields, so only timer preemption allows that.
    let t = &g.console;
    let first_done = t
        .find("worker alpha: done")
        .min(t.find("worker beta: done"))
        .expect("done");
    let prog_a = t.find("worker alpha: round").expect("alpha progress");
    let prog_b = t.find("worker beta: round").expect("beta progress");
    assert!(
        prog_a < first_done && prog_b < first_done,
        "not interleaved:\n{t}"
    );
    assert!(g.poweroff().success());
}

/// A shell command with a bad argument prints its usage once, whatever is
/// wrong with the argument.
#[test]
fn usage_is_printed_once() {
    let mut g = common::boot();
    for line in ["kill", "kill 1 2", "kill x"] {
        let out = g.cmd(line);
        assert_eq!(out.matches("kill PID").count(), 1, "{line:?}: {out}");
    }
    assert!(g.poweroff().success());
}

/// The shell quotes as a shell does: a quoted key with a blank is one
/// word, and an unterminated quote is refused, not guessed at.
#[test]
fn shell_quotes_words() {
    let mut g = common::boot();
    let out = g.cmd("kv put \"x y\" 2");
    assert!(!out.contains("kv:"), "{out}");
    let out = g.cmd("kv get 'x y'");
    assert!(out.lines().any(|l| l.trim() == "2"), "{out}");
    let out = g.cmd("echo \"a | b\"");
    assert!(out.contains("a | b"), "{out}");
    let out = g.cmd("kv put \"x y 2");
    assert!(out.contains("shell: unterminated quote"), "{out}");
    assert!(g.poweroff().success());
}
