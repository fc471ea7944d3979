//! The IDT and the assembly entry stubs.
//!
//! Every vector gets a stub that pushes a uniform [`TrapFrame`] and calls
//! `trap_dispatch`. The frame layout is the ABI crate's, so the scheduler,
//! the crash record and the repair image all agree on it. (The `x86_64`
//! crate's `extern "x86-interrupt"` handlers need nightly and hide the
//! frame, hence hand-written stubs.)

use core::arch::{asm, global_asm};
use core::ptr::addr_of;
use lazarus_abi::layout::SEL_KERNEL_CS;

global_asm!(
    r#"
.altmacro
.macro make_stub n
    .balign 16
isr_stub_\n:
    .if (\n == 8) || (\n == 10) || (\n == 11) || (\n == 12) || (\n == 13) || (\n == 14) || (\n == 17) || (\n == 21) || (\n == 29) || (\n == 30)
    push \n
    .else
    push 0
    push \n
    .endif
    jmp trap_common
.endm

.macro stub_addr n
    .quad isr_stub_\n
.endm

.section .text
.global trap_common
trap_common:
    push rax
    push rbx
    push rcx
    push rdx
    push rsi
    push rdi
    push rbp
    push r8
    push r9
    push r10
    push r11
    push r12
    push r13
    push r14
    push r15
    mov rdi, rsp
    cld
    call trap_dispatch
.global trap_return
trap_return:
    // Returning to ring 3 (CS in the frame, 18 words up): leave the kernel.
    test qword ptr [rsp + 144], 3
    jz 1f
    call exit_to_user
1:
    pop r15
    pop r14
    pop r13
    pop r12
    pop r11
    pop r10
    pop r9
    pop r8
    pop rbp
    pop rdi
    pop rsi
    pop rdx
    pop rcx
    pop rbx
    pop rax
    add rsp, 16
    iretq

.set i, 0
.rept 256
    make_stub %i
    .set i, i+1
.endr

.section .rodata
.balign 8
.global isr_table
isr_table:
.set i, 0
.rept 256
    stub_addr %i
    .set i, i+1
.endr
.noaltmacro
.section .text
"#
);

unsafe extern "C" {
    static isr_table: [u64; 256];
    fn trap_return();
}

pub fn trap_return_addr() -> u64 {
    trap_return as *const () as u64
}

pub fn isr_table_addr() -> u64 {
    addr_of!(isr_table) as u64
}

pub fn idt_addr() -> u64 {
    (&raw const IDT) as u64
}

/// Loads the IDT again (after a repair rebuilt its entries).
pub fn reload() {
    let desc = Descriptor {
        limit: (16 * 256 - 1) as u16,
        base: idt_addr(),
    };
    // SAFETY: the IDT is a static table of valid gates.
    unsafe { asm!("lidt [{}]", in(reg) &desc, options(nostack)) };
}

#[repr(C, align(16))]
struct Idt([[u64; 2]; 256]);
static mut IDT: Idt = Idt([[0; 2]; 256]);

#[repr(C, packed)]
struct Descriptor {
    limit: u16,
    base: u64,
}

const fn gate(handler: u64, ist: u8) -> [u64; 2] {
    let low = (handler & 0xffff)
        | ((SEL_KERNEL_CS as u64) << 16)
        | ((ist as u64 & 7) << 32)
        | (0x8e << 40) // present, DPL 0, interrupt gate (IF cleared)
        | (((handler >> 16) & 0xffff) << 48);
    [low, handler >> 32]
}

pub fn init() {
    // SAFETY: single-threaded boot; the table is fully written before lidt.
    unsafe {
        let table = &*addr_of!(isr_table);
        let idt = &raw mut IDT;
        for (v, &h) in table.iter().enumerate() {
            let ist = match v {
                8 => 1,  // double fault
                2 => 2,  // NMI
                18 => 3, // machine check
                _ => 0,
            };
            (*idt).0[v] = gate(h, ist);
        }
        let desc = Descriptor {
            limit: (16 * 256 - 1) as u16,
            base: idt as u64,
        };
        asm!("lidt [{}]", in(reg) &desc, options(nostack));
    }
}
