//! x86-64 specifics: descriptor tables, trap entry, interrupt controllers.

pub mod apic;
pub mod cpu;
pub mod gdt;
pub mod idt;
pub mod percpu;
pub mod serial;
pub mod tlb;
