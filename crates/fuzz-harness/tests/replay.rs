//! Replays every committed fuzz input under plain `cargo test`: the corpus
//! (`fuzz/corpus/TARGET/`) and every input that ever found a bug
//! (`fuzz/regressions/TARGET/`), so that a fixed bug stays fixed without
//! the fuzzer.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use lazarus_fuzz_harness::{TARGETS, Target};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

/// The files directly in `dir`, sorted (none if it does not exist).
fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Runs `target` on every file of `fuzz/KIND/TARGET`; returns how many
/// ran and the ones that panicked, with the panic message.
fn replay(target: &Target, kind: &str) -> (usize, Vec<String>) {
    let files = inputs(&fuzz_dir().join(kind).join(target.name));
    let mut failed = Vec::new();
    for file in &files {
        let data = std::fs::read(file).expect("a readable input");
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| (target.run)(&data))) {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            failed.push(format!("{}: {msg}", file.display()));
        }
    }
    (files.len(), failed)
}

fn check(kind: &str, need_inputs: bool) {
    let mut failed = Vec::new();
    for target in TARGETS {
        let (count, mut bad) = replay(target, kind);
        println!("{kind}/{}: {count} inputs", target.name);
        assert!(
            !need_inputs || count > 0,
            "fuzz/{kind}/{} has no inputs",
            target.name
        );
        failed.append(&mut bad);
    }
    assert!(
        failed.is_empty(),
        "inputs that fail:\n{}",
        failed.join("\n")
    );
}

#[test]
fn corpus_inputs_pass() {
    check("corpus", true);
}

#[test]
fn regression_inputs_pass() {
    check("regressions", false);
}

#[test]
fn every_target_has_a_fuzz_binary() {
    for target in TARGETS {
        let path = fuzz_dir()
            .join("fuzz_targets")
            .join(format!("{}.rs", target.name));
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let call = format!("lazarus_fuzz_harness::{}::run", target.name);
        assert!(
            text.contains(&call),
            "{} does not call {call}",
            path.display()
        );
    }
}
