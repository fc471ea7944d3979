//! The `NT_PRSTATUS` descriptor gdb reads registers from.
//!
//! Hand-written because `object` defines the ELF container but not Linux's
//! `struct elf_prstatus` (it is in the kernel's `<linux/elfcore.h>`, not in
//! the ELF specification). The layout below is the x86-64 one: 336 bytes,
//! registers at offset 112 in `user_regs_struct` order.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::note::Regs;

/// `sizeof(struct elf_prstatus)` on x86-64.
pub const PRSTATUS_SIZE: usize = 336;
const _: () = assert!(size_of::<Prstatus>() == PRSTATUS_SIZE);

// Signal numbers gdb shows as the reason the "process" stopped.
pub const SIGILL: i16 = 4;
pub const SIGABRT: i16 = 6;
pub const SIGFPE: i16 = 8;
pub const SIGSEGV: i16 = 11;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct Prstatus {
    /// `struct elf_siginfo { si_signo, si_code, si_errno }`.
    pub si_signo: i32,
    pub si_code: i32,
    pub si_errno: i32,
    pub pr_cursig: i16,
    pub _pad0: i16,
    pub pr_sigpend: u64,
    pub pr_sighold: u64,
    pub pr_pid: i32,
    pub pr_ppid: i32,
    pub pr_pgrp: i32,
    pub pr_sid: i32,
    /// utime, stime, cutime, cstime as `struct timeval` pairs.
    pub times: [u64; 8],
    pub pr_reg: UserRegs,
    pub pr_fpvalid: i32,
    pub _pad1: i32,
}

/// `struct user_regs_struct` of x86-64, in its order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct UserRegs {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub rbp: u64,
    pub rbx: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rax: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub orig_rax: u64,
    pub rip: u64,
    pub cs: u64,
    pub eflags: u64,
    pub rsp: u64,
    pub ss: u64,
    pub fs_base: u64,
    pub gs_base: u64,
    pub ds: u64,
    pub es: u64,
    pub fs: u64,
    pub gs: u64,
}

impl From<&Regs> for UserRegs {
    fn from(r: &Regs) -> Self {
        UserRegs {
            r15: r.r15,
            r14: r.r14,
            r13: r.r13,
            r12: r.r12,
            rbp: r.rbp,
            rbx: r.rbx,
            r11: r.r11,
            r10: r.r10,
            r9: r.r9,
            r8: r.r8,
            rax: r.rax,
            rcx: r.rcx,
            rdx: r.rdx,
            rsi: r.rsi,
            rdi: r.rdi,
            // Not in a system call: Linux stores -1 here.
            orig_rax: u64::MAX,
            rip: r.rip,
            cs: r.cs,
            eflags: r.rflags,
            rsp: r.rsp,
            ss: r.ss,
            fs_base: r.fs_base,
            gs_base: r.gs_base,
            ds: r.ds,
            es: r.es,
            fs: r.fs,
            gs: r.gs,
        }
    }
}

impl From<&UserRegs> for Regs {
    /// Control registers are not in a prstatus note and stay zero.
    fn from(u: &UserRegs) -> Self {
        Regs {
            rax: u.rax,
            rbx: u.rbx,
            rcx: u.rcx,
            rdx: u.rdx,
            rsi: u.rsi,
            rdi: u.rdi,
            rbp: u.rbp,
            rsp: u.rsp,
            r8: u.r8,
            r9: u.r9,
            r10: u.r10,
            r11: u.r11,
            r12: u.r12,
            r13: u.r13,
            r14: u.r14,
            r15: u.r15,
            rip: u.rip,
            rflags: u.eflags,
            cs: u.cs,
            ss: u.ss,
            ds: u.ds,
            es: u.es,
            fs: u.fs,
            gs: u.gs,
            fs_base: u.fs_base,
            gs_base: u.gs_base,
            ..Regs::default()
        }
    }
}

impl Prstatus {
    /// The note of vCPU `vcpu`: gdb shows it as thread `vcpu + 1` (LWP 0
    /// would read as "no thread").
    pub fn new(vcpu: u32, regs: &Regs, signal: i16) -> Self {
        let pid = i32::try_from(vcpu).map_or(i32::MAX, |v| v.saturating_add(1));
        Prstatus {
            si_signo: i32::from(signal),
            pr_cursig: signal,
            pr_pid: pid,
            pr_pgrp: pid,
            pr_sid: pid,
            pr_reg: UserRegs::from(regs),
            ..Prstatus::default()
        }
    }

    /// The vCPU this note describes, if its pid is one we write.
    pub fn vcpu(&self) -> Option<u32> {
        u32::try_from(self.pr_pid).ok()?.checked_sub(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::offset_of;

    #[test]
    fn layout_matches_linux_x86_64() {
        assert_eq!(size_of::<Prstatus>(), PRSTATUS_SIZE);
        assert_eq!(offset_of!(Prstatus, pr_cursig), 12);
        assert_eq!(offset_of!(Prstatus, pr_pid), 32);
        assert_eq!(offset_of!(Prstatus, pr_reg), 112);
        assert_eq!(size_of::<UserRegs>(), 27 * 8);
        assert_eq!(offset_of!(Prstatus, pr_fpvalid), 328);
    }

    #[test]
    fn registers_round_trip() {
        let regs = Regs {
            rax: 1,
            r15: 15,
            rip: 0xffff_ffff_8010_0000,
            rsp: 0x7000,
            rflags: 0x246,
            cs: 0x10,
            gs_base: 0x99,
            ..Regs::default()
        };
        let p = Prstatus::new(2, &regs, SIGSEGV);
        assert_eq!(p.vcpu(), Some(2));
        assert_eq!(Regs::from(&p.pr_reg), regs);
    }
}
