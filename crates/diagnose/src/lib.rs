//! Offline diagnosis of a lazarus crash dump, from the dump alone (plus
//! symbols by build id): what kind of crash, the faulting instruction, a
//! symbolized backtrace, the offending process and extension, the locks
//! involved, and a stable signature that groups reports of the same bug.
//!
//! Nothing in a dump is trusted: a corrupted kernel root, missing symbols
//! or unreadable stack memory make the report less complete (and say so in
//! `notes`), never make diagnosis fail.

mod classify;
mod gdb;
mod modules;
mod report;
mod signature;
mod state;

use lazarus_abi::trap::exception_name;
use lazarus_dump::{Dump, DumpError, Regs};
use lazarus_symbols::SymbolStore;

pub use gdb::{GdbCommand, gdb_command, shell_quote};
pub use report::{
    CrashKind, ExtensionInfo, Frame, Instruction, LockInfo, LockWait, ProcessInfo, REPORT_VERSION,
    Report,
};
pub use signature::{SIGNATURE_FRAMES, SIGNATURE_VERSION, signature_of_report};

use crate::modules::Modules;
use crate::state::{Kernel, read_root};

/// Most frames in a backtrace.
pub const MAX_FRAMES: usize = 64;
/// Longest x86 instruction.
const MAX_INSN: usize = 15;

/// Diagnosis failed outright (only when the dump file itself cannot be
/// read; damage inside the dump is reported in the [`Report`]).
#[derive(Debug, thiserror::Error)]
pub enum DiagnoseError {
    /// Reading the dump file failed (an I/O error, not damage inside it).
    #[error("reading the dump: {0}")]
    Dump(#[from] DumpError),
}

/// Turns a dump-read error into "not readable" unless the file itself
/// failed (I/O), which aborts the diagnosis.
fn readable<T>(r: Result<T, DumpError>) -> Result<Option<T>, DiagnoseError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e @ DumpError::Io { .. }) => Err(e.into()),
        Err(_) => Ok(None),
    }
}

/// Walks the frame-pointer chain from `regs`: frame 0 is the faulting RIP;
/// `[rbp]` is the caller's rbp and `[rbp + 8]` the return address. Stops at
/// unreadable memory, a non-increasing rbp, a return address outside
/// kernel or extension code, or [`MAX_FRAMES`].
fn backtrace(dump: &Dump, regs: &Regs, modules: &Modules) -> Result<Vec<Frame>, DiagnoseError> {
    let mut pcs = vec![regs.rip];
    // Stopped where the function has no frame of its own yet (or any
    // more), rbp is still the caller's: take the return address from the
    // stack, or the caller would be missing. Lockups are sampled anywhere,
    // prologues included.
    if let Some(slot) = frameless_return_slot(dump, regs, modules)?
        && let Some(ret) = readable(dump.read_u64_virt(slot))?
        && modules.is_code(ret)
    {
        pcs.push(ret);
    }
    let mut rbp = regs.rbp;
    while pcs.len() < MAX_FRAMES {
        if rbp == 0 || !rbp.is_multiple_of(8) {
            break;
        }
        let Some(next) = readable(dump.read_u64_virt(rbp))? else {
            break;
        };
        let Some(ret) = readable(dump.read_u64_virt(rbp.wrapping_add(8)))? else {
            break;
        };
        if !modules.is_code(ret) {
            break;
        }
        // A frame captured inside a callee with the caller's return address
        // as its RIP (the extension API's panic does this) would otherwise
        // show the caller twice.
        if !(pcs.len() == 1 && ret == pcs[0]) {
            pcs.push(ret);
        }
        if next <= rbp {
            break;
        }
        rbp = next;
    }
    Ok(pcs
        .iter()
        .enumerate()
        .map(|(i, &pc)| modules.frame(i, pc, i > 0))
        .collect())
}

const PUSH_RBP: u8 = 0x55;
const MOV_RBP_RSP: [u8; 3] = [0x48, 0x89, 0xe5];
const RET: u8 = 0xc3;

/// Where the return address is when `regs` stopped outside the
/// function's frame: at a function's first instruction (`push rbp` not yet
/// run: `[rsp]`), its second (`mov rbp, rsp` not yet run: `[rsp + 8]`) or
/// at a `ret` (`[rsp]`). `None` inside the frame, where `[rbp + 8]` holds
/// it.
fn frameless_return_slot(
    dump: &Dump,
    regs: &Regs,
    modules: &Modules,
) -> Result<Option<u64>, DiagnoseError> {
    let mut code = [0u8; 3];
    if readable(dump.read_virt(regs.rip, &mut code))?.is_none() {
        return Ok(None);
    }
    if code[0] == RET {
        return Ok(Some(regs.rsp));
    }
    let offset = modules.frame(0, regs.rip, false).offset;
    let mut prev = [0u8; 1];
    Ok(match offset {
        Some(0) if code[0] == PUSH_RBP => Some(regs.rsp),
        Some(1)
            if code == MOV_RBP_RSP
                && readable(dump.read_virt(regs.rip - 1, &mut prev))?.is_some()
                && prev[0] == PUSH_RBP =>
        {
            Some(regs.rsp.wrapping_add(8))
        }
        _ => None,
    })
}

/// Reads and disassembles the instruction at `rip`.
fn instruction(
    dump: &Dump,
    rip: u64,
    modules: &Modules,
) -> Result<Option<Instruction>, DiagnoseError> {
    use iced_x86::{Decoder, DecoderOptions, Formatter, IntelFormatter};
    // Read as much of the longest instruction as is mapped.
    let mut bytes = Vec::with_capacity(MAX_INSN);
    for i in 0..MAX_INSN as u64 {
        let mut b = [0u8; 1];
        match readable(dump.read_virt(rip.wrapping_add(i), &mut b))? {
            Some(()) => bytes.push(b[0]),
            None => break,
        }
    }
    if bytes.is_empty() {
        return Ok(None);
    }
    let mut decoder = Decoder::with_ip(64, &bytes, rip, DecoderOptions::NONE);
    let insn = decoder.decode();
    let (len, text) = if insn.is_invalid() {
        (bytes.len().min(1), "(bad)".to_string())
    } else {
        let mut text = String::new();
        IntelFormatter::new().format(&insn, &mut text);
        (insn.len(), text)
    };
    let frame = modules.frame(0, rip, false);
    Ok(Some(Instruction {
        address: rip,
        bytes: bytes[..len].iter().map(|b| format!("{b:02x}")).collect(),
        disassembly: text,
        symbol: (frame.module.is_some()).then(|| {
            let d = frame.display();
            // Without file:line: the instruction's own line says enough.
            d.split(" (").next().unwrap_or(&d).to_string()
        }),
    }))
}

/// Diagnoses the crash in `dump`, with symbols from `symbols`.
pub fn diagnose(dump: &Dump, symbols: &SymbolStore) -> Result<Report, DiagnoseError> {
    let note = dump.note();
    let mut notes = Vec::new();

    let root = match note.root_gpa {
        Some(gpa) => match read_root(dump, gpa) {
            Ok(r) => Some(r),
            Err(why) => {
                notes.push(format!("kernel state root unusable: {why}"));
                None
            }
        },
        None => {
            notes.push("the kernel had not registered its state root".into());
            None
        }
    };
    let kernel = root.as_deref().map(|root| Kernel { root });
    let modules = Modules::load(dump, kernel.as_ref(), symbols, &mut notes);
    let ext_name = |slot: u32| -> Option<String> {
        note.extensions
            .iter()
            .find(|e| e.slot == slot)
            .map(|e| e.name.clone())
            .or_else(|| kernel.as_ref().and_then(|k| k.ext_name(slot)))
    };

    let record = note.guest_record.as_ref();
    let regs = note.crash_regs();
    if regs.is_none() {
        notes.push("no registers of the crashed vCPU".into());
    }
    let in_irq = record.is_some_and(|r| r.in_irq != 0);

    // The offender.
    let pid = match record {
        Some(r) => r.pid,
        None => kernel.as_ref().map_or(0, |k| k.current(note.crashed_vcpu)),
    };
    let offender = kernel.as_ref().and_then(|k| k.process_info(pid));
    if pid != 0 && offender.is_none() && kernel.is_some() {
        notes.push(format!("pid {pid} is not in the process table"));
    }
    let wait = kernel.as_ref().and_then(|k| k.deadlock(pid, &ext_name));

    let exit_cr2 = note.vcpu(note.crashed_vcpu).map(|r| r.cr2);
    let kind = classify::kind(note, regs.as_ref(), exit_cr2, wait.is_some());
    let (process, interrupted_process) =
        if matches!(kind, CrashKind::IrqFault | CrashKind::ExtensionFailure) {
            (None, offender)
        } else {
            (offender, None)
        };

    let (faulting_instruction, backtrace) = match &regs {
        Some(r) => (
            instruction(dump, r.rip, &modules)?,
            backtrace(dump, r, &modules)?,
        ),
        None => (None, Vec::new()),
    };
    if regs.is_some() && faulting_instruction.is_none() {
        notes.push("the faulting instruction is not in the dump".into());
    }

    // The executing extension.
    let rip = regs.as_ref().map(|r| r.rip);
    // A corrupted saved context says nothing about the extension its
    // process was blocked in (the repair image's rule too).
    let slot = if kind == CrashKind::ContextCorruption {
        None
    } else {
        record
            .map(|r| r.ext)
            .filter(|&e| e != lazarus_abi::root::NONE)
            .or_else(|| {
                let rip = rip?;
                modules
                    .list
                    .iter()
                    .find(|m| m.slot.is_some() && m.text.contains(&rip))
                    .and_then(|m| m.slot)
            })
            .or_else(|| {
                process
                    .as_ref()
                    .or(interrupted_process.as_ref())
                    .and_then(|p| p.cur_ext)
            })
    };
    let extension = slot.map(|slot| {
        let m = modules.list.iter().find(|m| m.slot == Some(slot));
        ExtensionInfo {
            slot,
            name: ext_name(slot).unwrap_or_else(|| format!("slot {slot}")),
            base: m.map(|m| m.range.start),
            build_id: m.and_then(|m| m.build_id.clone()),
        }
    });

    let locks_held = match (&kernel, &process) {
        (Some(k), Some(p)) => k.locks_held(p.pid, &ext_name),
        _ => Vec::new(),
    };
    let spinning_on = if kind == CrashKind::Deadlock {
        wait
    } else {
        None
    };

    let ext = extension.as_ref().map(|e| e.name.as_str());
    let top = signature::significant(kind, &backtrace, ext);
    let signature = signature::compute(kind, &backtrace, ext, record.map(|r| r.message.as_str()));
    // Extensions are where crashes come from: name the offending
    // extension's innermost frame when it is on the stack.
    let culprit = extension
        .as_ref()
        .and_then(|e| {
            top.iter()
                .find(|f| f.module.as_deref() == Some(e.name.as_str()))
        })
        .or(top.first());
    let title = match culprit {
        _ if kind == CrashKind::OnDemand => match top.first() {
            Some(f) if f.module.is_some() => {
                format!("on-demand dump (not a crash); vCPU at {}", f.location())
            }
            _ => "on-demand dump (not a crash)".to_string(),
        },
        _ if kind == CrashKind::ExtensionFailure => match &extension {
            Some(e) => format!("{kind} in {}", e.name),
            None => kind.to_string(),
        },
        Some(f) if f.module.is_some() => format!("{kind} in {}", f.location()),
        Some(f) => format!("{kind} at {:#x}", f.address),
        None => kind.to_string(),
    };
    if backtrace
        .iter()
        .any(|f| f.module.is_some() && f.function.is_none())
    {
        notes.push("some frames have no symbols; their signature part is module+offset".into());
    }

    let oops = record.filter(|r| r.kind == lazarus_abi::root::CRASH_OOPS);
    Ok(Report {
        report_version: REPORT_VERSION,
        kind,
        title,
        signature,
        detector: note.detector.clone(),
        detail: note.detail.clone(),
        exception: oops.map(|r| exception_name(r.vector).to_string()),
        vector: oops.map(|r| r.vector),
        error_code: oops.map(|r| r.error_code),
        fault_address: oops.filter(|r| r.vector == 14).map(|r| r.cr2),
        message: record.map_or_else(|| note.detail.clone(), |r| r.message.clone()),
        crashed_vcpu: note.crashed_vcpu,
        in_irq,
        boot_id: note.boot_id.clone(),
        time_unix_ms: note.time_unix_ms,
        lazarus_version: note.lazarus_version.clone(),
        kernel_build_id: note.kernel_build_id.clone(),
        faulting_instruction,
        backtrace,
        process,
        interrupted_process,
        extension,
        locks_held,
        spinning_on,
        registers: regs,
        notes,
    })
}
