//! Address → function, offset and source line for one ELF file.
//!
//! Function names come from the symbol table (present even without debug
//! info, and what crash signatures are built from); file, line and inlined
//! callees come from DWARF through `addr2line` when the file has it.
//! Addresses are the ELF's own link-time addresses: the kernel's virtual
//! addresses as they are, an extension's `address - load base`.

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
        let dwarf = if file.section_by_name(".debug_info").is_some() {
            Some(load_dwarf(&file)?)
        } else {
            None
        };
        Ok(Symbolizer { funcs, text, dwarf })
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
                file = loc.file.map(str::to_string);
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

fn load_dwarf(file: &object::File) -> Result<addr2line::Context<Reader>, SymbolError> {
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
    addr2line::Context::from_dwarf(dwarf).map_err(|e| SymbolError::Dwarf(e.to_string()))
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
            hit.file.as_deref().is_some_and(|f| f.ends_with("trap.rs")),
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
    fn garbage_is_an_error_not_a_panic() {
        assert!(Symbolizer::from_bytes(b"not an elf").is_err());
        assert!(Symbolizer::from_bytes(&[]).is_err());
    }
}
