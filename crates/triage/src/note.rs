//! The dump's crash note: what crashed, where, on which boot, with which
//! kernel and extensions (by build id), and every vCPU's registers.

use std::collections::HashMap;

use kvm_bindings::{kvm_regs, kvm_sregs};
use lazarus_abi::root::{CrashRecord, EXT_FREE, KernelRoot};
use lazarus_dump::{CrashNote, ExtLoad, GuestRecord, Regs, VcpuState};
use lazarus_symbols::SymbolStore;

use crate::util::unix_ms;

/// Build ids of the boot image's kernel and extensions (symbol lookup).
#[derive(Clone, Debug, Default)]
pub struct BuildIds {
    kernel: Option<String>,
    /// Extension name -> build id, from the initramfs.
    exts: HashMap<String, String>,
}

/// What a note says beyond the registers.
pub(crate) struct NoteInput<'a> {
    pub detector: &'a str,
    pub crashed_vcpu: u32,
    pub boot_id: &'a str,
    pub detail: String,
    pub root_gpa: Option<u64>,
    pub root: Option<&'a KernelRoot>,
    pub guest_record: Option<&'a CrashRecord>,
    pub vcpus: Vec<VcpuState>,
}

impl BuildIds {
    /// Stores the kernel and the initramfs's extensions in `symbols` and
    /// remembers their build ids. A malformed initramfs is the guest's
    /// problem (it will fail to load modules); dumps then lack those
    /// symbols.
    pub fn register(symbols: &SymbolStore, kernel: &[u8], initramfs: &[u8]) -> Self {
        let kernel = symbols.add(kernel, "kernel").ok();
        let mut exts = HashMap::new();
        for m in lazarus_symbols::initramfs_modules(initramfs).unwrap_or_default() {
            if let Ok(id) = symbols.add(&m.elf, &m.name) {
                exts.insert(m.name, id);
            }
        }
        Self { kernel, exts }
    }

    /// The dump's crash note.
    pub(crate) fn note(&self, n: NoteInput<'_>) -> CrashNote {
        CrashNote {
            format_version: 1,
            lazarus_version: env!("CARGO_PKG_VERSION").to_string(),
            time_unix_ms: unix_ms(),
            boot_id: n.boot_id.to_string(),
            detector: n.detector.to_string(),
            detail: n.detail,
            crashed_vcpu: n.crashed_vcpu,
            root_gpa: n.root_gpa,
            kernel_build_id: self.kernel.clone(),
            extensions: n.root.map(|r| self.extensions(r)).unwrap_or_default(),
            guest_record: n.guest_record.map(GuestRecord::from),
            vcpus: n.vcpus,
        }
    }

    fn extensions(&self, root: &KernelRoot) -> Vec<ExtLoad> {
        root.exts
            .iter()
            .enumerate()
            .filter(|(_, e)| e.state != EXT_FREE)
            .map(|(slot, e)| {
                let name = lazarus_abi::name_str(&e.name).to_string();
                ExtLoad {
                    slot: slot as u32,
                    build_id: self.exts.get(&name).cloned(),
                    name,
                    base: e.base,
                    size: e.size,
                    text_start: e.text_start,
                    text_end: e.text_end,
                }
            })
            .collect()
    }
}

/// KVM's registers in the dump's layout.
pub(crate) fn to_regs(r: Option<&kvm_regs>, s: Option<&kvm_sregs>) -> Regs {
    let mut out = Regs::default();
    if let Some(r) = r {
        out.rax = r.rax;
        out.rbx = r.rbx;
        out.rcx = r.rcx;
        out.rdx = r.rdx;
        out.rsi = r.rsi;
        out.rdi = r.rdi;
        out.rbp = r.rbp;
        out.rsp = r.rsp;
        out.r8 = r.r8;
        out.r9 = r.r9;
        out.r10 = r.r10;
        out.r11 = r.r11;
        out.r12 = r.r12;
        out.r13 = r.r13;
        out.r14 = r.r14;
        out.r15 = r.r15;
        out.rip = r.rip;
        out.rflags = r.rflags;
    }
    if let Some(s) = s {
        out.cs = u64::from(s.cs.selector);
        out.ss = u64::from(s.ss.selector);
        out.ds = u64::from(s.ds.selector);
        out.es = u64::from(s.es.selector);
        out.fs = u64::from(s.fs.selector);
        out.gs = u64::from(s.gs.selector);
        out.fs_base = s.fs.base;
        out.gs_base = s.gs.base;
        out.cr0 = s.cr0;
        out.cr2 = s.cr2;
        out.cr3 = s.cr3;
        out.cr4 = s.cr4;
        out.efer = s.efer;
    }
    out
}
