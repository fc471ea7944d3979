//! The register window, the device status state machine and the queue
//! processing loop.

use std::sync::Arc;

use tracing::{debug, warn};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::GuestAddress;
use vmm_sys_util::eventfd::EventFd;

use crate::{GuestMemory, RingFault, VirtioDevice, regs};

/// `MagicValue`: "virt" in little-endian.
pub const MMIO_MAGIC: u32 = 0x7472_6976;
/// `Version`: 2, the virtio 1.x (non-legacy) register layout.
pub const MMIO_VERSION: u32 = 2;
/// `VendorID`: "LAZR" in little-endian.
pub const VENDOR_ID: u32 = 0x525a_414c;
/// Size of one device's MMIO window: the registers (0x000..0x100) and the
/// configuration space (0x100..).
pub const MMIO_WINDOW_SIZE: u64 = 0x1000;
/// Most queues a device may have (pending notifications are a bit mask).
pub const MAX_QUEUES: usize = 64;
/// `InterruptStatus` bit: the device used buffers.
pub const INT_VRING: u32 = 1;
/// `InterruptStatus` bit: the configuration (or the status) changed.
pub const INT_CONFIG: u32 = 2;

/// Device status bits (virtio spec 1.2, 2.1).
pub mod status {
    /// The guest found the device.
    pub const ACKNOWLEDGE: u32 = 1;
    /// The guest knows how to drive it.
    pub const DRIVER: u32 = 2;
    /// The driver is set up and ready.
    pub const DRIVER_OK: u32 = 4;
    /// Feature negotiation is complete.
    pub const FEATURES_OK: u32 = 8;
    /// The device hit an error only a reset clears (set by the device).
    pub const NEEDS_RESET: u32 = 0x40;
    /// The driver gave up on the device.
    pub const FAILED: u32 = 0x80;
}
use status::{ACKNOWLEDGE, DRIVER, DRIVER_OK, FAILED, FEATURES_OK, NEEDS_RESET};

const VERSION_1: u64 = 1 << VIRTIO_F_VERSION_1;

/// A transport that cannot be built for a device, or a saved state that
/// does not fit it.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The device has no queue, or too many.
    #[error("a virtio device has 1 to {MAX_QUEUES} queues, not {0}")]
    QueueCount(usize),
    /// A queue's maximum size is not a power of two from 1 to 32768.
    #[error("queue {queue}: maximum size {size} is not a power of two from 1 to 32768")]
    QueueMaxSize {
        /// The queue.
        queue: usize,
        /// Its maximum size.
        size: u16,
    },
    /// A saved transport state that does not fit this device or memory.
    #[error("saved virtio transport state does not fit: {0}")]
    StateMismatch(String),
}

/// The queue registers as the driver wrote them, applied to the live queue
/// when the driver sets `QueueReady`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Shadow {
    pub(crate) num: u32,
    pub(crate) desc: u64,
    pub(crate) avail: u64,
    pub(crate) used: u64,
}

pub(crate) struct QueueSlot {
    pub(crate) max_size: u16,
    pub(crate) shadow: Shadow,
    pub(crate) queue: Queue,
}

/// Counters of what the transport saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransportStats {
    /// `QueueNotify` writes.
    pub notifies: u64,
    /// Notifications remembered while paused.
    pub deferred_notifies: u64,
    /// Notifications ignored: before `DRIVER_OK`, for a queue that is not
    /// ready or does not exist, or while the device needs a reset.
    pub ignored_notifies: u64,
    /// Descriptor chains completed (put in the used ring).
    pub chains: u64,
    /// Times the interrupt eventfd was signalled.
    pub interrupts: u64,
    /// Eventfd writes that failed.
    pub irq_errors: u64,
    /// Times the device went into `DEVICE_NEEDS_RESET`.
    pub faults: u64,
}

/// A virtio device behind its MMIO register window.
///
/// The hypervisor routes guest accesses to the window to
/// [`read`](Self::read) and [`write`](Self::write) (offsets relative to the
/// window's base) and keeps the transport behind a mutex shared by its
/// vCPUs.
pub struct MmioTransport<D> {
    pub(crate) device: D,
    pub(crate) mem: Arc<GuestMemory>,
    irq: EventFd,
    pub(crate) offered: u64,
    pub(crate) status: u32,
    pub(crate) device_features_sel: u32,
    pub(crate) driver_features_sel: u32,
    pub(crate) driver_features: u64,
    /// The driver wrote a non-zero feature word past bit 63.
    pub(crate) unknown_feature_words: bool,
    pub(crate) queue_sel: u32,
    pub(crate) queues: Vec<QueueSlot>,
    pub(crate) interrupt_status: u32,
    pub(crate) config_generation: u32,
    paused: bool,
    /// An interrupt was raised while paused; signalled at resume.
    irq_deferred: bool,
    /// Queues notified while paused (bit i: queue i).
    pub(crate) pending: u64,
    pub(crate) fault: Option<RingFault>,
    pub(crate) refusal: Option<String>,
    stats: TransportStats,
}

impl<D: VirtioDevice> MmioTransport<D> {
    /// A transport for `device`, reading and writing `mem` (guest RAM, and
    /// nothing else: the device can never reach another memory slot) and
    /// signalling `irq`.
    pub fn new(device: D, mem: Arc<GuestMemory>, irq: EventFd) -> Result<Self, TransportError> {
        let sizes = device.queue_max_sizes();
        if sizes.is_empty() || sizes.len() > MAX_QUEUES {
            return Err(TransportError::QueueCount(sizes.len()));
        }
        let queues = sizes
            .iter()
            .enumerate()
            .map(|(i, &size)| {
                Queue::new(size)
                    .map(|queue| QueueSlot {
                        max_size: size,
                        shadow: Shadow::default(),
                        queue,
                    })
                    .map_err(|_| TransportError::QueueMaxSize { queue: i, size })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let offered = device.features() | VERSION_1;
        Ok(Self {
            device,
            mem,
            irq,
            offered,
            status: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            unknown_feature_words: false,
            queue_sel: 0,
            queues,
            interrupt_status: 0,
            config_generation: 0,
            paused: false,
            irq_deferred: false,
            pending: 0,
            fault: None,
            refusal: None,
            stats: TransportStats::default(),
        })
    }

    /// A guest read of `data.len()` bytes at `offset` in the window.
    /// Registers are read as aligned 32-bit words (other accesses read
    /// zero); the configuration space at 0x100 in any width.
    pub fn read(&self, offset: u64, data: &mut [u8]) {
        let config = u64::from(regs::CONFIG);
        if offset >= config {
            data.fill(0);
            if in_window(offset, data.len()) {
                self.device.read_config(offset - config, data);
            }
            return;
        }
        if data.len() != 4 || !offset.is_multiple_of(4) {
            data.fill(0);
            return;
        }
        let value = match offset as u32 {
            regs::MAGIC_VALUE => MMIO_MAGIC,
            regs::VERSION => MMIO_VERSION,
            regs::DEVICE_ID => self.device.device_id(),
            regs::VENDOR_ID => VENDOR_ID,
            regs::DEVICE_FEATURES => match self.device_features_sel {
                0 => self.offered as u32,
                1 => (self.offered >> 32) as u32,
                _ => 0,
            },
            regs::QUEUE_NUM_MAX => self.selected().map_or(0, |q| u32::from(q.max_size)),
            regs::QUEUE_READY => self.selected().map_or(0, |q| u32::from(q.queue.ready())),
            regs::INTERRUPT_STATUS => self.interrupt_status,
            regs::STATUS => self.status,
            regs::CONFIG_GENERATION => self.config_generation,
            // No shared memory regions: their length reads as -1.
            regs::SHM_LEN_LOW | regs::SHM_LEN_HIGH => u32::MAX,
            _ => 0,
        };
        data.copy_from_slice(&value.to_le_bytes());
    }

    /// A guest write of `data` at `offset` in the window. A write to
    /// `QueueNotify` processes the queue before returning (unless paused).
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        let config = u64::from(regs::CONFIG);
        if offset >= config {
            if in_window(offset, data.len()) && self.status & DRIVER != 0 {
                self.device.write_config(offset - config, data);
            }
            return;
        }
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            debug!(
                offset,
                len = data.len(),
                "virtio-mmio: register write not 32 bits wide"
            );
            return;
        };
        if !offset.is_multiple_of(4) {
            return;
        }
        let value = u32::from_le_bytes(bytes);
        match offset as u32 {
            regs::DEVICE_FEATURES_SEL => self.device_features_sel = value,
            regs::DRIVER_FEATURES_SEL => self.driver_features_sel = value,
            regs::DRIVER_FEATURES => self.write_driver_features(value),
            regs::QUEUE_SEL => self.queue_sel = value,
            regs::QUEUE_NUM => self.write_queue_reg(|s| s.num = value),
            regs::QUEUE_DESC_LOW => self.write_queue_reg(|s| set_low(&mut s.desc, value)),
            regs::QUEUE_DESC_HIGH => self.write_queue_reg(|s| set_high(&mut s.desc, value)),
            regs::QUEUE_AVAIL_LOW => self.write_queue_reg(|s| set_low(&mut s.avail, value)),
            regs::QUEUE_AVAIL_HIGH => self.write_queue_reg(|s| set_high(&mut s.avail, value)),
            regs::QUEUE_USED_LOW => self.write_queue_reg(|s| set_low(&mut s.used, value)),
            regs::QUEUE_USED_HIGH => self.write_queue_reg(|s| set_high(&mut s.used, value)),
            regs::QUEUE_READY => self.write_queue_ready(value),
            regs::QUEUE_NOTIFY => self.notify(value),
            regs::INTERRUPT_ACK => self.interrupt_status &= !value,
            regs::STATUS => self.write_status(value),
            _ => debug!(
                offset,
                value, "virtio-mmio: write to a read-only or unknown register"
            ),
        }
    }

    /// Stops the device from touching guest memory: from now on a
    /// notification is only remembered, no descriptor is consumed or
    /// completed and no interrupt is raised. Register accesses still
    /// work. Since requests are processed synchronously, nothing is in
    /// flight once the caller holds the transport.
    pub fn pause(&mut self) {
        self.paused = true;
    }

    /// Undoes [`pause`](Self::pause): raises an interrupt held back while
    /// paused and processes every queue notified meanwhile, each once.
    pub fn resume(&mut self) {
        if !self.paused {
            return;
        }
        self.paused = false;
        if std::mem::take(&mut self.irq_deferred) {
            self.kick_irq();
        }
        let pending = std::mem::take(&mut self.pending);
        for queue in 0..self.queues.len() {
            if pending & (1 << queue) != 0 && self.can_process(queue) {
                self.process(queue);
            }
        }
    }

    /// Resets the device as a driver's write of 0 to `Status` would, for
    /// a hypervisor whose guest lost the driver (reset by a repair): the
    /// queues in the old driver's memory are forgotten, so nothing
    /// notified before is processed at [`resume`](Self::resume).
    pub fn reset_device(&mut self) {
        self.reset();
    }

    /// Whether the device is paused.
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// The device status register.
    pub fn status(&self) -> u32 {
        self.status
    }

    /// Whether the device is in `DEVICE_NEEDS_RESET`.
    pub fn needs_reset(&self) -> bool {
        self.status & NEEDS_RESET != 0
    }

    /// The fault that put the device in `DEVICE_NEEDS_RESET`.
    pub fn fault(&self) -> Option<&RingFault> {
        self.fault.as_ref()
    }

    /// Why the device last refused `FEATURES_OK`.
    pub fn feature_refusal(&self) -> Option<&str> {
        self.refusal.as_deref()
    }

    /// The `InterruptStatus` register.
    pub fn interrupt_status(&self) -> u32 {
        self.interrupt_status
    }

    /// The features the device offers (`VIRTIO_F_VERSION_1` included).
    pub fn offered_features(&self) -> u64 {
        self.offered
    }

    /// The features the driver accepted (meaningful once `FEATURES_OK`).
    pub fn driver_features(&self) -> u64 {
        self.driver_features
    }

    /// The eventfd the transport signals; the hypervisor registers it as
    /// an irqfd.
    pub fn irq(&self) -> &EventFd {
        &self.irq
    }

    /// The device.
    pub fn device(&self) -> &D {
        &self.device
    }

    /// The device, mutably.
    pub fn device_mut(&mut self) -> &mut D {
        &mut self.device
    }

    /// Queue `index` as `virtio-queue` holds it.
    pub fn queue(&self, index: usize) -> Option<&Queue> {
        self.queues.get(index).map(|q| &q.queue)
    }

    /// What the transport counted.
    pub fn stats(&self) -> TransportStats {
        self.stats
    }

    /// The device's configuration changed: bumps `ConfigGeneration` and,
    /// once the driver is live, raises a configuration-change interrupt.
    pub fn notify_config_change(&mut self) {
        self.config_generation = self.config_generation.wrapping_add(1);
        if self.status & DRIVER_OK != 0 {
            self.signal(INT_CONFIG);
        }
    }

    fn selected(&self) -> Option<&QueueSlot> {
        usize::try_from(self.queue_sel)
            .ok()
            .and_then(|i| self.queues.get(i))
    }

    /// Whether the device processes requests: `DRIVER_OK` set, no failure.
    fn is_live(&self) -> bool {
        self.status & DRIVER_OK != 0 && self.status & (FAILED | NEEDS_RESET) == 0
    }

    fn can_process(&self, queue: usize) -> bool {
        self.is_live() && self.queues.get(queue).is_some_and(|q| q.queue.ready())
    }

    /// Whether queue registers may be written now (spec 4.2.3.2: after
    /// `FEATURES_OK`, for a queue that is not ready).
    fn queue_setup_allowed(&self) -> bool {
        self.status & FEATURES_OK != 0 && self.status & (FAILED | NEEDS_RESET) == 0
    }

    fn write_driver_features(&mut self, value: u32) {
        if self.status != ACKNOWLEDGE | DRIVER {
            debug!("virtio-mmio: driver features written outside feature negotiation");
            return;
        }
        match self.driver_features_sel {
            0 => set_low(&mut self.driver_features, value),
            1 => set_high(&mut self.driver_features, value),
            _ if value != 0 => self.unknown_feature_words = true,
            _ => {}
        }
    }

    fn write_queue_reg(&mut self, f: impl FnOnce(&mut Shadow)) {
        if !self.queue_setup_allowed() {
            return;
        }
        let Some(slot) = usize::try_from(self.queue_sel)
            .ok()
            .and_then(|i| self.queues.get_mut(i))
        else {
            return;
        };
        if !slot.queue.ready() {
            f(&mut slot.shadow);
        }
    }

    fn write_queue_ready(&mut self, value: u32) {
        if !self.queue_setup_allowed() {
            return;
        }
        let Ok(index) = usize::try_from(self.queue_sel) else {
            return;
        };
        let Some(slot) = self.queues.get_mut(index) else {
            return;
        };
        if value == 0 {
            slot.queue.set_ready(false);
            return;
        }
        if slot.queue.ready() {
            return;
        }
        let (next_avail, next_used) = (slot.queue.next_avail(), slot.queue.next_used());
        match build_queue(slot.max_size, slot.shadow, next_avail, next_used, &self.mem) {
            Ok(queue) => slot.queue = queue,
            Err(reason) => self.fail(RingFault::QueueConfig {
                queue: index as u16,
                reason,
            }),
        }
    }

    fn write_status(&mut self, value: u32) {
        if value == 0 {
            self.reset();
            return;
        }
        if value & FAILED != 0 {
            self.status |= FAILED;
            return;
        }
        if self.status & (FAILED | NEEDS_RESET) != 0 {
            // Only a reset (or giving up) gets the device out of these.
            return;
        }
        let current = self.status;
        let added = value & !current;
        if value == current {
            return;
        }
        if value & current != current || added.count_ones() != 1 {
            debug!(
                current,
                value, "virtio-mmio: status write ignored (clears or skips a step)"
            );
            return;
        }
        match (current, added) {
            (0, ACKNOWLEDGE) | (ACKNOWLEDGE, DRIVER) => self.status = value,
            (c, FEATURES_OK) if c == ACKNOWLEDGE | DRIVER => match self.check_features() {
                Ok(()) => {
                    self.refusal = None;
                    self.status = value;
                }
                Err(reason) => {
                    debug!(%reason, "virtio-mmio: FEATURES_OK refused");
                    self.refusal = Some(reason);
                }
            },
            (c, DRIVER_OK) if c == ACKNOWLEDGE | DRIVER | FEATURES_OK => {
                self.status = value;
                let invalid = self
                    .queues
                    .iter()
                    .enumerate()
                    .find(|(_, q)| q.queue.ready() && !q.queue.is_valid(&*self.mem));
                if let Some((index, _)) = invalid {
                    self.fail(RingFault::QueueConfig {
                        queue: index as u16,
                        reason: "rings are not inside guest memory".to_string(),
                    });
                } else {
                    self.device.activate(self.driver_features);
                }
            }
            _ => debug!(
                current,
                value, "virtio-mmio: status write ignored (out of order)"
            ),
        }
    }

    /// The driver's feature set is acceptable, or why not.
    pub(crate) fn check_features(&self) -> Result<(), String> {
        if self.unknown_feature_words {
            return Err("the driver accepted feature bits past bit 63".to_string());
        }
        let unknown = self.driver_features & !self.offered;
        if unknown != 0 {
            return Err(format!(
                "the driver accepted feature bits {unknown:#x} the device does not offer"
            ));
        }
        if self.driver_features & VERSION_1 == 0 {
            return Err(
                "the driver did not accept VIRTIO_F_VERSION_1 (legacy drivers are not supported)"
                    .to_string(),
            );
        }
        Ok(())
    }

    /// A driver write of 0 to `Status`: everything back to its initial
    /// state, the device included.
    fn reset(&mut self) {
        self.status = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.driver_features = 0;
        self.unknown_feature_words = false;
        self.queue_sel = 0;
        for slot in &mut self.queues {
            slot.queue.reset();
            slot.shadow = Shadow::default();
        }
        self.interrupt_status = 0;
        self.irq_deferred = false;
        self.pending = 0;
        self.fault = None;
        self.refusal = None;
        self.device.reset();
    }

    fn notify(&mut self, value: u32) {
        self.stats.notifies += 1;
        let Some(queue) = usize::try_from(value).ok().filter(|&q| self.can_process(q)) else {
            self.stats.ignored_notifies += 1;
            debug!(
                value,
                status = self.status,
                "virtio-mmio: notification ignored"
            );
            return;
        };
        if self.paused {
            self.pending |= 1 << queue;
            self.stats.deferred_notifies += 1;
            return;
        }
        self.process(queue);
    }

    /// Completes every chain available on `queue` (at most a ring's worth:
    /// a chain made available later comes with its own notification).
    fn process(&mut self, queue: usize) {
        let Some(slot) = self.queues.get_mut(queue) else {
            return;
        };
        let (completed, fault) =
            run_queue(&mut self.device, &mut slot.queue, queue as u16, &self.mem);
        self.stats.chains += u64::from(completed);
        if completed > 0 {
            match slot.queue.needs_notification(&*self.mem) {
                Ok(true) => self.signal(INT_VRING),
                Ok(false) => {}
                Err(e) => {
                    self.fail(RingFault::Ring {
                        queue: queue as u16,
                        reason: e.to_string(),
                    });
                    return;
                }
            }
        }
        if let Some(fault) = fault {
            self.fail(fault);
        }
    }

    /// `DEVICE_NEEDS_RESET`: nothing is processed until the driver resets
    /// the device; a live driver gets a configuration-change interrupt.
    fn fail(&mut self, fault: RingFault) {
        warn!(%fault, "virtio device needs a reset");
        self.stats.faults += 1;
        self.status |= NEEDS_RESET;
        self.fault = Some(fault);
        self.pending = 0;
        if self.status & DRIVER_OK != 0 {
            self.signal(INT_CONFIG);
        }
    }

    fn signal(&mut self, bit: u32) {
        self.interrupt_status |= bit;
        if self.paused {
            self.irq_deferred = true;
        } else {
            self.kick_irq();
        }
    }

    fn kick_irq(&mut self) {
        self.stats.interrupts += 1;
        if let Err(e) = self.irq.write(1) {
            self.stats.irq_errors += 1;
            warn!(%e, "virtio-mmio: cannot signal the interrupt eventfd");
        }
    }
}

/// Pops and completes the chains available on `queue`.
fn run_queue<D: VirtioDevice>(
    device: &mut D,
    queue: &mut Queue,
    index: u16,
    mem: &GuestMemory,
) -> (u32, Option<RingFault>) {
    if !queue.is_valid(mem) {
        let fault = RingFault::QueueConfig {
            queue: index,
            reason: "rings are not inside guest memory".to_string(),
        };
        return (0, Some(fault));
    }
    let ring_fault = |e: virtio_queue::Error| RingFault::Ring {
        queue: index,
        reason: e.to_string(),
    };
    let mut completed = 0;
    for _ in 0..queue.size() {
        let chain = match queue.iter(mem) {
            Ok(mut avail) => avail.next(),
            Err(e) => return (completed, Some(ring_fault(e))),
        };
        let Some(chain) = chain else {
            break;
        };
        let head = chain.head_index();
        let len = match device.process_chain(index, chain, mem) {
            Ok(len) => len,
            Err(fault) => return (completed, Some(fault)),
        };
        if let Err(e) = queue.add_used(mem, head, len) {
            return (completed, Some(ring_fault(e)));
        }
        completed += 1;
    }
    (completed, None)
}

/// The live queue for the registers the driver wrote, or why not.
pub(crate) fn build_queue(
    max_size: u16,
    shadow: Shadow,
    next_avail: u16,
    next_used: u16,
    mem: &GuestMemory,
) -> Result<Queue, String> {
    let mut queue = Queue::new(max_size).map_err(|e| e.to_string())?;
    let size = u16::try_from(shadow.num)
        .ok()
        .filter(|&n| n != 0 && n <= max_size && n.is_power_of_two())
        .ok_or_else(|| {
            format!(
                "size {} is not a power of two from 1 to {max_size}",
                shadow.num
            )
        })?;
    queue.try_set_size(size).map_err(|e| e.to_string())?;
    queue
        .try_set_desc_table_address(GuestAddress(shadow.desc))
        .map_err(|_| format!("descriptor table {:#x} is not 16-byte aligned", shadow.desc))?;
    queue
        .try_set_avail_ring_address(GuestAddress(shadow.avail))
        .map_err(|_| format!("available ring {:#x} is not 2-byte aligned", shadow.avail))?;
    queue
        .try_set_used_ring_address(GuestAddress(shadow.used))
        .map_err(|_| format!("used ring {:#x} is not 4-byte aligned", shadow.used))?;
    if shadow.avail == 0 {
        // virtio-queue takes an available ring at 0 for an unset queue.
        return Err("an available ring at guest-physical 0 is not supported".to_string());
    }
    queue.set_next_avail(next_avail);
    queue.set_next_used(next_used);
    queue.set_ready(true);
    if !queue.is_valid(mem) {
        return Err(format!(
            "rings of {size} entries at {:#x} (descriptors), {:#x} (available), {:#x} (used) \
             are not inside guest memory",
            shadow.desc, shadow.avail, shadow.used
        ));
    }
    Ok(queue)
}

fn in_window(offset: u64, len: usize) -> bool {
    u64::try_from(len)
        .ok()
        .and_then(|len| offset.checked_add(len))
        .is_some_and(|end| end <= MMIO_WINDOW_SIZE)
}

fn set_low(reg: &mut u64, value: u32) {
    *reg = (*reg & !0xffff_ffff) | u64::from(value);
}

fn set_high(reg: &mut u64, value: u32) {
    *reg = (*reg & 0xffff_ffff) | (u64::from(value) << 32);
}
