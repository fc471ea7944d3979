//! The lazarus kernel: a small preemptive multi-process kernel written to
//! be repairable. All state the repair image needs hangs off one root
//! structure (see `state`), registered with the hypervisor at boot.
#![no_std]
#![no_main]

extern crate alloc;

mod arch;
mod bkl;
mod boot;
mod config;
mod console;
mod crash;
mod elf;
mod ext;
mod fd;
mod file;
mod hypercall;
mod initramfs;
mod ipc;
mod irq;
mod klist;
mod klog;
mod lock;
mod mm;
mod pipe;
mod platform;
mod proc;
mod reclaim;
mod recovery;
mod sched;
mod smp;
mod state;
mod syscall;
mod tick;
mod timer;
mod trap;
mod uaccess;
mod wait;

use core::arch::global_asm;
use klog::kprintln;
use lazarus_abi::boot::{BOOT_MAGIC, BootInfo};
use lazarus_abi::hypercall::{HC_MILESTONE, HC_REGISTER_ROOT, MILESTONE_KERNEL_READY};
use lazarus_abi::layout::*;
use lazarus_abi::root::*;
use state::k;

const BOOT_STACK_SIZE: usize = 64 * 1024;

#[repr(C, align(16))]
struct BootStack([u8; BOOT_STACK_SIZE]);
#[unsafe(no_mangle)]
static mut BOOT_STACK: BootStack = BootStack([0; BOOT_STACK_SIZE]);

global_asm!(
    r#"
.section .text.boot
.global _start
_start:
    lea rsp, [rip + BOOT_STACK + {size}]
    xor ebp, ebp
    call kmain
    ud2
"#,
    size = const BOOT_STACK_SIZE,
);

unsafe extern "C" {
    static __text_start: u8;
    static __text_end: u8;
    static __kernel_end: u8;
}

#[unsafe(no_mangle)]
extern "C" fn kmain(info: &'static BootInfo) -> ! {
    arch::serial::init();
    if info.magic != BOOT_MAGIC || info.abi_version != ABI_VERSION {
        crash::panic_with(b"boot: bad BootInfo magic or ABI version");
    }
    kprintln!(
        "lazarus kernel {} booting, {} MiB RAM",
        env!("CARGO_PKG_VERSION"),
        info.mem_size >> 20
    );
    config::init(&info.cmdline);
    platform::init(&info.cmdline);
    arch::gdt::init(0);
    arch::idt::init();
    // From here on every kernel path holds the big kernel lock; the idle
    // loop drops it when it halts.
    bkl::lock();

    let r = k();
    r.header.magic = ROOT_MAGIC;
    r.header.abi_version = ABI_VERSION;
    r.header.root_size = core::mem::size_of::<KernelRoot>() as u32;
    r.mem_size = info.mem_size;
    r.master_pml4 = BOOT_PML4_GPA;
    r.next_pid = 1;
    // Linker-script symbols: only their addresses are used.
    r.kernel_text_start = &raw const __text_start as u64;
    r.kernel_text_end = &raw const __text_end as u64;
    r.recovery_entry = recovery::recovery_entry as *const () as u64;
    r.recovery_stack = (&raw const BOOT_STACK as u64) + BOOT_STACK_SIZE as u64;
    r.cpus[0].recovery_stack = r.recovery_stack;
    r.trap_return = arch::idt::trap_return_addr();
    r.idt = arch::idt::idt_addr();
    r.isr_table = arch::idt::isr_table_addr();
    for c in r.cpus.iter_mut() {
        c.irq_ext = NONE;
    }
    r.cpus[0].online = 1;
    arch::percpu::set_online(0, true);

    // Physical memory: everything below the kernel, the kernel itself, the
    // initramfs and the heap are taken.
    mm::frame::init(info.mem_size);
    let kernel_end = state::kernel_virt_to_phys(&raw const __kernel_end as u64);
    mm::frame::reserve(0, kernel_end.max(info.kernel_phys_end));
    mm::frame::reserve(
        info.initramfs_phys,
        info.initramfs_phys + info.initramfs_len,
    );
    let heap_phys = (kernel_end.max(info.initramfs_phys + info.initramfs_len) + LARGE_PAGE_SIZE
        - 1)
        & !(LARGE_PAGE_SIZE - 1);
    if heap_phys + mm::heap::HEAP_SIZE > info.mem_size {
        crash::panic_with(b"boot: not enough memory for the kernel heap");
    }
    mm::frame::reserve(heap_phys, heap_phys + mm::heap::HEAP_SIZE);
    // SAFETY: the range was just reserved and is mapped by the physmap.
    unsafe { mm::heap::init(mm::phys_to_virt(heap_phys), mm::heap::HEAP_SIZE) };
    init_kernel_regions();
    klist::init();
    initramfs::init(info.initramfs_phys, info.initramfs_len);

    let rc = hypercall::call(
        HC_REGISTER_ROOT,
        [
            state::root_phys(),
            core::mem::size_of::<KernelRoot>() as u64,
            ABI_VERSION as u64,
            0,
            0,
        ],
    );
    if rc != 0 {
        kprintln!("[kernel] warning: hypervisor refused the state root ({rc})");
    }

    arch::apic::init(info.lapic_timer_hz);
    arch::apic::ioapic_route(IRQ_COM1, VEC_COM1);
    console::on_interrupt();

    let console = Fd {
        kind: FD_CONSOLE,
        obj: 0,
    };
    match proc::spawn(&proc::SpawnArgs {
        path: b"/init",
        args: b"/init\0",
        fds: [console; 2],
    }) {
        Ok(_) => {}
        Err(_) => crash::panic_with(b"boot: cannot start /init"),
    }
    smp::start_aps(info.num_cpus, info.lapic_timer_hz);
    hypercall::call(HC_MILESTONE, [MILESTONE_KERNEL_READY, 0, 0, 0, 0]);
    sched::idle_loop()
}

/// Creates the shared page tables of the kernel-stack and extension
/// regions now, so every address space copied from the master PML4 later
/// sees mappings added under them.
fn init_kernel_regions() {
    let master = k().master_pml4;
    for region in [KSTACK_REGION, EXT_REGION] {
        // Mapping and unmapping one page creates every intermediate table.
        let Some(f) = mm::frame::alloc() else {
            crash::panic_with(b"boot: out of memory")
        };
        if mm::paging::map(master, region, f, mm::paging::W).is_err() {
            crash::panic_with(b"boot: out of memory");
        }
        mm::paging::unmap(master, region);
        mm::frame::free(f);
    }
}
