//! A guest driver in miniature, for the devices' tests (feature
//! `test-util`).
//!
//! [`TestDriver`] does through the MMIO registers what a virtio driver in
//! a guest does (spec 1.2, 3.1.1): reset, `ACKNOWLEDGE`, `DRIVER`, feature
//! negotiation, `FEATURES_OK`, queue set-up, `DRIVER_OK`. It lays out one
//! split ring in guest memory and writes descriptor chains into it, well
//! formed ([`TestDriver::add_chain`]) or not ([`TestDriver::write_desc`],
//! [`TestDriver::set_avail_idx`]). Guest memory errors panic: this is test
//! code, and the addresses are the test's own.

use std::sync::Arc;

use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use vm_memory::{Bytes, GuestAddress};

use crate::{GuestMemory, MmioTransport, VirtioDevice, regs, status};

/// Where the three parts of a split ring lie in guest memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingLayout {
    /// Entries.
    pub size: u16,
    /// Descriptor table (16-byte aligned).
    pub desc: u64,
    /// Available ring.
    pub avail: u64,
    /// Used ring (4-byte aligned).
    pub used: u64,
}

impl RingLayout {
    /// A ring of `size` entries laid out from `base` (16-byte aligned).
    pub fn at(base: u64, size: u16) -> Self {
        let desc = base;
        let avail = desc + 16 * u64::from(size);
        let used = (avail + 6 + 2 * u64::from(size) + 3) & !3;
        Self {
            size,
            desc,
            avail,
            used,
        }
    }

    /// One past the ring's last byte.
    pub fn end(&self) -> u64 {
        self.used + 6 + 8 * u64::from(self.size)
    }
}

/// One buffer of a chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buf {
    /// Guest-physical address.
    pub addr: u64,
    /// Length.
    pub len: u32,
    /// Device-writable.
    pub writable: bool,
}

impl Buf {
    /// A buffer the device reads.
    pub fn read(addr: u64, len: u32) -> Self {
        Self {
            addr,
            len,
            writable: false,
        }
    }

    /// A buffer the device writes.
    pub fn write(addr: u64, len: u32) -> Self {
        Self {
            addr,
            len,
            writable: true,
        }
    }
}

/// The step of the initialization the device refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitError {
    /// Magic, version or device id are not what a virtio 1.x device shows.
    Identity {
        /// Magic value read.
        magic: u32,
        /// Version read.
        version: u32,
    },
    /// `FEATURES_OK` did not stick.
    FeaturesRefused,
    /// The queue is smaller than the ring the driver wanted.
    QueueTooSmall {
        /// `QueueNumMax`.
        max: u32,
    },
    /// The device went into `DEVICE_NEEDS_RESET` (status read back).
    NeedsReset(u32),
}

/// The driver side of one virtqueue.
pub struct TestDriver {
    mem: Arc<GuestMemory>,
    ring: RingLayout,
    queue: u32,
    next_desc: u16,
    avail_idx: u16,
    last_used: u16,
}

impl TestDriver {
    /// A driver for queue 0 whose ring lies at `ring`.
    pub fn new(mem: Arc<GuestMemory>, ring: RingLayout) -> Self {
        Self {
            mem,
            ring,
            queue: 0,
            next_desc: 0,
            avail_idx: 0,
            last_used: 0,
        }
    }

    /// The ring's layout.
    pub fn ring(&self) -> RingLayout {
        self.ring
    }

    /// Guest memory.
    pub fn mem(&self) -> &GuestMemory {
        &self.mem
    }

    /// Reads a 32-bit register.
    pub fn read_reg<D: VirtioDevice>(t: &MmioTransport<D>, reg: u32) -> u32 {
        let mut data = [0u8; 4];
        t.read(u64::from(reg), &mut data);
        u32::from_le_bytes(data)
    }

    /// Writes a 32-bit register.
    pub fn write_reg<D: VirtioDevice>(t: &mut MmioTransport<D>, reg: u32, value: u32) {
        t.write(u64::from(reg), &value.to_le_bytes());
    }

    /// The whole initialization; `choose` picks the driver's features
    /// from the device's offer. Returns the negotiated features.
    pub fn init<D: VirtioDevice>(
        &mut self,
        t: &mut MmioTransport<D>,
        choose: impl FnOnce(u64) -> u64,
    ) -> Result<u64, InitError> {
        let features = self.negotiate(t, choose)?;
        self.setup_queue(t)?;
        self.driver_ok(t)?;
        Ok(features)
    }

    /// Reset, `ACKNOWLEDGE`, `DRIVER`, features, `FEATURES_OK`.
    pub fn negotiate<D: VirtioDevice>(
        &mut self,
        t: &mut MmioTransport<D>,
        choose: impl FnOnce(u64) -> u64,
    ) -> Result<u64, InitError> {
        Self::write_reg(t, regs::STATUS, 0);
        self.next_desc = 0;
        self.avail_idx = 0;
        self.last_used = 0;
        let magic = Self::read_reg(t, regs::MAGIC_VALUE);
        let version = Self::read_reg(t, regs::VERSION);
        if magic != crate::MMIO_MAGIC || version != 2 || Self::read_reg(t, regs::DEVICE_ID) == 0 {
            return Err(InitError::Identity { magic, version });
        }
        Self::write_reg(t, regs::STATUS, status::ACKNOWLEDGE);
        Self::write_reg(t, regs::STATUS, status::ACKNOWLEDGE | status::DRIVER);
        let mut offered = 0u64;
        for word in 0..2u32 {
            Self::write_reg(t, regs::DEVICE_FEATURES_SEL, word);
            offered |= u64::from(Self::read_reg(t, regs::DEVICE_FEATURES)) << (32 * word);
        }
        let features = choose(offered);
        for word in 0..2u32 {
            Self::write_reg(t, regs::DRIVER_FEATURES_SEL, word);
            Self::write_reg(t, regs::DRIVER_FEATURES, (features >> (32 * word)) as u32);
        }
        let s = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK;
        Self::write_reg(t, regs::STATUS, s);
        if Self::read_reg(t, regs::STATUS) & status::FEATURES_OK == 0 {
            return Err(InitError::FeaturesRefused);
        }
        Ok(features)
    }

    /// Zeroes the ring and hands its layout to the device.
    pub fn setup_queue<D: VirtioDevice>(
        &mut self,
        t: &mut MmioTransport<D>,
    ) -> Result<(), InitError> {
        let zeros = vec![0u8; (self.ring.end() - self.ring.desc) as usize];
        self.mem
            .write_slice(&zeros, GuestAddress(self.ring.desc))
            .expect("ring inside guest memory");
        Self::write_reg(t, regs::QUEUE_SEL, self.queue);
        let max = Self::read_reg(t, regs::QUEUE_NUM_MAX);
        if max < u32::from(self.ring.size) {
            return Err(InitError::QueueTooSmall { max });
        }
        self.program_queue(t, u32::from(self.ring.size), self.ring);
        Self::write_reg(t, regs::QUEUE_READY, 1);
        let s = Self::read_reg(t, regs::STATUS);
        if s & status::NEEDS_RESET != 0 {
            return Err(InitError::NeedsReset(s));
        }
        Ok(())
    }

    /// Writes the queue registers (size and addresses) without checking.
    pub fn program_queue<D: VirtioDevice>(
        &self,
        t: &mut MmioTransport<D>,
        num: u32,
        ring: RingLayout,
    ) {
        Self::write_reg(t, regs::QUEUE_SEL, self.queue);
        Self::write_reg(t, regs::QUEUE_NUM, num);
        for (low, high, addr) in [
            (regs::QUEUE_DESC_LOW, regs::QUEUE_DESC_HIGH, ring.desc),
            (regs::QUEUE_AVAIL_LOW, regs::QUEUE_AVAIL_HIGH, ring.avail),
            (regs::QUEUE_USED_LOW, regs::QUEUE_USED_HIGH, ring.used),
        ] {
            Self::write_reg(t, low, addr as u32);
            Self::write_reg(t, high, (addr >> 32) as u32);
        }
    }

    /// Sets `DRIVER_OK`.
    pub fn driver_ok<D: VirtioDevice>(&self, t: &mut MmioTransport<D>) -> Result<(), InitError> {
        let s = Self::read_reg(t, regs::STATUS);
        Self::write_reg(t, regs::STATUS, s | status::DRIVER_OK);
        let s = Self::read_reg(t, regs::STATUS);
        if s & status::NEEDS_RESET != 0 {
            return Err(InitError::NeedsReset(s));
        }
        Ok(())
    }

    /// Writes descriptor `index` as it is given.
    pub fn write_desc(&self, index: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let base = self.ring.desc + 16 * u64::from(index);
        let m = &self.mem;
        m.write_obj(addr.to_le(), GuestAddress(base)).expect("desc");
        m.write_obj(len.to_le(), GuestAddress(base + 8))
            .expect("desc");
        m.write_obj(flags.to_le(), GuestAddress(base + 12))
            .expect("desc");
        m.write_obj(next.to_le(), GuestAddress(base + 14))
            .expect("desc");
    }

    /// Writes `bufs` as one chain in the next free descriptors and makes
    /// it available (without notifying). Returns its head.
    pub fn add_chain(&mut self, bufs: &[Buf]) -> u16 {
        assert!(!bufs.is_empty() && bufs.len() <= usize::from(self.ring.size));
        let size = self.ring.size;
        let head = self.next_desc;
        for (i, buf) in bufs.iter().enumerate() {
            let index = (head + i as u16) % size;
            let next = (index + 1) % size;
            let mut flags = 0u16;
            if buf.writable {
                flags |= VRING_DESC_F_WRITE as u16;
            }
            if i + 1 < bufs.len() {
                flags |= VRING_DESC_F_NEXT as u16;
            }
            self.write_desc(index, buf.addr, buf.len, flags, next);
        }
        self.next_desc = (head + bufs.len() as u16) % size;
        self.push_avail(head);
        head
    }

    /// Puts `head` in the next available ring entry and publishes it.
    pub fn push_avail(&mut self, head: u16) {
        let slot = u64::from(self.avail_idx % self.ring.size);
        self.mem
            .write_obj(head.to_le(), GuestAddress(self.ring.avail + 4 + 2 * slot))
            .expect("avail");
        let next = self.avail_idx.wrapping_add(1);
        self.set_avail_idx(next);
    }

    /// Writes the available ring's `idx` as it is given.
    pub fn set_avail_idx(&mut self, idx: u16) {
        self.avail_idx = idx;
        self.mem
            .write_obj(idx.to_le(), GuestAddress(self.ring.avail + 2))
            .expect("avail idx");
    }

    /// Writes `QueueNotify`.
    pub fn notify<D: VirtioDevice>(&self, t: &mut MmioTransport<D>) {
        Self::write_reg(t, regs::QUEUE_NOTIFY, self.queue);
    }

    /// The used ring's `idx` as the device left it.
    pub fn used_idx(&self) -> u16 {
        self.mem
            .read_obj::<u16>(GuestAddress(self.ring.used + 2))
            .map(u16::from_le)
            .expect("used idx")
    }

    /// The next used element not seen yet: `(id, len)`.
    pub fn pop_used(&mut self) -> Option<(u32, u32)> {
        if self.used_idx() == self.last_used {
            return None;
        }
        let slot = u64::from(self.last_used % self.ring.size);
        let at = self.ring.used + 4 + 8 * slot;
        let id = self.mem.read_obj::<u32>(GuestAddress(at)).expect("used");
        let len = self
            .mem
            .read_obj::<u32>(GuestAddress(at + 4))
            .expect("used");
        self.last_used = self.last_used.wrapping_add(1);
        Some((u32::from_le(id), u32::from_le(len)))
    }

    /// Reads and acknowledges `InterruptStatus`; returns what was set.
    pub fn ack_interrupt<D: VirtioDevice>(t: &mut MmioTransport<D>) -> u32 {
        let bits = Self::read_reg(t, regs::INTERRUPT_STATUS);
        Self::write_reg(t, regs::INTERRUPT_ACK, bits);
        bits
    }
}
