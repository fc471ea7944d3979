//! Signatures (version 2) on real reports: `tests/reports/*.json` were
//! written by `lazarus run` for the crash-test extension's crash kinds
//! (`crash KIND` in the guest shell). Each test changes a report as a
//! different path to the same bug, or a different bug, would.

use lazarus_diagnose::{Frame, Report, signature_of_report};

fn report(kind: &str) -> Report {
    let path = format!("{}/tests/reports/{kind}.json", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("read the report");
    serde_json::from_str(&text).expect("a report")
}

fn frame(module: &str, function: &str) -> Frame {
    Frame {
        index: 0,
        address: 0xffff_8000_0010_0000,
        module: Some(module.into()),
        function: Some(function.into()),
        offset: Some(0x10),
        module_offset: Some(0x1000),
        file: None,
        line: None,
        inlined: Vec::new(),
    }
}

fn functions(r: &Report) -> Vec<String> {
    r.backtrace
        .iter()
        .map(|f| f.function.clone().unwrap_or_default())
        .collect()
}

/// Keeps the frames up to and including `last`, then `below` instead of
/// the rest of the stack.
fn reroute(r: &Report, last: &str, below: Vec<Frame>) -> Report {
    let mut r = r.clone();
    let i = functions(&r)
        .iter()
        .position(|f| f == last)
        .unwrap_or_else(|| panic!("{last} not in {:?}", functions(&r)));
    r.backtrace.truncate(i + 1);
    r.backtrace.extend(below);
    r
}

#[test]
fn two_paths_to_one_bug_make_one_bucket() {
    // The null read as the shell's ioctl reaches it ...
    let ioctl = report("null-deref");
    assert_eq!(
        functions(&ioctl)[..3],
        [
            "crashtest::faults::read_at",
            "crashtest::faults::null_read",
            "crashtest::ioctl"
        ]
    );
    // ... and the same bug reached through a read system call instead.
    let read = reroute(
        &ioctl,
        "crashtest::faults::null_read",
        vec![
            frame("crashtest", "crashtest::read"),
            frame("kernel", "lazarus_kernel::ext::slot::in_ext"),
            frame("kernel", "lazarus_kernel::ext::dev::dev_read"),
            frame("kernel", "lazarus_kernel::fd::read"),
            frame("kernel", "lazarus_kernel::syscall::dispatch"),
            frame("kernel", "trap_dispatch"),
        ],
    );
    assert_eq!(signature_of_report(&ioctl), signature_of_report(&read));
    // Version 1 took the top five frames, callers included: it split them.
    assert_ne!(ioctl.signature, signature_of_report(&ioctl));
}

#[test]
fn an_assert_through_different_helpers_makes_one_bucket() {
    let panic = report("panic");
    assert_eq!(functions(&panic)[0], "crashtest::faults::panic");
    let sig = signature_of_report(&panic);
    // assert!() in the same function: the kernel's panic path on top.
    let mut assert = panic.clone();
    assert.backtrace.splice(
        0..0,
        [
            frame("kernel", "lazarus_kernel::crash::panic_with"),
            frame("kernel", "lazarus_kernel::crash::panic"),
            frame("kernel", "core::panicking::panic_fmt"),
            frame("kernel", "core::panicking::assert_failed_inner"),
            frame("kernel", "core::panicking::assert_failed"),
        ],
    );
    // .unwrap() on an Err there: another helper, same bug.
    let mut unwrap = panic.clone();
    unwrap.backtrace.splice(
        0..0,
        [
            frame("crashtest", "lazarus_extsdk::panic::panic"),
            frame("crashtest", "core::panicking::panic_fmt"),
            frame("crashtest", "core::result::unwrap_failed"),
        ],
    );
    assert_eq!(signature_of_report(&assert), sig);
    assert_eq!(signature_of_report(&unwrap), sig);
}

#[test]
fn helpers_that_fault_for_their_caller_name_the_caller() {
    // The list-integrity check fires in the extension API's list_add
    // (a prefix frame) on behalf of the extension's function.
    let list = report("list-corruption");
    assert_eq!(
        functions(&list)[..3],
        [
            "lazarus_kernel::klist::corrupted",
            "lazarus_kernel::ext::api::api_list_add",
            "crashtest::faults::list_corruption"
        ]
    );
    let sig = signature_of_report(&list);
    let mut other_caller = list.clone();
    other_caller.backtrace[2] = frame("crashtest", "crashtest::other_list_user");
    assert_ne!(signature_of_report(&other_caller), sig);
    // Its callers do not matter.
    let rerouted = reroute(
        &list,
        "crashtest::faults::list_corruption",
        vec![frame("crashtest", "crashtest::timer_fault")],
    );
    assert_eq!(signature_of_report(&rerouted), sig);
}

#[test]
fn different_bugs_stay_apart() {
    let kinds = [
        "null-deref",
        "general-protection",
        "wild-write",
        "divide-error",
        "invalid-opcode",
        "double-fault",
        "stack-overflow",
        "list-corruption",
        "panic",
        "irq-fault",
        "extension-failure",
    ];
    let sigs: Vec<String> = kinds
        .iter()
        .map(|k| signature_of_report(&report(k)))
        .collect();
    for (i, a) in sigs.iter().enumerate() {
        assert_eq!(a.len(), 16);
        for (j, b) in sigs.iter().enumerate().skip(i + 1) {
            assert_ne!(a, b, "{} and {} share a bucket", kinds[i], kinds[j]);
        }
    }
    // The same helper (read_at) reached from another fault of the same
    // kind is another bug.
    let mut other = report("null-deref");
    other.backtrace[1] = frame("crashtest", "crashtest::faults::other_null_read");
    assert_ne!(
        signature_of_report(&other),
        signature_of_report(&report("null-deref"))
    );
}

#[test]
fn extension_failures_bucket_by_extension_and_what_it_did() {
    let r = report("extension-failure");
    let sig = signature_of_report(&r);
    let mut other_path = r.clone();
    other_path.backtrace.truncate(1);
    assert_eq!(signature_of_report(&other_path), sig);
    let mut other_failure = r.clone();
    other_failure.message = "crashtest: answered a ping wrongly".into();
    assert_ne!(signature_of_report(&other_failure), sig);
}
