//! The register frame pushed by the kernel's exception and interrupt entry
//! stubs. The crash record, the scheduler and the repair image all use it.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// The registers at an exception or interrupt, lowest address first: the
/// general-purpose registers (pushed by the common entry stub, `r15` at
/// the lowest address), the vector and error code (pushed by the
/// per-vector stub), then the CPU's interrupt frame (`rip` to `ss`).
/// Its size is [`TRAPFRAME_SIZE`].
// The register fields are named after the register they hold and are
// described together above; the non-register fields have their own docs.
#[allow(missing_docs)]
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct TrapFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    /// IDT vector ([`VEC_PAGE_FAULT`], ...; 32 and up are interrupts).
    pub vector: u64,
    /// The CPU's error code for the vectors that have one, else 0.
    pub error_code: u64,
    // Pushed by the CPU.
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

impl TrapFrame {
    /// Whether the trap interrupted ring 3 (the saved `cs` has RPL 3).
    pub const fn from_user(&self) -> bool {
        self.cs & 3 == 3
    }
}

/// Words that `switch_context` saves below a switched-out process's
/// kernel stack pointer: six callee-saved registers and the return address.
pub const SWITCH_CONTEXT_WORDS: usize = 7;
/// Words of a [`TrapFrame`].
pub const TRAP_FRAME_WORDS: usize = core::mem::size_of::<TrapFrame>() / 8;

/// The seal of a switched-out process's saved state (`Proc::ctx_seal`):
/// its switch context and its user trap frame. Two lanes over the words
/// in order, one xor-ed and one added, so that any one changed word
/// changes the seal, and so does a swap of two neighbours (a shifted
/// stack). It runs twice per context switch in emulated ring 0, so each
/// word costs one instruction (an `xor` or `add` with a memory operand;
/// constant-length loops, fully unrolled). Never 0, which means "not
/// sealed".
#[inline(always)]
pub fn seal(context: &[u64; SWITCH_CONTEXT_WORDS], frame: &[u64; TRAP_FRAME_WORDS]) -> u64 {
    // Written out: the compiler keeps a 22-word loop a loop, at two and
    // a half instructions per word.
    let (c, f) = (context, frame);
    let x = 0x6c61_7a61_7275_7321u64 ^ c[0] ^ c[2] ^ c[4] ^ c[6];
    let a = c[1].wrapping_add(c[3]).wrapping_add(c[5]);
    // The frame continues the alternation (the context has 7 words).
    let x = x ^ f[1] ^ f[3] ^ f[5] ^ f[7] ^ f[9] ^ f[11] ^ f[13] ^ f[15] ^ f[17] ^ f[19] ^ f[21];
    let a = a.wrapping_add(f[0]).wrapping_add(f[2]).wrapping_add(f[4]);
    let a = a.wrapping_add(f[6]).wrapping_add(f[8]).wrapping_add(f[10]);
    let a = a
        .wrapping_add(f[12])
        .wrapping_add(f[14])
        .wrapping_add(f[16]);
    let a = a.wrapping_add(f[18]).wrapping_add(f[20]);
    let h = x ^ a.rotate_left(29);
    if h == 0 { 1 } else { h }
}

const _: () = assert!(
    SWITCH_CONTEXT_WORDS == 7 && TRAP_FRAME_WORDS == 22,
    "see `seal`"
);

/// Bytes of a [`TrapFrame`], which the assembly entry stubs rely on.
pub const TRAPFRAME_SIZE: usize = 22 * 8;

/// CPU exception vector: divide error (#DE).
pub const VEC_DIVIDE: u64 = 0;
/// CPU exception vector: debug (#DB).
pub const VEC_DEBUG: u64 = 1;
/// CPU exception vector: non-maskable interrupt.
pub const VEC_NMI: u64 = 2;
/// CPU exception vector: breakpoint (#BP, `int3`).
pub const VEC_BREAKPOINT: u64 = 3;
/// CPU exception vector: invalid opcode (#UD); from ring 3 it is also the
/// system-call trap ([`crate::syscall::SYSCALL_INSN`]).
pub const VEC_INVALID_OPCODE: u64 = 6;
/// CPU exception vector: double fault (#DF).
pub const VEC_DOUBLE_FAULT: u64 = 8;
/// CPU exception vector: stack-segment fault (#SS).
pub const VEC_STACK_FAULT: u64 = 12;
/// CPU exception vector: general protection (#GP).
pub const VEC_GP: u64 = 13;
/// CPU exception vector: page fault (#PF); the faulting address is in CR2.
pub const VEC_PAGE_FAULT: u64 = 14;

/// Human name of a CPU exception vector.
pub const fn exception_name(v: u64) -> &'static str {
    match v {
        0 => "divide error",
        1 => "debug",
        2 => "NMI",
        3 => "breakpoint",
        4 => "overflow",
        5 => "bound range",
        6 => "invalid opcode",
        7 => "device not available",
        8 => "double fault",
        10 => "invalid TSS",
        11 => "segment not present",
        12 => "stack-segment fault",
        13 => "general protection",
        14 => "page fault",
        16 => "x87 floating point",
        17 => "alignment check",
        18 => "machine check",
        19 => "SIMD floating point",
        _ => "exception",
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn frame_size_matches_stub_constant() {
        assert_eq!(
            core::mem::size_of::<super::TrapFrame>(),
            super::TRAPFRAME_SIZE
        );
    }
}

#[cfg(test)]
mod seal_tests {
    use super::*;

    #[test]
    fn any_one_changed_word_changes_the_seal() {
        let ctx = [7u64; SWITCH_CONTEXT_WORDS];
        let frame: [u64; TRAP_FRAME_WORDS] = core::array::from_fn(|i| i as u64 * 0x1234_5678);
        let s = seal(&ctx, &frame);
        assert_ne!(s, 0);
        for i in 0..SWITCH_CONTEXT_WORDS {
            let mut c = ctx;
            c[i] ^= 1 << (i * 9 % 64);
            assert_ne!(seal(&c, &frame), s, "context word {i}");
        }
        for i in 0..TRAP_FRAME_WORDS {
            let mut f = frame;
            f[i] = f[i].wrapping_add(0xdead_beef);
            assert_ne!(seal(&ctx, &f), s, "frame word {i}");
        }
    }

    #[test]
    fn a_swap_of_neighbouring_words_changes_the_seal() {
        let ctx: [u64; SWITCH_CONTEXT_WORDS] = core::array::from_fn(|i| 0x1000 + i as u64);
        let frame: [u64; TRAP_FRAME_WORDS] = core::array::from_fn(|i| (i as u64 + 3) << 20);
        let s = seal(&ctx, &frame);
        for i in 0..TRAP_FRAME_WORDS - 1 {
            let mut f = frame;
            f.swap(i, i + 1);
            assert_ne!(seal(&ctx, &f), s, "frame words {i} and {}", i + 1);
        }
        for i in 0..SWITCH_CONTEXT_WORDS - 1 {
            let mut c = ctx;
            c.swap(i, i + 1);
            assert_ne!(seal(&c, &frame), s, "context words {i} and {}", i + 1);
        }
    }
}
