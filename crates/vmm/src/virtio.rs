//! The virtio devices: each behind its MMIO transport in a 4 KiB window at
//! `VIRTIO_MMIO_BASE + i * VIRTIO_MMIO_STRIDE`, interrupting on I/O APIC
//! pin `IRQ_VIRTIO_BASE + i` through a KVM irqfd, and named to the guest on
//! its command line (`virtio_mmio.device=4K@0xfed00000:5`), as Firecracker
//! does for Linux. The hypervisor knows a device only as a
//! [`VirtioDevice`]: what a block request means is the device crate's.
//!
//! Requests are processed synchronously on the vCPU thread that writes
//! `QueueNotify`, with the transport's mutex held, so once every vCPU is
//! stopped no request is half done. [`VirtioBus::pause`] makes sure none
//! starts either (a notification is only remembered, no interrupt raised)
//! while a crash handler works on the stopped machine; [`VirtioBus::resume`]
//! processes what was notified meanwhile, once.

use std::sync::{Arc, Mutex};

use kvm_ioctls::VmFd;
use lazarus_abi::layout::{
    IRQ_VIRTIO_BASE, MAX_VIRTIO_DEVICES, VIRTIO_MMIO_BASE, VIRTIO_MMIO_STRIDE,
};
use lazarus_virtio_mmio::{MmioTransport, TransportStats, VirtioDevice};
use tracing::warn;
use vmm_sys_util::eventfd::EventFd;

use crate::console::lock;
use crate::error::{Error, Result};
use crate::memory::GuestRam;

/// A device as the VM configuration hands it over.
pub type BoxedDevice = Box<dyn VirtioDevice>;

/// Where device `index` sits: its window's guest-physical base and its
/// I/O APIC pin.
pub fn placement(index: usize) -> (u64, u32) {
    (
        VIRTIO_MMIO_BASE + index as u64 * VIRTIO_MMIO_STRIDE,
        IRQ_VIRTIO_BASE + index as u32,
    )
}

/// The command-line words that name `count` devices to the guest.
pub fn cmdline_words(count: usize) -> Vec<String> {
    (0..count)
        .map(|i| {
            let (base, gsi) = placement(i);
            format!("virtio_mmio.device=4K@{base:#x}:{gsi}")
        })
        .collect()
}

/// Checks a device count before anything is built.
pub fn check_count(count: usize) -> Result<()> {
    if count > MAX_VIRTIO_DEVICES {
        return Err(Error::Setup(format!(
            "{count} virtio devices asked for, at most {MAX_VIRTIO_DEVICES} are supported"
        )));
    }
    Ok(())
}

/// What the control API and the tests see of one device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VirtioStatus {
    /// Its window's guest-physical base.
    pub base: u64,
    /// Its I/O APIC pin.
    pub gsi: u32,
    /// The virtio device id (2: block).
    pub device_id: u32,
    /// The device status register.
    pub status: u32,
    /// Whether the driver broke the ring contract and must reset it.
    pub needs_reset: bool,
    /// What it broke, if it did.
    pub fault: Option<String>,
    /// Requests, interrupts and faults so far.
    pub stats: TransportStats,
    /// Whether it is paused (only while a crash is handled).
    pub paused: bool,
}

struct Slot {
    base: u64,
    gsi: u32,
    transport: Mutex<MmioTransport<BoxedDevice>>,
}

/// Every virtio device of a VM.
#[derive(Default)]
pub struct VirtioBus {
    slots: Vec<Slot>,
}

impl std::fmt::Debug for VirtioBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.slots.iter().map(|s| (s.base, s.gsi)))
            .finish()
    }
}

impl VirtioBus {
    /// Puts `devices` on the bus in order, each with an irqfd on its pin.
    pub fn new(vm_fd: &VmFd, mem: &Arc<GuestRam>, devices: Vec<BoxedDevice>) -> Result<Self> {
        check_count(devices.len())?;
        let mut slots = Vec::with_capacity(devices.len());
        for (i, device) in devices.into_iter().enumerate() {
            let (base, gsi) = placement(i);
            let irq = EventFd::new(libc::EFD_NONBLOCK).map_err(Error::io("eventfd"))?;
            vm_fd
                .register_irqfd(&irq, gsi)
                .map_err(Error::kvm("KVM_IRQFD"))?;
            let transport = MmioTransport::new(device, mem.clone(), irq)
                .map_err(|e| Error::Setup(format!("virtio device {i}: {e}")))?;
            slots.push(Slot {
                base,
                gsi,
                transport: Mutex::new(transport),
            });
        }
        Ok(Self { slots })
    }

    /// Number of devices.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    fn find(&self, addr: u64, len: usize) -> Option<(&Slot, u64)> {
        self.slots.iter().find_map(|s| {
            let offset = addr.checked_sub(s.base)?;
            let end = offset.checked_add(len as u64)?;
            (end <= VIRTIO_MMIO_STRIDE).then_some((s, offset))
        })
    }

    /// A guest read at `addr`: `false` if no device's window holds it.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.find(addr, data.len()) {
            Some((slot, offset)) => {
                lock(&slot.transport).read(offset, data);
                true
            }
            None => false,
        }
    }

    /// A guest write at `addr`: `false` if no device's window holds it.
    /// A `QueueNotify` write returns once the queue is processed.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.find(addr, data.len()) {
            Some((slot, offset)) => {
                let mut t = lock(&slot.transport);
                let faults = t.stats().faults;
                t.write(offset, data);
                if t.stats().faults != faults {
                    warn!(
                        base = format_args!("{:#x}", slot.base),
                        "virtio device needs a reset: {}",
                        t.fault().map_or_else(String::new, ToString::to_string)
                    );
                }
                true
            }
            None => false,
        }
    }

    /// Stops every device from touching guest memory or interrupting.
    pub fn pause(&self) {
        for s in &self.slots {
            lock(&s.transport).pause();
        }
    }

    /// Lets every device run again; what was notified meanwhile is
    /// processed now, once.
    pub fn resume(&self) {
        for s in &self.slots {
            lock(&s.transport).resume();
        }
    }

    /// Resets the device whose register window starts at `base` (see
    /// `MmioTransport::reset_device`); `false` if there is none.
    pub fn reset_at(&self, base: u64) -> bool {
        match self.slots.iter().find(|s| s.base == base) {
            Some(s) => {
                lock(&s.transport).reset_device();
                true
            }
            None => false,
        }
    }

    /// Each device's state, in bus order.
    pub fn statuses(&self) -> Vec<VirtioStatus> {
        self.slots
            .iter()
            .map(|s| {
                let t = lock(&s.transport);
                VirtioStatus {
                    base: s.base,
                    gsi: s.gsi,
                    device_id: t.device().device_id(),
                    status: t.status(),
                    needs_reset: t.needs_reset(),
                    fault: t.fault().map(ToString::to_string),
                    stats: t.stats(),
                    paused: t.is_paused(),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_and_cmdline_agree() {
        assert_eq!(placement(0), (VIRTIO_MMIO_BASE, IRQ_VIRTIO_BASE));
        assert_eq!(
            cmdline_words(2),
            vec![
                "virtio_mmio.device=4K@0xfed00000:5".to_string(),
                "virtio_mmio.device=4K@0xfed01000:6".to_string()
            ]
        );
        assert!(check_count(MAX_VIRTIO_DEVICES).is_ok());
        assert!(check_count(MAX_VIRTIO_DEVICES + 1).is_err());
    }

    #[test]
    fn an_empty_bus_claims_nothing() {
        let bus = VirtioBus::default();
        let mut buf = [0u8; 4];
        assert!(!bus.read(VIRTIO_MMIO_BASE, &mut buf));
        assert!(!bus.write(VIRTIO_MMIO_BASE, &buf));
        bus.pause();
        bus.resume();
        assert!(bus.statuses().is_empty());
    }
}
