//! The gdb command line that opens a dump with the kernel's and every
//! extension's symbols (`lazarus diagnose --gdb`, the dashboard).

use std::path::Path;

use lazarus_dump::Dump;
use lazarus_symbols::{SymbolStore, build_id_of_loaded};

/// The command, and what the symbol store lacked (the command still opens
/// the dump, with fewer names).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GdbCommand {
    /// `gdb -nx [-ex 'add-symbol-file EXT -o BASE']... KERNEL DUMP`, quoted
    /// for a POSIX shell.
    pub command: String,
    /// Missing symbols, one sentence each.
    pub warnings: Vec<String>,
}

/// Quotes `s` for a POSIX shell when it needs it.
pub fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"/._-+=:,@".contains(&c));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

fn path_arg(p: &Path) -> String {
    shell_quote(&p.to_string_lossy())
}

/// The gdb command line for `dump`, with the symbols `store` holds.
pub fn gdb_command(dump: &Dump, store: &SymbolStore) -> GdbCommand {
    let note = dump.note();
    let mut warnings = Vec::new();
    let mut cmd = vec!["gdb".to_string(), "-nx".to_string()];
    cmd.push("-ex".into());
    cmd.push(shell_quote("set confirm off"));
    for e in &note.extensions {
        let id = e.build_id.clone().or_else(|| {
            build_id_of_loaded(|off, buf| off < e.size && dump.read_virt(e.base + off, buf).is_ok())
        });
        match id.as_deref().and_then(|id| store.find(id)) {
            Some(path) => {
                cmd.push("-ex".into());
                cmd.push(shell_quote(&format!(
                    "add-symbol-file {} -o {:#x}",
                    path_arg(&path),
                    e.base
                )));
            }
            None => warnings.push(format!(
                "no symbols for extension {} (build id {})",
                e.name,
                id.as_deref().unwrap_or("unknown")
            )),
        }
    }
    match note
        .kernel_build_id
        .as_deref()
        .and_then(|id| store.find(id))
    {
        Some(kernel) => {
            cmd.push(path_arg(&kernel));
            cmd.push(path_arg(dump.path()));
        }
        None => {
            warnings.push(format!(
                "no kernel symbols (build id {}) in {}",
                note.kernel_build_id.as_deref().unwrap_or("unknown"),
                store.dir().display()
            ));
            cmd.push("-c".into());
            cmd.push(path_arg(dump.path()));
        }
    }
    GdbCommand {
        command: cmd.join(" "),
        warnings,
    }
}

#[cfg(test)]
mod tests {
    use super::shell_quote;

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("/a/b.elf"), "/a/b.elf");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
