//! Address → function, offset and source line for one ELF file.
//!
//! Function names come from the symbol table (present even without debug
//! info, and what crash signatures are built from); file, line and inlined
//! callees come from DWARF through `addr2line` when the file has it.
//! Addresses are the ELF's own link-time addresses: the kernel's virtual
//! addresses as they are, an extension's `address - load base`.
//!
//! Source paths are given as a reader of the project knows them, not as
//! the build machine had them ([`source_path`]): relative to the project
//! (the compilation directory DWARF records), `library/core/...` for the
//! Rust standard library, `CRATE-VERSION/...` for a crates.io dependency.

use std::borrow::Cow;
use std::path::Path;
use std::sync::Arc;

use gimli::{EndianArcSlice, RunTimeEndian};
use object::{Object, ObjectSection, ObjectSymbol, SectionKind, SymbolKind};

use crate::error::SymbolError;

type Reader = EndianArcSlice<RunTimeEndian>;

/// Where an address is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Symbol {
    /// Demangled, without the hash suffix (`crate::module::function`).
    pub function: String,
    /// Offset of the address from the function's start.
    pub offset: u64,
    /// Source file, from DWARF (`None` without debug info).
    pub file: Option<String>,
    /// Source line in `file`.
    pub line: Option<u32>,
    /// Functions inlined at the address, innermost first (from DWARF).
    pub inlined: Vec<String>,
}

struct Func {
    start: u64,
    size: u64,
    name: String,
}

/// Symbolizes addresses of one ELF file.
pub struct Symbolizer {
    funcs: Vec<Func>,
    /// Executable sections: DWARF of functions the linker discarded
    /// claims addresses near 0, so nothing outside these is looked up.
    text: Vec<std::ops::Range<u64>>,
    dwarf: Option<addr2line::Context<Reader>>,
    /// The compilation directories of the DWARF units, longest first.
    comp_dirs: Vec<String>,
}

impl std::fmt::Debug for Symbolizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Symbolizer")
            .field("functions", &self.funcs.len())
            .field("dwarf", &self.dwarf.is_some())
            .finish()
    }
}

/// `rustc-demangle`'s alternate form drops the `::h0123...` hash, which
/// would otherwise differ between builds of the same code.
pub(crate) fn demangle(name: &str) -> String {
    format!("{:#}", rustc_demangle::demangle(name))
}

/// A function and where it is (link-time address).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FunctionSymbol {
    /// Link-time address of its first byte.
    pub start: u64,
    /// Size from the symbol table, or up to the next function when the
    /// symbol has none (assembly labels).
    pub size: u64,
    /// Demangled, without the hash suffix.
    pub name: String,
}

/// The functions of an ELF file, sorted by address, without loading its
/// DWARF: what the repair image carries to name crashing code.
pub fn function_symbols(elf: &[u8]) -> Result<Vec<FunctionSymbol>, SymbolError> {
    let file = object::File::parse(elf).map_err(|e| SymbolError::NotElf(e.to_string()))?;
    let funcs = function_table(&file);
    Ok(funcs
        .iter()
        .enumerate()
        .map(|(i, f)| FunctionSymbol {
            start: f.start,
            size: if f.size > 0 {
                f.size
            } else {
                funcs.get(i + 1).map_or(0, |n| n.start - f.start)
            },
            name: f.name.clone(),
        })
        .collect())
}

/// Functions, plus untyped labels in code (assembly entry stubs), sorted
/// by address with one entry per address.
fn function_table(file: &object::File<'_>) -> Vec<Func> {
    let text_sections: Vec<object::SectionIndex> = file
        .sections()
        .filter(|s| s.kind() == SectionKind::Text)
        .map(|s| s.index())
        .collect();
    let mut funcs: Vec<Func> = file
        .symbols()
        .filter(|s| match s.kind() {
            SymbolKind::Text => s.is_definition(),
            SymbolKind::Unknown => s
                .section_index()
                .is_some_and(|i| text_sections.contains(&i)),
            _ => false,
        })
        .filter_map(|s| {
            Some(Func {
                start: s.address(),
                size: s.size(),
                name: demangle(s.name().ok()?),
            })
        })
        .filter(|f| !f.name.is_empty() && !f.name.starts_with(".L"))
        .collect();
    // Larger first at equal addresses, so an alias with a size wins.
    funcs.sort_by(|a, b| a.start.cmp(&b.start).then(b.size.cmp(&a.size)));
    funcs.dedup_by_key(|f| f.start);
    funcs
}

impl Symbolizer {
    /// Reads the ELF file at `path`; see [`Symbolizer::from_bytes`].
    pub fn open(path: &Path) -> Result<Self, SymbolError> {
        let data = std::fs::read(path).map_err(SymbolError::io(path))?;
        Self::from_bytes(&data)
    }

    /// Indexes the functions of an ELF file and loads its DWARF, if any
    /// (bad DWARF is an error; no DWARF only loses file and line).
    pub fn from_bytes(data: &[u8]) -> Result<Self, SymbolError> {
        let file = object::File::parse(data).map_err(|e| SymbolError::NotElf(e.to_string()))?;
        let funcs = function_table(&file);
        let text = file
            .sections()
            .filter(|s| s.kind() == SectionKind::Text && s.size() > 0)
            .filter_map(|s| Some(s.address()..s.address().checked_add(s.size())?))
            .collect();
        let (dwarf, comp_dirs) = if file.section_by_name(".debug_info").is_some() {
            let (ctx, dirs) = load_dwarf(&file)?;
            (Some(ctx), dirs)
        } else {
            (None, Vec::new())
        };
        Ok(Symbolizer {
            funcs,
            text,
            dwarf,
            comp_dirs,
        })
    }

    /// Whether file:line information is available.
    pub fn has_debug_info(&self) -> bool {
        self.dwarf.is_some()
    }

    /// Whether `addr` is in an executable section.
    pub fn is_text(&self, addr: u64) -> bool {
        self.text.iter().any(|r| r.contains(&addr))
    }

    /// Function containing `addr`. A symbol without a size claims the
    /// addresses up to the next symbol.
    fn func(&self, addr: u64) -> Option<&Func> {
        let i = self.funcs.partition_point(|f| f.start <= addr);
        let f = self.funcs.get(i.checked_sub(1)?)?;
        let end = if f.size > 0 {
            f.start.checked_add(f.size)?
        } else {
            self.funcs.get(i).map_or(u64::MAX, |n| n.start)
        };
        (addr < end).then_some(f)
    }

    /// Where `addr` is; `None` when no function contains it.
    pub fn lookup(&self, addr: u64) -> Option<Symbol> {
        if !self.is_text(addr) {
            return None;
        }
        let f = self.func(addr);
        let (mut file, mut line, mut inlined, mut dwarf_fn) = (None, None, Vec::new(), None);
        if let Some(ctx) = &self.dwarf {
            if let Ok(Some(loc)) = ctx.find_location(addr) {
                file = loc.file.map(|f| source_path(f, &self.comp_dirs));
                line = loc.line;
            }
            if let Ok(mut frames) = ctx.find_frames(addr).skip_all_loads() {
                let mut names = Vec::new();
                while let Ok(Some(frame)) = frames.next() {
                    if let Some(name) = frame.function.as_ref().and_then(|n| n.raw_name().ok()) {
                        names.push(demangle(&name));
                    }
                }
                // The last frame is the real (outermost) function.
                dwarf_fn = names.pop();
                inlined = names;
            }
        }
        match (f, dwarf_fn) {
            (Some(f), _) => Some(Symbol {
                function: f.name.clone(),
                offset: addr - f.start,
                file,
                line,
                inlined,
            }),
            // No symbol table entry, but DWARF knows the function.
            (None, Some(name)) => Some(Symbol {
                function: name,
                offset: 0,
                file,
                line,
                inlined,
            }),
            (None, None) => None,
        }
    }
}

/// Where the standard library's sources are in rustc's own paths:
/// `/rustc/<commit>/library/...`.
const RUSTC_PREFIX: &str = "/rustc/";
/// Where cargo unpacks crates.io and git dependencies:
/// `~/.cargo/registry/src/<index>/<crate>-<version>/...` and
/// `~/.cargo/git/checkouts/<repo>/<rev>/...`.
const CARGO_DEPS: [&str; 2] = ["/registry/src/", "/git/checkouts/"];

/// A source path as the project's reader knows it: `/rustc/<commit>/`
/// dropped (`library/core/src/...`), a cargo dependency from its crate
/// directory (`spin-0.9.8/src/...`), anything under a compilation
/// directory relative to it (the workspace: `guest/kernel/src/...`).
/// Other paths are kept as they are.
pub fn source_path(path: &str, comp_dirs: &[String]) -> String {
    if let Some(rest) = path.strip_prefix(RUSTC_PREFIX)
        && let Some((_commit, rel)) = rest.split_once('/')
    {
        return rel.to_string();
    }
    for deps in CARGO_DEPS {
        if let Some(i) = path.find(deps) {
            let rest = &path[i + deps.len()..];
            // Past the index (or repository) directory.
            if let Some((_index, rel)) = rest.split_once('/')
                && !rel.is_empty()
            {
                return rel.to_string();
            }
        }
    }
    for dir in comp_dirs {
        if let Some(rel) = path
            .strip_prefix(dir.as_str())
            .and_then(|r| r.strip_prefix('/'))
            && !rel.is_empty()
        {
            return rel.to_string();
        }
    }
    path.to_string()
}

/// The compilation directories of `dwarf`'s units, longest first (the
/// rustc one excluded: its paths are handled on their own).
fn comp_dirs(dwarf: &gimli::Dwarf<Reader>) -> Vec<String> {
    let mut dirs = Vec::new();
    let mut units = dwarf.units();
    while let Ok(Some(header)) = units.next() {
        let Ok(unit) = dwarf.unit(header) else {
            continue;
        };
        if let Some(dir) = unit.comp_dir.as_ref()
            && let Ok(dir) = gimli::Reader::to_string_lossy(dir)
        {
            let dir = dir.trim_end_matches('/');
            if !dir.is_empty() && !dir.starts_with(RUSTC_PREFIX) && !dirs.iter().any(|d| d == dir) {
                dirs.push(dir.to_string());
            }
        }
    }
    dirs.sort_by_key(|d| std::cmp::Reverse(d.len()));
    dirs
}

fn load_dwarf(
    file: &object::File,
) -> Result<(addr2line::Context<Reader>, Vec<String>), SymbolError> {
    let endian = if file.is_little_endian() {
        RunTimeEndian::Little
    } else {
        RunTimeEndian::Big
    };
    let load = |id: gimli::SectionId| -> Result<Reader, gimli::Error> {
        let data = file
            .section_by_name(id.name())
            .and_then(|s| s.uncompressed_data().ok())
            .unwrap_or(Cow::Borrowed(&[]));
        Ok(EndianArcSlice::new(Arc::from(&*data), endian))
    };
    let dwarf = gimli::Dwarf::load(load).map_err(|e| SymbolError::Dwarf(e.to_string()))?;
    let dirs = comp_dirs(&dwarf);
    let ctx =
        addr2line::Context::from_dwarf(dwarf).map_err(|e| SymbolError::Dwarf(e.to_string()))?;
    Ok((ctx, dirs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demangles_without_hash() {
        assert_eq!(
            demangle("_ZN9crashtest6faults9null_read17h0123456789abcdefE"),
            "crashtest::faults::null_read"
        );
        assert_eq!(demangle("trap_dispatch"), "trap_dispatch");
    }

    #[test]
    fn symbolizes_the_kernel_with_lines() {
        let s = Symbolizer::from_bytes(lazarus_image::KERNEL_ELF).unwrap();
        assert!(s.has_debug_info());
        let file = object::File::parse(lazarus_image::KERNEL_ELF).unwrap();
        let sym = file
            .symbols()
            .find(|s| s.name() == Ok("trap_dispatch"))
            .expect("trap_dispatch in the kernel");
        let hit = s.lookup(sym.address() + 4).expect("symbolized");
        assert_eq!(hit.function, "trap_dispatch");
        assert_eq!(hit.offset, 4);
        assert!(
            hit.file.as_deref() == Some("guest/kernel/src/trap.rs"),
            "{hit:?}"
        );
        assert!(hit.line.is_some());
        assert!(s.lookup(0x10).is_none());
        // Assembly labels (untyped symbols in code) count as functions.
        let stub = file
            .symbols()
            .find(|s| s.name() == Ok("trap_common"))
            .expect("trap_common in the kernel");
        assert_eq!(
            s.lookup(stub.address() + 2).unwrap().function,
            "trap_common"
        );
    }

    #[test]
    fn symbolizes_an_extension_at_link_addresses() {
        let modules = crate::initramfs_modules(lazarus_image::INITRAMFS).unwrap();
        let m = modules.iter().find(|m| m.name == "crashtest").unwrap();
        let file = object::File::parse(&*m.elf).unwrap();
        let sym = file
            .symbols()
            .find(|s| {
                s.name()
                    .is_ok_and(|n| demangle(n) == "crashtest::faults::null_read")
            })
            .expect("null_read in crashtest");
        let s = Symbolizer::from_bytes(&m.elf).unwrap();
        let hit = s.lookup(sym.address()).unwrap();
        assert_eq!(hit.function, "crashtest::faults::null_read");
        assert!(hit.file.is_some(), "{hit:?}");
    }

    #[test]
    fn source_paths_are_the_projects_not_the_build_machines() {
        let dirs = vec!["/home/ci/build/lazarus".to_string(), "/x".to_string()];
        for (path, want) in [
            (
                "/home/ci/build/lazarus/guest/ext/crashtest/src/faults.rs",
                "guest/ext/crashtest/src/faults.rs",
            ),
            (
                "/rustc/59807616e1fa2540724bfbac14d7976d7e4a3860/library/core/src/ptr/mod.rs",
                "library/core/src/ptr/mod.rs",
            ),
            (
                "/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/spin-0.9.8/src/mutex.rs",
                "spin-0.9.8/src/mutex.rs",
            ),
            (
                "/root/.cargo/git/checkouts/repo-0123/abcdef/src/lib.rs",
                "abcdef/src/lib.rs",
            ),
            ("/x/y.rs", "y.rs"),
            ("/elsewhere/z.rs", "/elsewhere/z.rs"),
            ("relative/already.rs", "relative/already.rs"),
            ("/rustc/", "/rustc/"),
            ("/home/ci/build/lazarus", "/home/ci/build/lazarus"),
            (
                "/home/ci/build/lazarusX/a.rs",
                "/home/ci/build/lazarusX/a.rs",
            ),
        ] {
            assert_eq!(source_path(path, &dirs), want, "{path}");
        }
    }

    #[test]
    fn the_real_kernel_and_extensions_name_project_paths() {
        let s = Symbolizer::from_bytes(lazarus_image::KERNEL_ELF).unwrap();
        assert!(
            s.comp_dirs.iter().all(|d| !d.starts_with("/rustc/")),
            "{:?}",
            s.comp_dirs
        );
        let modules = crate::initramfs_modules(lazarus_image::INITRAMFS).unwrap();
        let m = modules.iter().find(|m| m.name == "crashtest").unwrap();
        let file = object::File::parse(&*m.elf).unwrap();
        let sym = file
            .symbols()
            .find(|s| {
                s.name()
                    .is_ok_and(|n| demangle(n) == "crashtest::faults::null_read")
            })
            .unwrap();
        let hit = Symbolizer::from_bytes(&m.elf)
            .unwrap()
            .lookup(sym.address())
            .unwrap();
        assert_eq!(
            hit.file.as_deref(),
            Some("guest/ext/crashtest/src/faults.rs")
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(Symbolizer::from_bytes(b"not an elf").is_err());
        assert!(Symbolizer::from_bytes(&[]).is_err());
    }
}
