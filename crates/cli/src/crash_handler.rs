//! What `lazarus run` does with a crash: capture the guest (fast, while it
//! is stopped), then write the ELF core dump, diagnose it, store the report
//! and index it in the crash database (slow, so it can run in the
//! background while the guest is brought back).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use lazarus_abi::root::{EXT_FREE, KernelRoot};
use lazarus_crashdb::{DataDir, NewCrash};
use lazarus_dump::{CrashNote, DumpInput, ExtLoad, GuestRecord, Regs, VcpuState};
use lazarus_symbols::SymbolStore;
use lazarus_vmm::kvm_bindings::{kvm_regs, kvm_sregs};
use lazarus_vmm::memory::GuestRam;
use lazarus_vmm::snapshot::MemSnapshot;
use lazarus_vmm::{CrashInfo, CrashKind, Recovery, Vm};
use vm_memory::{GuestAddress, GuestMemoryBackend};
use zerocopy::IntoBytes;

use crate::image::BootImage;

/// Guest memory for a dump.
pub enum RamSource {
    /// The crashed VM's RAM itself (not a copy): nothing runs in it any
    /// more, and holding it costs nothing while a new VM boots.
    Shared(Arc<GuestRam>, usize),
    /// A crash-time snapshot of kernel memory (the guest was resurrected
    /// and runs on).
    Snapshot(MemSnapshot),
    /// A copy of all guest RAM taken while the guest was paused (an
    /// on-demand dump; the guest runs on).
    Copy(Vec<u8>),
}

/// Everything needed to write a dump.
pub struct Captured {
    pub note: CrashNote,
    pub ram: RamSource,
    pub action: &'static str,
}

/// Guest RAM as one byte slice.
fn ram_bytes(ram: &GuestRam, size: usize) -> anyhow::Result<&[u8]> {
    let host = ram
        .get_host_address(GuestAddress(0))
        .map_err(|e| anyhow::anyhow!("guest RAM has no host mapping: {e}"))?;
    ram.check_range(GuestAddress(0), size)
        .then_some(())
        .ok_or_else(|| anyhow::anyhow!("guest RAM is not {size} contiguous bytes"))?;
    // SAFETY: `check_range` confirmed [0, size) is one mapped region of
    // `ram`, which the caller's borrow keeps alive; the guest that could
    // write it is stopped for good.
    Ok(unsafe { std::slice::from_raw_parts(host, size) })
}

/// Where a crash ended up.
#[derive(Debug, Clone)]
pub struct Persisted {
    pub dump: PathBuf,
    pub report_json: PathBuf,
    pub signature: String,
    pub title: String,
    pub text: String,
}

pub struct CrashHandler {
    data: DataDir,
    symbols: SymbolStore,
    ids: BuildIds,
    background: Vec<JoinHandle<()>>,
    results_tx: Sender<anyhow::Result<Persisted>>,
    results_rx: Receiver<anyhow::Result<Persisted>>,
}

impl CrashHandler {
    /// Stores the image's kernel and extensions in the symbol store, so
    /// that any dump of this boot can be symbolized offline by build id.
    pub fn new(image: &BootImage, data: DataDir) -> anyhow::Result<Self> {
        data.ensure()
            .with_context(|| format!("data directory {}", data.root().display()))?;
        let symbols = SymbolStore::new(data.symbols_dir());
        let kernel_build_id = symbols.add(&image.kernel, "kernel").ok();
        let mut ext_build_ids = HashMap::new();
        // A malformed initramfs is the guest's problem (it will fail to
        // load modules); dumps then just lack those symbols.
        for m in lazarus_symbols::initramfs_modules(&image.initramfs).unwrap_or_default() {
            if let Ok(id) = symbols.add(&m.elf, &m.name) {
                ext_build_ids.insert(m.name, id);
            }
        }
        let (results_tx, results_rx) = channel();
        Ok(Self {
            data,
            symbols,
            ids: BuildIds {
                kernel: kernel_build_id,
                exts: ext_build_ids,
            },
            background: Vec::new(),
            results_tx,
            results_rx,
        })
    }

    /// Takes the guest's memory and state. The VM must be stopped.
    pub fn capture(
        &self,
        vm: &Vm,
        info: &CrashInfo,
        boot_id: &str,
        action: &'static str,
    ) -> Captured {
        let root = vm.kernel_root().ok();
        let mut vcpus = Vec::new();
        for id in 0..vm.layout().vcpus {
            let (regs, sregs) = match vm.vcpu_fd(id) {
                Some(fd) => (fd.get_regs().ok(), fd.get_sregs().ok()),
                None => (None, None),
            };
            // The crashed vCPU's state was captured at the exit.
            let (regs, sregs) = if id == info.vcpu {
                (info.regs.or(regs), info.sregs.or(sregs))
            } else {
                (regs, sregs)
            };
            vcpus.push(VcpuState {
                id,
                regs: to_regs(regs.as_ref(), sregs.as_ref()),
            });
        }
        let note = self.ids.note(
            info,
            boot_id,
            info.summary(),
            vm.root_gpa(),
            root.as_deref(),
            vcpus,
        );
        Captured {
            note,
            ram: RamSource::Shared(vm.memory_arc(), vm.layout().mem_size as usize),
            action,
        }
    }

    /// Writes the dump, diagnoses it and records it, now.
    pub fn persist(&self, c: Captured) -> anyhow::Result<Persisted> {
        persist(&self.data, &self.symbols, c)
    }

    /// The same in a background thread; results are printed as they come
    /// (see [`CrashHandler::report_finished`]).
    pub fn persist_in_background(&mut self, c: Captured) {
        let data = self.data.clone();
        let symbols = SymbolStore::new(self.data.symbols_dir());
        let tx = self.results_tx.clone();
        self.background.push(std::thread::spawn(move || {
            lower_priority();
            let _ = tx.send(persist(&data, &symbols, c));
        }));
    }

    /// A handle that background threads use to save resurrected crashes.
    pub fn background_handle(&self) -> Background {
        Background {
            data: self.data.clone(),
            ids: self.ids.clone(),
        }
    }

    /// Prints one line for every background dump finished so far.
    pub fn report_finished(&self) {
        while let Ok(r) = self.results_rx.try_recv() {
            print_result(&r);
        }
    }

    /// Waits for background work (before the process exits).
    pub fn finish(&mut self) {
        for h in self.background.drain(..) {
            let _ = h.join();
        }
        self.report_finished();
    }
}

pub fn print_result(r: &anyhow::Result<Persisted>) {
    match r {
        Ok(p) => eprintln!(
            "lazarus: crash {}: {}; dump {}; report {}",
            p.signature,
            p.title,
            p.dump.display(),
            p.report_json.display()
        ),
        Err(e) => eprintln!("lazarus: warning: could not save the crash: {e:#}"),
    }
}

fn persist(data: &DataDir, symbols: &SymbolStore, c: Captured) -> anyhow::Result<Persisted> {
    let (persisted, new) = write_report(data, symbols, c)?;
    lazarus_crashdb::record_report(data, &new).context("recording the crash in the database")?;
    Ok(persisted)
}

/// Writes the dump, diagnoses it and writes the report (JSON and text);
/// returns where, and the crash-database entry to record.
fn write_report(
    data: &DataDir,
    symbols: &SymbolStore,
    c: Captured,
) -> anyhow::Result<(Persisted, NewCrash)> {
    let stem = format!(
        "{}-{}-{}",
        c.note.time_unix_ms,
        c.note.boot_id,
        c.note
            .detector
            .replace(|ch: char| !ch.is_ascii_alphanumeric(), "_")
    );
    let dump = data.dumps_dir().join(format!("{stem}.core"));
    match &c.ram {
        RamSource::Shared(ram, size) => {
            let input = DumpInput {
                ram: ram_bytes(ram, *size)?,
                note: c.note.clone(),
            };
            lazarus_dump::write_core(&dump, &input)
        }
        RamSource::Snapshot(snap) => {
            let image = snap.to_ram_image();
            let input = DumpInput {
                ram: &image,
                note: c.note.clone(),
            };
            lazarus_dump::write_core(&dump, &input)
        }
        RamSource::Copy(ram) => {
            let input = DumpInput {
                ram,
                note: c.note.clone(),
            };
            lazarus_dump::write_core(&dump, &input)
        }
    }
    .with_context(|| format!("writing {}", dump.display()))?;
    drop(c.ram);
    let parsed = lazarus_dump::Dump::open(&dump)
        .with_context(|| format!("reading back {}", dump.display()))?;
    let report = lazarus_diagnose::diagnose(&parsed, symbols).context("diagnosing the dump")?;
    let json = serde_json::to_string_pretty(&report)?;
    let report_json = data.reports_dir().join(format!("{stem}.json"));
    std::fs::write(&report_json, &json)
        .with_context(|| format!("writing {}", report_json.display()))?;
    let text = report.render_text();
    let _ = std::fs::write(data.reports_dir().join(format!("{stem}.txt")), &text);
    let new = NewCrash {
        signature: report.signature.clone(),
        kind: report.kind.as_str().to_string(),
        title: report.title.clone(),
        time_unix_ms: c.note.time_unix_ms,
        boot_id: c.note.boot_id.clone(),
        extension: report.extension.as_ref().map(|e| e.name.clone()),
        process: report
            .process
            .as_ref()
            .map(|p| format!("pid {} ({})", p.pid, p.name)),
        action: c.action.to_string(),
        dump_path: Some(dump.clone()),
        report_json: json,
    };
    let persisted = Persisted {
        dump,
        report_json,
        signature: report.signature,
        title: report.title,
        text,
    };
    Ok((persisted, new))
}

fn detector(kind: &CrashKind) -> &'static str {
    match kind {
        CrashKind::GuestPanic { .. } => "pvpanic",
        CrashKind::TripleFault => "triple-fault",
        CrashKind::InternalError { .. } => "kvm-internal-error",
        CrashKind::EntryFailure { .. } => "entry-failure",
        CrashKind::Hang { .. } => "watchdog",
        CrashKind::SystemEvent { .. } | CrashKind::UnhandledExit { .. } => "other",
    }
}

fn to_regs(r: Option<&kvm_regs>, s: Option<&kvm_sregs>) -> Regs {
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

pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A random id for one boot of the guest.
pub fn new_boot_id() -> String {
    let mut b = [0u8; 8];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .is_err()
    {
        b = unix_ms().to_le_bytes();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The state root as the snapshot holds it.
fn snapshot_root(s: &MemSnapshot, gpa: u64) -> Option<Box<KernelRoot>> {
    let size = std::mem::size_of::<KernelRoot>();
    let &(pa, off, len) = s
        .ranges
        .iter()
        .find(|r| r.0 <= gpa && gpa + size as u64 <= r.0 + r.2 as u64)?;
    let start = off + (gpa - pa) as usize;
    let _ = len;
    let bytes = s.data.get(start..start + size)?;
    let mut root = <KernelRoot as zerocopy::FromZeros>::new_box_zeroed().ok()?;
    root.as_mut_bytes().copy_from_slice(bytes);
    Some(root)
}

/// What a background thread needs to save crashes.
#[derive(Clone)]
pub struct Background {
    data: DataDir,
    ids: BuildIds,
}

/// Build ids of the boot image's kernel and extensions (symbol lookup).
#[derive(Clone)]
pub struct BuildIds {
    kernel: Option<String>,
    /// Extension name -> build id, from the initramfs.
    exts: HashMap<String, String>,
}

impl BuildIds {
    /// The dump's crash note.
    fn note(
        &self,
        info: &CrashInfo,
        boot_id: &str,
        detail: String,
        root_gpa: Option<u64>,
        root: Option<&KernelRoot>,
        vcpus: Vec<VcpuState>,
    ) -> CrashNote {
        CrashNote {
            format_version: 1,
            lazarus_version: env!("CARGO_PKG_VERSION").to_string(),
            time_unix_ms: unix_ms(),
            boot_id: boot_id.to_string(),
            detector: detector(&info.kind).to_string(),
            detail,
            crashed_vcpu: info.vcpu,
            root_gpa,
            kernel_build_id: self.kernel.clone(),
            extensions: root.map(|r| self.extensions(r)).unwrap_or_default(),
            guest_record: info.guest_record.as_ref().map(GuestRecord::from),
            vcpus,
        }
    }

    /// The dump material of a resurrected crash: its snapshot, which
    /// holds the state root as it was at the crash.
    pub fn capture_recovery(&self, rec: Recovery, boot_id: &str) -> Captured {
        let info = &rec.crash;
        let root = snapshot_root(&rec.snapshot, rec.root_gpa);
        let mut detail = info.summary();
        detail.push_str(&format!("; {}", rec.summary()));
        let vcpus = vec![VcpuState {
            id: info.vcpu,
            regs: to_regs(info.regs.as_ref(), info.sregs.as_ref()),
        }];
        let note = self.note(
            info,
            boot_id,
            detail,
            Some(rec.root_gpa),
            root.as_deref(),
            vcpus,
        );
        Captured {
            note,
            ram: RamSource::Snapshot(rec.snapshot),
            action: "resurrect",
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

/// What an on-demand dump is made of: all guest RAM and every vCPU's
/// registers, copied while the guest was paused.
pub struct OnDemand {
    pub ram: Vec<u8>,
    pub vcpus: Vec<(u32, Option<kvm_regs>, Option<kvm_sregs>)>,
    pub root_gpa: Option<u64>,
    pub reason: Option<String>,
}

/// The state root inside a copy of guest RAM.
fn root_in_ram(ram: &[u8], gpa: u64) -> Option<Box<KernelRoot>> {
    let start = usize::try_from(gpa).ok()?;
    let bytes = ram.get(start..start.checked_add(std::mem::size_of::<KernelRoot>())?)?;
    let mut root = <KernelRoot as zerocopy::FromZeros>::new_box_zeroed().ok()?;
    root.as_mut_bytes().copy_from_slice(bytes);
    Some(root)
}

impl Background {
    /// Writes an on-demand dump and its diagnosis report (kind
    /// "on-demand"), as crash dumps are written. It is not a crash, so it
    /// does not go into the crash database.
    pub fn write_on_demand(&self, d: OnDemand, boot_id: &str) -> anyhow::Result<Persisted> {
        let root = d.root_gpa.and_then(|gpa| root_in_ram(&d.ram, gpa));
        let detail = match &d.reason {
            Some(r) => format!("on-demand dump through the control API, not a crash: {r}"),
            None => "on-demand dump through the control API, not a crash".to_string(),
        };
        let note = CrashNote {
            format_version: 1,
            lazarus_version: env!("CARGO_PKG_VERSION").to_string(),
            time_unix_ms: unix_ms(),
            boot_id: boot_id.to_string(),
            detector: "on-demand".to_string(),
            detail,
            crashed_vcpu: d.vcpus.first().map_or(0, |v| v.0),
            root_gpa: d.root_gpa,
            kernel_build_id: self.ids.kernel.clone(),
            extensions: root
                .as_deref()
                .map(|r| self.ids.extensions(r))
                .unwrap_or_default(),
            guest_record: None,
            vcpus: d
                .vcpus
                .iter()
                .map(|(id, r, s)| VcpuState {
                    id: *id,
                    regs: to_regs(r.as_ref(), s.as_ref()),
                })
                .collect(),
        };
        let symbols = SymbolStore::new(self.data.symbols_dir());
        let captured = Captured {
            note,
            ram: RamSource::Copy(d.ram),
            action: "on-demand",
        };
        write_report(&self.data, &symbols, captured).map(|(p, _)| p)
    }

    /// Writes the dump, report and database entry of a resurrected crash.
    /// Runs at low priority: it must not slow the resumed guest.
    pub fn persist_recovery(&self, rec: Recovery, boot_id: &str) {
        lower_priority();
        let symbols = SymbolStore::new(self.data.symbols_dir());
        let captured = self.ids.capture_recovery(rec, boot_id);
        print_result(&persist(&self.data, &symbols, captured));
    }
}

/// Makes the calling thread yield the CPU to the guest's vCPU threads: dump
/// writing is background work.
pub fn lower_priority() {
    // SAFETY: gettid has no preconditions; setpriority on our own thread
    // id only changes this thread's nice value.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, 10);
    }
}
