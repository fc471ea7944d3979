//! Reporting a kernel crash to the hypervisor: fill the crash record in
//! the state root, then signal the pvpanic port. What happens next (dump,
//! repair, reboot) is the hypervisor's decision.

use crate::arch::cpu::{self, outb};
use crate::klog::LineBuf;
use crate::state::{current_ext, k, running_pid};
use core::fmt::Write;
use lazarus_abi::layout::{PORT_PVPANIC, PVPANIC_PANICKED};
use lazarus_abi::trap::{TrapFrame, exception_name};

/// Records the crash and hands control to the hypervisor. Never returns:
/// if the hypervisor lets this vCPU continue here, it halts.
pub fn report(kind: u32, frame: &TrapFrame, msg: &[u8]) -> ! {
    report_in(kind, current_ext(), frame, msg)
}

/// Like [`report`], for a crash blamed on extension `ext` although the
/// current process is not running its code (a fail-silent extension).
pub fn report_in(kind: u32, ext: u32, frame: &TrapFrame, msg: &[u8]) -> ! {
    cpu::cli();
    let r = k();
    let c = &mut r.crash;
    c.seq += 1;
    c.kind = kind;
    c.cpu = crate::arch::percpu::id() as u32;
    c.vector = frame.vector;
    c.error_code = frame.error_code;
    c.cr2 = if frame.vector == lazarus_abi::trap::VEC_PAGE_FAULT {
        cpu::read_cr2()
    } else {
        0
    };
    c.pid = running_pid();
    c.ext = ext;
    c.in_irq = r.cpus[c.cpu as usize].in_irq;
    c.frame = *frame;
    let n = msg.len().min(c.message.len());
    c.message = [0; 128];
    c.message[..n].copy_from_slice(&msg[..n]);
    c.msg_len = n as u32;
    crate::arch::serial::write(b"\n[kernel] ");
    crate::arch::serial::write(&c.message[..n]);
    crate::arch::serial::write(b"\n");
    outb(PORT_PVPANIC, PVPANIC_PANICKED);
    cpu::halt_forever()
}

/// Like [`report_in`], with the message formatted here.
pub fn report_fmt(kind: u32, ext: u32, frame: &TrapFrame, args: core::fmt::Arguments) -> ! {
    let mut m = LineBuf::new();
    let _ = m.write_fmt(args);
    report_in(kind, ext, frame, m.as_bytes())
}

/// An exception in ring 0 the kernel cannot handle.
pub fn oops(frame: &TrapFrame) -> ! {
    let mut m = LineBuf::new();
    let _ = write!(
        m,
        "oops: {} at {:#x} (err {:#x}, pid {})",
        exception_name(frame.vector),
        frame.rip,
        frame.error_code,
        running_pid()
    );
    if frame.vector == lazarus_abi::trap::VEC_PAGE_FAULT {
        let _ = write!(m, " addr {:#x}", cpu::read_cr2());
    }
    report(lazarus_abi::root::CRASH_OOPS, frame, m.as_bytes())
}

/// Captures the caller's registers well enough for a backtrace.
#[inline(always)]
pub fn here() -> TrapFrame {
    let (rip, rsp, rbp): (u64, u64, u64);
    // SAFETY: reads registers only.
    unsafe {
        core::arch::asm!("lea {}, [rip]", "mov {}, rsp", "mov {}, rbp",
            out(reg) rip, out(reg) rsp, out(reg) rbp, options(nomem, nostack));
    }
    TrapFrame {
        rip,
        rsp,
        rbp,
        cs: 0x10,
        ss: 0x18,
        ..TrapFrame::default()
    }
}

pub fn panic_with(msg: &[u8]) -> ! {
    let f = here();
    report(lazarus_abi::root::CRASH_PANIC, &f, msg)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    let mut m = LineBuf::new();
    let _ = write!(m, "panic: {}", info.message());
    if let Some(l) = info.location() {
        let _ = write!(m, " at {}:{}", l.file(), l.line());
    }
    panic_with(m.as_bytes())
}
