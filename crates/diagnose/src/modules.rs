//! Which code an address belongs to (the kernel or an extension), and its
//! symbol there.

use std::ops::Range;

use lazarus_abi::layout::KERNEL_VIRT_BASE;
use lazarus_dump::Dump;
use lazarus_symbols::{SymbolStore, Symbolizer, build_id_of_loaded};

use crate::report::Frame;
use crate::state::Kernel;

/// Size of the kernel image window.
const KERNEL_WINDOW: u64 = 1 << 30;
/// Largest extension image we read a build id from.
const MAX_EXT_SIZE: u64 = lazarus_abi::layout::EXT_SLOT_SIZE;

pub struct Module {
    pub name: String,
    /// Extension slot; `None` for the kernel.
    pub slot: Option<u32>,
    /// Addresses that belong to the module.
    pub range: Range<u64>,
    /// Executable addresses (return addresses must be in here).
    pub text: Range<u64>,
    /// Subtracted from an address to get the ELF's link address.
    pub bias: u64,
    pub build_id: Option<String>,
    pub symbols: Option<Symbolizer>,
}

/// The kernel and every extension loaded at the crash.
pub struct Modules {
    pub list: Vec<Module>,
}

impl Modules {
    /// Builds the module map from the crash note (falling back to the
    /// kernel root's extension table) and loads symbols from `store`.
    /// Whatever is missing is explained in `notes`.
    pub fn load(
        dump: &Dump,
        kernel: Option<&Kernel>,
        store: &SymbolStore,
        notes: &mut Vec<String>,
    ) -> Modules {
        let note = dump.note();
        let mut list = Vec::new();

        let kernel_id = note.kernel_build_id.clone();
        let kernel_syms = load_symbols(store, "kernel", kernel_id.as_deref(), notes);
        let text = kernel
            .and_then(Kernel::kernel_text)
            .unwrap_or(KERNEL_VIRT_BASE..KERNEL_VIRT_BASE + KERNEL_WINDOW);
        list.push(Module {
            name: "kernel".into(),
            slot: None,
            range: KERNEL_VIRT_BASE..KERNEL_VIRT_BASE + KERNEL_WINDOW,
            text,
            bias: 0,
            build_id: kernel_id,
            symbols: kernel_syms,
        });

        let mut exts = note.extensions.clone();
        if exts.is_empty()
            && let Some(k) = kernel
        {
            exts = k.live_exts();
        }
        for e in exts {
            let (name, base, size) = (e.name, e.base, e.size);
            let Some(end) = base.checked_add(size) else {
                notes.push(format!(
                    "extension {name}: implausible range {base:#x}+{size:#x}"
                ));
                continue;
            };
            // A hypervisor that did not know the build id: read it from the
            // module's own headers in the dump.
            let build_id = e.build_id.or_else(|| {
                (size <= MAX_EXT_SIZE)
                    .then(|| {
                        build_id_of_loaded(|off, buf| {
                            off < size && dump.read_virt(base + off, buf).is_ok()
                        })
                    })
                    .flatten()
            });
            let symbols = load_symbols(store, &name, build_id.as_deref(), notes);
            list.push(Module {
                name,
                slot: Some(e.slot),
                range: base..end,
                text: e.text_start..e.text_end,
                bias: base,
                build_id,
                symbols,
            });
        }
        Modules { list }
    }

    /// The module `addr` belongs to. Extensions first: their region lies
    /// inside the kernel's top 2 GiB but outside the image window.
    pub fn module_of(&self, addr: u64) -> Option<&Module> {
        self.list.iter().rev().find(|m| m.range.contains(&addr))
    }

    /// Whether `addr` is executable code of the kernel or an extension.
    pub fn is_code(&self, addr: u64) -> bool {
        self.list.iter().any(|m| {
            m.text.contains(&addr) && m.symbols.as_ref().is_none_or(|s| s.is_text(addr - m.bias))
        })
    }

    /// Symbolizes `addr`. For a return address (`is_return`) the lookup
    /// uses `addr - 1`, inside the call instruction, so that a call at the
    /// very end of a function is not attributed to the next one.
    pub fn frame(&self, index: usize, addr: u64, is_return: bool) -> Frame {
        let mut f = Frame {
            index,
            address: addr,
            module: None,
            function: None,
            offset: None,
            module_offset: None,
            file: None,
            line: None,
            inlined: Vec::new(),
        };
        let Some(m) = self.module_of(addr) else {
            return f;
        };
        f.module = Some(m.name.clone());
        f.module_offset = Some(addr - m.range.start);
        let probe = addr.wrapping_sub(m.bias);
        let lookup = if is_return {
            probe.wrapping_sub(1)
        } else {
            probe
        };
        // A faulting RIP that is really a return address (the extension
        // API's panic reports its caller that way) may lie just past the
        // end of a function whose last instruction was a call that never
        // returns: look just before it too.
        let symbols = m.symbols.as_ref();
        let hit = symbols
            .and_then(|s| s.lookup(lookup))
            .map(|s| (s, is_return));
        let hit = hit.or_else(|| {
            (!is_return)
                .then(|| symbols.and_then(|s| s.lookup(probe.wrapping_sub(1))))
                .flatten()
                .map(|s| (s, true))
        });
        if let Some((sym, after_call)) = hit {
            f.offset = Some(sym.offset + u64::from(after_call));
            f.function = Some(sym.function);
            f.file = sym.file;
            f.line = sym.line;
            f.inlined = sym.inlined;
        }
        f
    }
}

fn load_symbols(
    store: &SymbolStore,
    module: &str,
    build_id: Option<&str>,
    notes: &mut Vec<String>,
) -> Option<Symbolizer> {
    let Some(id) = build_id else {
        notes.push(format!("{module}: no build id in the dump, so no symbols"));
        return None;
    };
    match store.symbolizer(id) {
        Ok(Some(s)) => Some(s),
        Ok(None) => {
            notes.push(format!(
                "{module}: build id {id} is not in the symbol store {}",
                store.dir().display()
            ));
            None
        }
        Err(e) => {
            notes.push(format!("{module}: cannot read symbols for {id}: {e}"));
            None
        }
    }
}
