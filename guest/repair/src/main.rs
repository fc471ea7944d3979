//! The repair program of lazarus's hidden repair image.
//!
//! The hypervisor runs it in ring 3 on the crashed vCPU, with page tables
//! of the image's own that map the image and all guest RAM, while the
//! kernel is stopped. It reads the crash, diagnoses it from the kernel's
//! state root (same `lazarus_abi` layouts the kernel is built from),
//! repairs what it can, writes a resume plan into the mailbox and rings
//! the doorbell. If repair is not safe it says so (a fallback plan), and
//! the hypervisor reboots instead of resuming a corrupted kernel. A fault
//! in here is a triple fault (the vCPU runs with an empty IDT), which the
//! hypervisor also treats as "repair failed".
#![no_std]
#![no_main]

mod diagnose;
mod fix;
mod invariants;
mod mem;
mod symbols;

use core::arch::global_asm;
use lazarus_abi::repair::*;
use lazarus_abi::root::KernelRoot;
use lazarus_guestmem::{ROOT_SIZE, check_root_header};

global_asm!(
    r#"
.section .text.start, "ax"
.global _start
_start:
    and rsp, -16
    call repair_main
2:
    jmp 2b
"#
);

fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: rdtsc is allowed in ring 3 (CR4.TSD is clear) and has no
    // side effects.
    unsafe { core::arch::asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack)) };
    ((hi as u64) << 32) | lo as u64
}

fn input() -> &'static RepairInput {
    // SAFETY: the hypervisor wrote the input at this fixed place in the
    // image before starting us; the image is mapped at IMAGE_VA.
    unsafe { &*((IMAGE_VA + INPUT_OFFSET) as *const RepairInput) }
}

fn plan() -> &'static mut ResumePlan {
    // SAFETY: the plan area of the image belongs to us while we run.
    unsafe { &mut *((IMAGE_VA + PLAN_OFFSET) as *mut ResumePlan) }
}

/// Pristine bytes stored in the image.
pub fn pristine_bytes(p: &Pristine) -> Option<&'static [u8]> {
    let end = p.image_offset.checked_add(p.len)?;
    if p.image_offset < PRISTINE_OFFSET || end > SLOT_SIZE {
        return None;
    }
    // SAFETY: inside the image (checked), which is mapped at IMAGE_VA.
    Some(unsafe {
        core::slice::from_raw_parts((IMAGE_VA + p.image_offset) as *const u8, p.len as usize)
    })
}

/// Other CPUs that crashed at nearly the same moment and need no repair
/// of their own: a triple fault (an interrupt or exception it could not
/// take) in user mode, or in the kernel outside extension code and without
/// the big lock (its idle loop or the lock's wait), is the work of the
/// tables just rebuilt, such as a wiped IDT. It resumes where it stopped
/// and takes the interrupt again. The checks above refused any CPU in
/// extension code or holding the lock; any other crash keeps its turn.
fn covered_crashes(inp: &RepairInput) -> u32 {
    inp.others
        .iter()
        .filter(|o| {
            o.valid != 0
                && o.vcpu != inp.vcpu
                && o.vcpu < 32
                && o.crashed == lazarus_abi::repair::DETECT_TRIPLE_FAULT
        })
        .fold(0, |mask, o| mask | 1 << o.vcpu)
}

/// Whether stopped CPU `cpu` has a crash of its own pending.
fn crashed(inp: &RepairInput, cpu: u32) -> bool {
    inp.others
        .iter()
        .any(|o| o.valid != 0 && o.vcpu == cpu && o.crashed != 0)
}

fn set_reason(p: &mut ResumePlan, why: &str) {
    p.reason = [0; 96];
    let n = why.len().min(p.reason.len());
    p.reason[..n].copy_from_slice(&why.as_bytes()[..n]);
}

fn ring_doorbell() -> ! {
    // SAFETY: the doorbell page is mapped to a guest-physical address with
    // no memory behind it: this write is an MMIO exit to the hypervisor,
    // which stops us there.
    unsafe { (DOORBELL_VA as *mut u64).write_volatile(1) };
    loop {
        core::hint::spin_loop();
    }
}

/// The root, if it is where the hypervisor says and its header (magic,
/// ABI version, size) is the one this program was built for: the same
/// check the hypervisor makes.
fn root(m: &mem::Mem, gpa: u64) -> Option<&'static mut KernelRoot> {
    check_root_header(m, gpa).ok()?;
    let p = m.ptr(gpa, ROOT_SIZE)?;
    // SAFETY: inside RAM and 8-byte aligned (checked above; RAM_VA is page
    // aligned); every bit pattern is a valid KernelRoot (plain integers),
    // and the kernel is stopped, so nothing else writes it meanwhile.
    Some(unsafe { &mut *(p as *mut KernelRoot) })
}

#[unsafe(no_mangle)]
extern "C" fn repair_main() -> ! {
    let start = rdtsc();
    let p = plan();
    // SAFETY: all-zero is a valid ResumePlan.
    *p = unsafe { core::mem::zeroed() };
    p.tsc_start = start;
    match run(input(), p) {
        Ok(()) => p.action = PLAN_RESUME,
        Err(Stop::Refuse(why)) => {
            p.action = PLAN_FALLBACK;
            set_reason(p, why);
        }
        Err(Stop::Wait(why)) => {
            p.action = PLAN_WAIT;
            set_reason(p, why);
        }
    }
    p.tsc_end = rdtsc();
    ring_doorbell()
}

/// Why the program stops short of a repair.
enum Stop {
    /// Repair is not safe.
    Refuse(&'static str),
    /// Another CPU must leave its critical section first; nothing changed.
    Wait(&'static str),
}

impl From<&'static str> for Stop {
    fn from(why: &'static str) -> Self {
        Stop::Refuse(why)
    }
}

fn run(inp: &RepairInput, plan: &mut ResumePlan) -> Result<(), Stop> {
    if inp.repeat >= 3 {
        return Err("the same crash recurred three times in a row".into());
    }
    let probe = mem::Mem {
        size: inp.mem_size,
        pml4: 0,
    };
    let r = root(&probe, inp.root_gpa).ok_or("the kernel state root is missing or corrupt")?;
    if !r.master_pml4.is_multiple_of(4096) || r.master_pml4 >= inp.mem_size {
        return Err("the kernel's master page table is corrupt".into());
    }
    let m = mem::Mem {
        size: inp.mem_size,
        pml4: r.master_pml4,
    };

    // Another CPU inside the kernel may be halfway through changing any
    // structure the repair would touch (only the big lock's owner can be:
    // the others are in user mode, idle or waiting at its door). The
    // repair waits for it to leave, or to crash too (a crash in there is
    // then repaired first, and covers this one).
    let (holder, locked) = (r.bkl.owner_cpu, r.bkl.locked);
    if locked != 0 && holder != lazarus_abi::root::NONE && holder != inp.vcpu {
        if crashed(inp, holder) {
            return Err(Stop::Wait(
                "another CPU crashed holding the big kernel lock: its crash first",
            ));
        }
        return Err(Stop::Wait(
            "another CPU is inside the kernel (it holds the big kernel lock)",
        ));
    }
    // The same from the stopped CPUs' own registers: one stopped in ring 0
    // inside extension code is running a driver the repair may reset.
    for o in inp
        .others
        .iter()
        .filter(|o| o.valid != 0 && o.vcpu != inp.vcpu)
    {
        if o.cs & 3 == 0
            && (lazarus_abi::layout::EXT_REGION..lazarus_abi::layout::IOREMAP_REGION)
                .contains(&o.rip)
        {
            return Err(Stop::Wait("another CPU is running extension code"));
        }
    }

    // Code first: a corrupted instruction stream would make everything
    // below pointless, and the diagnosis reads code addresses.
    if inp.code_verified == 0 {
        plan.code_bytes_restored = fix::restore_code(&m, r, inp)? as u32;
    }

    let d = diagnose::diagnose(&m, r, inp);
    // A failed extension is caught after it returned: where the kernel
    // noticed says nothing about the extension.
    if d.kind != lazarus_abi::repair::KIND_EXT_FAILED {
        symbols::describe(d.rip, &mut plan.symbol);
    }
    if let Some(e) = r.exts.get(d.ext as usize) {
        plan.ext_name = e.name;
    }
    plan.kind = d.kind;
    plan.ext = d.ext;
    plan.quarantined = d.offender;
    plan.interrupted = d.interrupted;
    if d.offender == 1 {
        return Err("init itself crashed the kernel".into());
    }
    if d.offender == 0 && d.ext == lazarus_abi::root::NONE && d.interrupted == 0 {
        return Err("the core kernel crashed with no process or extension to blame".into());
    }

    let mut fx = fix::Fixer {
        m,
        r,
        plan,
        vcpu: inp.vcpu,
        ended: 0,
        files_broken: 0,
    };
    if d.ext != lazarus_abi::root::NONE {
        fx.handle_extension(d.ext as usize, d.offender, inp)?;
    }
    if d.offender != 0 {
        fx.quarantine(d.offender)?;
    }
    if d.interrupted != 0 && d.interrupted != d.offender {
        // Interrupted, not to blame: it continues from its user context.
        let call = if d.interrupted_eintr {
            lazarus_abi::root::CALL_INTERRUPT
        } else {
            fix::CALL_RESUME
        };
        fx.restart_from_user(d.interrupted, call);
    }
    fx.rebuild_idt()?;
    invariants::check_and_repair(&mut fx)?;
    fx.plan.covered_cpus = covered_crashes(inp);
    Ok(fx.finish(inp, &d)?)
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    let p = plan();
    p.action = PLAN_FALLBACK;
    set_reason(p, "the repair program panicked");
    ring_doorbell()
}
