//! Keeping the repair image's pristine copies in step with the kernel's
//! code: the kernel's read-only segments from its ELF at boot, and each
//! extension as it is loaded (relocated, its init not yet run: exactly
//! the state a reset restores).

use lazarus_abi::layout::{EXT_REGION, KERNEL_VIRT_BASE};
use lazarus_abi::root::{EXT_FREE, KernelRoot, MAX_EXTS};
use lazarus_repair_image::{PristineSource, SymbolSource};
use lazarus_vmm::ExtEvent;
use lazarus_vmm::memory::GuestRam;
use object::{Object, ObjectSegment, SegmentFlags};
use tracing::{info, warn};
use vm_memory::{Bytes, GuestAddress};

use crate::Resurrector;
use crate::fallback::SetupError;
use lazarus_guestmem::{read_root, translate};

/// The kernel's read-only segments as one pristine source, with its
/// symbols, and the range of its code.
pub(crate) fn kernel_source(kernel_elf: &[u8]) -> Result<(PristineSource, (u64, u64)), SetupError> {
    let bad = |e: &dyn std::fmt::Display| SetupError::KernelElf(e.to_string());
    let elf = object::File::parse(kernel_elf).map_err(|e| bad(&e))?;
    let mut ro: Vec<(u64, &[u8])> = Vec::new();
    let mut text = (u64::MAX, 0);
    for seg in elf.segments() {
        let SegmentFlags::Elf { p_flags } = seg.flags() else {
            continue;
        };
        if p_flags & object::elf::PF_W != 0 || seg.size() == 0 {
            continue;
        }
        let data = seg.data().map_err(|e| bad(&e))?;
        ro.push((seg.address(), data));
        if p_flags & object::elf::PF_X != 0 {
            text = (
                text.0.min(seg.address()),
                text.1.max(seg.address() + seg.size()),
            );
        }
    }
    let lo = ro
        .iter()
        .map(|s| s.0)
        .min()
        .ok_or_else(|| bad(&"no read-only segment"))?;
    let hi = ro
        .iter()
        .map(|s| s.0 + s.1.len() as u64)
        .max()
        .unwrap_or(lo);
    let mut bytes = vec![0u8; (hi - lo) as usize];
    for (va, data) in ro {
        bytes[(va - lo) as usize..][..data.len()].copy_from_slice(data);
    }
    let mut kernel = PristineSource::kernel(lo, bytes);
    kernel.symbols = elf_symbols(kernel_elf).map_err(|e| bad(&e))?;
    Ok((kernel, text))
}

/// Functions of every extension in the initramfs, by build id, at
/// link-time (load-base-relative) addresses. An initramfs without
/// (readable) extensions just means extension crashes are not named.
pub(crate) fn extension_symbols(initramfs: &[u8]) -> Vec<(String, Vec<SymbolSource>)> {
    match lazarus_symbols::initramfs_modules(initramfs) {
        Ok(mods) => mods
            .into_iter()
            .filter_map(|m| Some((m.build_id?, elf_symbols(&m.elf).ok()?)))
            .collect(),
        Err(e) => {
            warn!("no extension symbols for the repair image: {e}");
            Vec::new()
        }
    }
}

impl Resurrector {
    /// Kernel code changed: refresh the pristine copies.
    pub(crate) fn on_code_changed(&mut self, mem: &GuestRam, root_gpa: Option<u64>, ev: ExtEvent) {
        let slot = ev.slot as usize;
        if slot >= MAX_EXTS {
            return;
        }
        self.exts[slot] = None;
        if ev.loaded {
            match root_gpa
                .ok_or("no state root".to_string())
                .and_then(|g| capture_ext(mem, g, slot))
            {
                Ok(mut p) => {
                    let id = lazarus_symbols::build_id_of_loaded(|off, buf| {
                        let Some(src) = usize::try_from(off)
                            .ok()
                            .and_then(|o| p.bytes.get(o..o.checked_add(buf.len())?))
                        else {
                            return false;
                        };
                        buf.copy_from_slice(src);
                        true
                    });
                    if let Some((_, syms)) = self
                        .ext_symbols
                        .iter()
                        .find(|(b, _)| Some(b) == id.as_ref())
                    {
                        p.symbols = syms
                            .iter()
                            .map(|f| SymbolSource {
                                addr: f.addr.wrapping_add(p.va),
                                ..f.clone()
                            })
                            .collect();
                    }
                    self.exts[slot] = Some(p);
                }
                Err(e) => warn!(
                    slot,
                    "cannot snapshot the extension for the repair image: {e}"
                ),
            }
        }
        let mut all = vec![self.kernel.clone()];
        all.extend(self.exts.iter().flatten().cloned());
        match self.image.set_pristine(&all) {
            Ok(()) => info!(
                generation = self.image.generation(),
                bytes = self.image.size().total,
                "repair image refreshed"
            ),
            Err(e) => warn!("repair image refresh failed: {e}"),
        }
    }

    /// Compares kernel and extension code with the pristine copies at
    /// native speed on the host, so that the repair program (whose every
    /// first touch of a page costs a shadow-page fault) can skip that pass
    /// when nothing differs.
    pub(crate) fn code_intact(&self, mem: &GuestRam, root: &KernelRoot) -> bool {
        let kernel_ok = {
            let p = &self.kernel;
            let pa = p.va.wrapping_sub(KERNEL_VIRT_BASE);
            let mut live = vec![0u8; p.code_len as usize];
            mem.read_slice(&mut live, GuestAddress(pa)).is_ok()
                && live == p.bytes[..p.code_len as usize]
        };
        kernel_ok
            && self.exts.iter().flatten().all(|p| {
                let e = &root.exts[p.ext_slot as usize];
                if e.state == EXT_FREE || e.base != p.va {
                    return true;
                }
                let mut off = 0u64;
                while off < p.code_len {
                    let Ok(pa) = translate(mem, root.master_pml4, p.va + off).map(|t| t.pa) else {
                        return false;
                    };
                    let n = (4096 - (off % 4096)).min(p.code_len - off) as usize;
                    let mut live = vec![0u8; n];
                    if mem.read_slice(&mut live, GuestAddress(pa)).is_err()
                        || live != p.bytes[off as usize..off as usize + n]
                    {
                        return false;
                    }
                    off += n as u64;
                }
                true
            })
    }
}

/// Copies a freshly loaded (relocated, not yet initialised) extension
/// image out of guest memory.
pub(crate) fn capture_ext(
    mem: &GuestRam,
    root_gpa: u64,
    slot: usize,
) -> Result<PristineSource, String> {
    let root = read_root(mem, root_gpa).map_err(|e| e.to_string())?;
    let e = root.exts[slot];
    if e.state == EXT_FREE
        || !e.size.is_multiple_of(4096)
        || e.base < EXT_REGION
        || e.size == 0
        || e.size > lazarus_abi::layout::EXT_SLOT_SIZE
    {
        return Err(format!("slot {slot} does not hold a loaded extension"));
    }
    if e.text_end <= e.base || e.text_end > e.base + e.size {
        return Err(format!("slot {slot}: bad text range"));
    }
    let mut bytes = vec![0u8; e.size as usize];
    let mut off = 0u64;
    while off < e.size {
        let pa = translate(mem, root.master_pml4, e.base + off)
            .map_err(|e| format!("extension page not mapped: {e}"))?
            .pa;
        mem.read_slice(
            &mut bytes[off as usize..(off + 4096) as usize],
            GuestAddress(pa),
        )
        .map_err(|e| e.to_string())?;
        off += 4096;
    }
    Ok(PristineSource {
        ext_slot: slot as u32,
        va: e.base,
        code_len: e.text_end - e.base,
        bytes,
        symbols: Vec::new(),
    })
}

/// An ELF's functions for the image, at link-time addresses.
fn elf_symbols(elf: &[u8]) -> Result<Vec<SymbolSource>, String> {
    let funcs = lazarus_symbols::function_symbols(elf).map_err(|e| format!("symbols: {e}"))?;
    Ok(funcs
        .into_iter()
        .map(|f| SymbolSource {
            addr: f.start,
            size: f.size,
            name: f.name,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use lazarus_abi::root::{EXT_LIVE, ExtSlot};
    use lazarus_vmm::memory::create_guest_ram;
    use std::mem::offset_of;

    /// A guest can put anything in its extension table; snapshotting an
    /// extension for the repair image must reject it, never panic.
    #[test]
    fn hostile_extension_slots_are_rejected() {
        let mem = create_guest_ram(16 << 20).expect("ram");
        let gpa = 0x10_0000;
        crate::kernel_memory::tests::plant_root(&mem, gpa);
        let slot_at = gpa + offset_of!(KernelRoot, exts) as u64;
        let cases = [
            (5000, EXT_REGION, EXT_REGION + 10),
            (u64::MAX, EXT_REGION, EXT_REGION + 10),
            (4096, 0, 0),
            (8192, EXT_REGION, EXT_REGION + 4096),
            (8192, EXT_REGION, EXT_REGION + 100_000),
        ];
        for (size, base, text_end) in cases {
            let e = ExtSlot {
                state: EXT_LIVE,
                base,
                size,
                text_start: base,
                text_end,
                ..ExtSlot::default()
            };
            mem.write_slice(zerocopy::IntoBytes::as_bytes(&e), GuestAddress(slot_at))
                .expect("write slot");
            assert!(
                capture_ext(&mem, gpa, 0).is_err(),
                "{size} {base:#x} {text_end:#x}"
            );
        }
    }
}
