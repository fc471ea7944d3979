//! The virtual machine: building it from a [`VmConfig`] and running it
//! until something decides its fate.
//!
//! This file builds the VM and answers questions about it; `vm/run.rs`
//! runs it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use lazarus_abi::layout::IRQ_COM1;
use tracing::info;
use vm_memory::{GuestAddress, GuestMemoryBackend};
use vmm_sys_util::eventfd::EventFd;

use crate::boot::{BootParams, validate_cmdline, write_boot_structures};
use crate::config::{LAPIC_TIMER_HZ, MAX_VCPUS, VmConfig};
use crate::console::{ConsoleInput, ConsoleSink};
use crate::control::{ControlShared, VmControl};
use crate::cpu::{set_boot_msrs, setup_boot_cpu, supported_cpuid, vcpu_cpuid};
use crate::crash::CrashInfo;
use crate::devices::Devices;
use crate::error::{Error, Result};
use crate::handler::{CrashHandler, HandlerSetup};
use crate::hypercall::{ExtEvent, Hypercalls, Milestone};
use crate::kick::install_kick_handler;
use crate::kvm::open_kvm;
use crate::loader::{GuestLayout, KernelImage, initramfs_placement, load_initramfs};
use crate::memory::{GuestRam, create_guest_ram, validate_mem_size};
use crate::serial::SerialDevice;
use crate::stats::{ExitCounts, ExitStats};
use crate::vcpu::{Report, Vcpu, VcpuContext, VcpuEvent};
use crate::virtio::{VirtioBus, VirtioStatus};
use crate::watchdog::PendingHangs;

mod run;

/// KVM needs three pages for the TSS of real-mode emulation on Intel; put
/// them just below the BIOS area, far above any RAM we allow.
const KVM_TSS_ADDRESS: usize = 0xfffb_d000;

/// Why [`Vm::run`] returned.
#[derive(Debug)]
pub enum VmOutcome {
    /// The guest powered off with this status.
    PowerOff(i32),
    /// The guest crashed.
    Crash(Box<CrashInfo>),
    /// The guest asked to be rebooted (the caller decides how).
    RebootRequested,
    /// The configured stop milestone was reached.
    MilestoneReached(u64),
    /// The configured timeout expired.
    TimedOut,
    /// A [`StopHandle`] asked the VM to stop.
    Stopped,
}

/// Stops a running VM from another thread.
#[derive(Clone, Debug)]
pub struct StopHandle {
    events: Sender<Report>,
}

impl StopHandle {
    /// Makes the current (or next) [`Vm::run`] return [`VmOutcome::Stopped`].
    pub fn stop(&self) {
        let _ = self.events.send(Report {
            vcpu: None,
            event: VcpuEvent::StopRequested,
        });
    }
}

/// A lazarus virtual machine.
pub struct Vm {
    // Field order is drop order: vCPUs and the VM go before guest memory.
    vcpus: Vec<Vcpu>,
    vm_fd: Arc<VmFd>,
    _kvm: Kvm,
    _serial_irq: EventFd,
    ctx: Arc<VcpuContext>,
    console_in: ConsoleInput,
    events_tx: Sender<Report>,
    events_rx: Receiver<Report>,
    timeout: Option<Duration>,
    watchdog: Option<Duration>,
    created: Instant,
    layout: GuestLayout,
    mem: Arc<GuestRam>,
}

impl std::fmt::Debug for Vm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vm").field("layout", &self.layout).finish()
    }
}

/// The kernel command line with a word naming each virtio device added.
fn with_virtio_words(cmdline: &str, devices: usize) -> String {
    let mut words: Vec<String> = Vec::new();
    if !cmdline.trim().is_empty() {
        words.push(cmdline.trim().to_string());
    }
    words.extend(crate::virtio::cmdline_words(devices));
    words.join(" ")
}

impl Vm {
    /// Builds a VM: validates the inputs, opens KVM, allocates RAM, loads
    /// the kernel and initramfs, writes the boot structures and prepares
    /// the devices and vCPUs. Bad input is reported before KVM is touched.
    pub fn new(config: VmConfig) -> Result<Vm> {
        let created = Instant::now();
        let mem_size = config.mem_size;
        validate_mem_size(mem_size)?;
        if !(1..=MAX_VCPUS).contains(&config.vcpus) {
            return Err(Error::InvalidVcpuCount {
                count: config.vcpus,
                max: MAX_VCPUS,
            });
        }
        crate::virtio::check_count(config.virtio.len())?;
        let cmdline = with_virtio_words(&config.cmdline, config.virtio.len());
        validate_cmdline(&cmdline)?;
        let image = KernelImage::parse(&config.kernel)?;
        image.check_fits(mem_size)?;
        let initramfs_len = config.initramfs.len() as u64;
        initramfs_placement(image.phys_end, initramfs_len, mem_size)?;

        install_kick_handler()?;
        let kvm = open_kvm(&config.kvm_device)?;
        let vm_fd = kvm.create_vm().map_err(Error::kvm("KVM_CREATE_VM"))?;
        if !crate::kvm::zap_only_deleted_slots(&vm_fd) {
            tracing::debug!("KVM zaps all shadow pages when a slot is deleted");
        }
        vm_fd
            .set_tss_address(KVM_TSS_ADDRESS)
            .map_err(Error::kvm("KVM_SET_TSS_ADDR"))?;
        vm_fd
            .create_irq_chip()
            .map_err(Error::kvm("KVM_CREATE_IRQCHIP"))?;

        let mem = Arc::new(create_guest_ram(mem_size)?);
        register_memory(&vm_fd, &mem, mem_size)?;

        image.load(&mem)?;
        let initramfs_phys = load_initramfs(&mem, image.phys_end, &config.initramfs)?;
        let layout = GuestLayout {
            mem_size,
            vcpus: config.vcpus,
            kernel_entry: image.entry,
            kernel_phys_start: image.phys_start,
            kernel_phys_end: image.phys_end,
            initramfs_phys,
            initramfs_len,
        };
        write_boot_structures(
            &mem,
            &BootParams {
                num_cpus: config.vcpus,
                mem_size,
                kernel_phys_start: layout.kernel_phys_start,
                kernel_phys_end: layout.kernel_phys_end,
                initramfs_phys,
                initramfs_len,
                lapic_timer_hz: LAPIC_TIMER_HZ,
                cmdline: &cmdline,
            },
        )?;

        let serial_irq = EventFd::new(libc::EFD_NONBLOCK).map_err(Error::io("eventfd"))?;
        vm_fd
            .register_irqfd(&serial_irq, IRQ_COM1)
            .map_err(Error::kvm("KVM_IRQFD"))?;
        let serial = SerialDevice::new(
            serial_irq.try_clone().map_err(Error::io("eventfd clone"))?,
            ConsoleSink::new(config.console_out),
        );

        let virtio = Arc::new(VirtioBus::new(&vm_fd, &mem, config.virtio)?);

        let cpuid = supported_cpuid(&kvm)?;
        let mut vcpus = Vec::new();
        for id in 0..config.vcpus {
            let fd = vm_fd
                .create_vcpu(u64::from(id))
                .map_err(Error::kvm("KVM_CREATE_VCPU"))?;
            fd.set_cpuid2(&vcpu_cpuid(&cpuid, id)?)
                .map_err(Error::kvm("KVM_SET_CPUID2"))?;
            set_boot_msrs(&fd, id)?;
            if id == 0 {
                setup_boot_cpu(&fd, image.entry)?;
            }
            vcpus.push(Vcpu { id, fd });
        }

        let handler = match config.crash_handler {
            None => None,
            Some(builder) => Some(Mutex::new(
                builder
                    .build(&HandlerSetup {
                        vm_fd: &vm_fd,
                        mem: &mem,
                        layout: &layout,
                        kernel: &config.kernel,
                        initramfs: &config.initramfs,
                    })
                    .map_err(Error::CrashHandler)?,
            )),
        };
        let vm_fd = Arc::new(vm_fd);
        let ctx = Arc::new(VcpuContext {
            devices: Devices {
                mem: mem.clone(),
                serial: Arc::new(Mutex::new(serial)),
                hypercalls: Arc::new(Hypercalls::with_vcpus(config.vcpus)),
                stats: Arc::new(ExitStats::default()),
                virtio,
            },
            stop: Arc::new(AtomicBool::new(false)),
            guest_ready: Arc::new(AtomicBool::new(false)),
            stop_at_milestone: std::sync::atomic::AtomicU64::new(
                config.stop_at_milestone.unwrap_or(0),
            ),
            handler,
            crash_ended_run: AtomicBool::new(false),
            vm_fd: vm_fd.clone(),
            hang: PendingHangs::default(),
            handling: Arc::new(Mutex::new(None)),
            control: Arc::new(ControlShared::default()),
        });
        let (events_tx, events_rx) = channel();
        info!(
            mem_mib = mem_size >> 20,
            vcpus = config.vcpus,
            entry = format_args!("{:#x}", image.entry),
            kernel = format_args!(
                "[{:#x}, {:#x})",
                layout.kernel_phys_start, layout.kernel_phys_end
            ),
            initramfs = format_args!("{:#x}+{:#x}", initramfs_phys, initramfs_len),
            "VM created in {:?}",
            created.elapsed()
        );
        Ok(Vm {
            vcpus,
            vm_fd,
            _kvm: kvm,
            _serial_irq: serial_irq,
            ctx,
            console_in: config.console_in,
            events_tx,
            events_rx,
            timeout: config.timeout,
            watchdog: config.watchdog,
            created,
            layout,
            mem,
        })
    }

    /// Makes [`Vm::run`] return when the guest reports `milestone` (or
    /// never, with `None`), e.g. to time a reboot and then keep running.
    pub fn set_stop_milestone(&self, milestone: Option<u64>) {
        self.ctx
            .stop_at_milestone
            .store(milestone.unwrap_or(0), Ordering::Release);
    }

    /// The crash handler, to reach its concrete type (downcast through
    /// `Any`); `None` without one. Do not hold it while the VM runs: a
    /// crash waits for it.
    pub fn crash_handler(&self) -> Option<std::sync::MutexGuard<'_, Box<dyn CrashHandler>>> {
        self.ctx.handler.as_ref().map(crate::console::lock)
    }

    /// A cloneable handle for other threads (the control API): pause and
    /// resume, state, memory and counters, without owning the VM.
    pub fn control(&self) -> VmControl {
        VmControl {
            shared: self.ctx.control.clone(),
            mem: self.mem.clone(),
            hypercalls: self.ctx.devices.hypercalls.clone(),
            stats: self.ctx.devices.stats.clone(),
            handling: self.ctx.handling.clone(),
            layout: self.layout.clone(),
            created: self.created,
            virtio: self.ctx.devices.virtio.clone(),
        }
    }

    /// Each virtio device's state, in bus order.
    pub fn virtio_status(&self) -> Vec<VirtioStatus> {
        self.ctx.devices.virtio.statuses()
    }

    /// A handle that stops [`Vm::run`] from another thread.
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle {
            events: self.events_tx.clone(),
        }
    }

    /// Guest exits so far.
    pub fn exit_counts(&self) -> ExitCounts {
        self.ctx.devices.stats.snapshot()
    }

    /// Milestones the guest reported, by id.
    pub fn milestones(&self) -> Vec<Milestone> {
        self.ctx.devices.hypercalls.milestones()
    }

    /// One milestone, if reached.
    pub fn milestone(&self, id: u64) -> Option<Milestone> {
        self.ctx.devices.hypercalls.milestone(id)
    }

    /// Extension load/unload events reported by the guest, and the latest.
    pub fn ext_events(&self) -> (u64, Option<ExtEvent>) {
        self.ctx.devices.hypercalls.ext_events()
    }

    /// Hypercalls handled and rejected so far.
    pub fn hypercall_counts(&self) -> (u64, u64) {
        self.ctx.devices.hypercalls.counts()
    }

    /// Guest-physical address of the kernel's state root, once registered.
    pub fn root_gpa(&self) -> Option<u64> {
        self.ctx.devices.hypercalls.root_gpa()
    }

    /// The registered state root's header (with the heartbeat), read now.
    pub fn root_header(
        &self,
    ) -> std::result::Result<lazarus_abi::hypercall::RootHeader, crate::root::RootError> {
        let gpa = self
            .root_gpa()
            .ok_or(crate::root::RootError::NotRegistered)?;
        crate::root::read_header(&self.mem, gpa, crate::root::HEADER_SIZE)
    }

    /// Guest RAM.
    pub fn memory(&self) -> &GuestRam {
        &self.mem
    }

    /// The hypervisor's RSS and the guest RAM in it, now (see
    /// [`crate::usage::MemoryUsage`]).
    pub fn memory_usage(&self) -> crate::usage::MemoryUsage {
        crate::usage::MemoryUsage::sample(&self.mem)
    }

    /// A shared handle on guest RAM that outlives the VM: after a crash,
    /// the dump can be written from it while a new VM boots.
    pub fn memory_arc(&self) -> Arc<GuestRam> {
        self.mem.clone()
    }

    /// Where the kernel and initramfs were placed.
    pub fn layout(&self) -> &GuestLayout {
        &self.layout
    }

    /// When [`Vm::new`] started.
    pub fn created_at(&self) -> Instant {
        self.created
    }

    /// A vCPU's KVM handle, to inspect or change its state between runs.
    pub fn vcpu_fd(&self, id: u32) -> Option<&VcpuFd> {
        self.vcpus.iter().find(|v| v.id == id).map(|v| &v.fd)
    }

    /// The KVM VM handle (memory slots, interrupts) for later extensions.
    pub fn vm_fd(&self) -> &VmFd {
        &self.vm_fd
    }
}

/// What whole-VM snapshots (`crate::vmsnapshot`) read and write.
impl Vm {
    pub(crate) fn vcpus(&self) -> &[Vcpu] {
        &self.vcpus
    }

    pub(crate) fn kvm(&self) -> &Kvm {
        &self._kvm
    }

    pub(crate) fn context(&self) -> &VcpuContext {
        &self.ctx
    }
}

/// Guest RAM's KVM memory slot: slot 0, all of `mem` at guest-physical 0.
pub(crate) fn ram_region(mem: &GuestRam, mem_size: u64) -> Result<kvm_userspace_memory_region> {
    let host = mem
        .get_host_address(GuestAddress(0))
        .map_err(|e| Error::GuestMemory(format!("no host mapping for RAM: {e}")))?;
    Ok(kvm_userspace_memory_region {
        slot: 0,
        guest_phys_addr: 0,
        memory_size: mem_size,
        userspace_addr: host as u64,
        flags: 0,
    })
}

pub(crate) fn register_memory(vm_fd: &VmFd, mem: &GuestRam, mem_size: u64) -> Result<()> {
    let region = ram_region(mem, mem_size)?;
    // SAFETY: `host` is the start of one anonymous mapping of `mem_size`
    // bytes owned by `mem`; the `Vm` keeps that mapping alive until after
    // the VM file descriptor (and with it the slot) is closed.
    unsafe { vm_fd.set_user_memory_region(region) }
        .map_err(Error::kvm("KVM_SET_USER_MEMORY_REGION"))
}
