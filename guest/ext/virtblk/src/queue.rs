//! The split virtqueue (virtio 1.2, 2.7) in one page of DMA memory, and
//! the request slots that use it: slot `r` owns descriptors
//! `r * DESCS_PER_REQ ..` (header, data segments, status), so a
//! completion's id names its slot and nothing needs a free list.

use core::sync::atomic::{Ordering, fence};

use lazarus_extsdk::abi::ext::DmaSeg;
use lazarus_extsdk::dev::DmaBuf;

/// Requests in flight at once.
pub const MAX_INFLIGHT: usize = 4;
/// Descriptors of one request: header, up to `MAX_SEGS` data, status.
pub const DESCS_PER_REQ: usize = 32;
/// Data segments of one request (a 64 KiB buffer spans at most 17 pages).
pub const MAX_SEGS: usize = DESCS_PER_REQ - 2;
/// Queue size.
pub const QUEUE_SIZE: u16 = (MAX_INFLIGHT * DESCS_PER_REQ) as u16;

const DESC_BYTES: usize = 16;
/// Offsets in the ring page: descriptor table, available ring, used ring.
pub const DESC_OFF: usize = 0;
pub const AVAIL_OFF: usize = DESC_OFF + QUEUE_SIZE as usize * DESC_BYTES;
pub const USED_OFF: usize = AVAIL_OFF + 4 + 2 * QUEUE_SIZE as usize + 2 + 2;
const RING_END: usize = USED_OFF + 4 + 8 * QUEUE_SIZE as usize + 2;
const _: () = assert!(RING_END <= 4096 && USED_OFF.is_multiple_of(4));

const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;

/// The request header (virtio 1.2, 5.2.6).
pub const HEADER_BYTES: usize = 16;
/// Each slot's header and status byte in the request page.
const SLOT_BYTES: usize = 32;
/// Where the device puts a `GET_ID` answer in the request page.
pub const ID_OFF: usize = MAX_INFLIGHT * SLOT_BYTES;

/// One buffer of a chain.
#[derive(Clone, Copy)]
pub struct Buf {
    pub addr: u64,
    pub len: u32,
    pub device_writes: bool,
}

impl Buf {
    pub fn from_seg(s: &DmaSeg, device_writes: bool) -> Buf {
        Buf {
            addr: s.addr,
            len: s.len as u32,
            device_writes,
        }
    }
}

/// The rings of queue 0.
pub struct Queue {
    pub ring: DmaBuf,
    pub reqs: DmaBuf,
    avail_idx: u16,
    last_used: u16,
}

impl Queue {
    pub fn new(ring: DmaBuf, reqs: DmaBuf) -> Queue {
        Queue {
            ring,
            reqs,
            avail_idx: 0,
            last_used: 0,
        }
    }

    fn at<T>(&self, off: usize) -> *mut T {
        // SAFETY (callers): every offset used is inside the one-page ring
        // or request buffer, and aligned for `T` (checked at compile time
        // above for the rings).
        self.ring.as_ptr().wrapping_add(off).cast()
    }

    fn req_at<T>(&self, off: usize) -> *mut T {
        self.reqs.as_ptr().wrapping_add(off).cast()
    }

    /// Guest-physical address of slot `r`'s status byte.
    fn status_phys(&self, r: usize) -> u64 {
        self.reqs.phys() + (r * SLOT_BYTES + HEADER_BYTES) as u64
    }

    /// The `GET_ID` answer area: its kernel and physical address.
    pub fn id_area(&self) -> (*const u8, u64) {
        (
            self.req_at::<u8>(ID_OFF).cast_const(),
            self.reqs.phys() + ID_OFF as u64,
        )
    }

    /// Writes slot `r`'s chain (header, `data`, status) and makes it
    /// available. The caller notifies the device.
    pub fn push(&mut self, r: usize, kind: u32, sector: u64, data: &[Buf]) {
        let hdr = self.req_at::<u8>(r * SLOT_BYTES);
        // SAFETY: slot `r`'s 32 bytes of the request page are the driver's
        // while the slot is free; the device reads them only after the
        // chain is made available below.
        unsafe {
            hdr.cast::<u32>().write_volatile(kind);
            hdr.add(4).cast::<u32>().write_volatile(0);
            hdr.add(8).cast::<u64>().write_volatile(sector);
            hdr.add(HEADER_BYTES).write_volatile(0xff);
        }
        let head = r * DESCS_PER_REQ;
        let mut bufs = [Buf {
            addr: 0,
            len: 0,
            device_writes: false,
        }; DESCS_PER_REQ];
        bufs[0] = Buf {
            addr: self.reqs.phys() + (r * SLOT_BYTES) as u64,
            len: HEADER_BYTES as u32,
            device_writes: false,
        };
        let n = data.len().min(MAX_SEGS);
        bufs[1..=n].copy_from_slice(&data[..n]);
        bufs[n + 1] = Buf {
            addr: self.status_phys(r),
            len: 1,
            device_writes: true,
        };
        for (i, b) in bufs[..n + 2].iter().enumerate() {
            let last = i == n + 1;
            let d = self.at::<u8>(DESC_OFF + (head + i) * DESC_BYTES);
            let flags = if b.device_writes { F_WRITE } else { 0 } | if last { 0 } else { F_NEXT };
            // SAFETY: descriptor `head + i` is slot `r`'s, inside the table.
            unsafe {
                d.cast::<u64>().write_volatile(b.addr);
                d.add(8).cast::<u32>().write_volatile(b.len);
                d.add(12).cast::<u16>().write_volatile(flags);
                d.add(14).cast::<u16>().write_volatile(if last {
                    0
                } else {
                    (head + i + 1) as u16
                });
            }
        }
        let slot = self.avail_idx % QUEUE_SIZE;
        // SAFETY: the available ring's entries and index are the driver's.
        unsafe {
            self.at::<u16>(AVAIL_OFF + 4 + 2 * slot as usize)
                .write_volatile(head as u16);
        }
        // The entry before the index that publishes it (2.7.13).
        fence(Ordering::SeqCst);
        self.avail_idx = self.avail_idx.wrapping_add(1);
        // SAFETY: as above.
        unsafe { self.at::<u16>(AVAIL_OFF + 2).write_volatile(self.avail_idx) };
        fence(Ordering::SeqCst);
    }

    /// The next completion the device published, if any: (descriptor id,
    /// bytes written).
    pub fn pop_used(&mut self) -> Option<(u32, u32)> {
        // SAFETY: the used ring is inside the ring page; the device writes
        // it, so it is read with volatile loads.
        let idx = unsafe { self.at::<u16>(USED_OFF + 2).read_volatile() };
        if idx == self.last_used {
            return None;
        }
        fence(Ordering::SeqCst);
        let e = USED_OFF + 4 + 8 * (self.last_used % QUEUE_SIZE) as usize;
        // SAFETY: as above.
        let (id, len) = unsafe {
            (
                self.at::<u32>(e).read_volatile(),
                self.at::<u32>(e + 4).read_volatile(),
            )
        };
        self.last_used = self.last_used.wrapping_add(1);
        Some((id, len))
    }

    /// Slot `r`'s status byte as the device left it.
    pub fn status(&self, r: usize) -> u8 {
        // SAFETY: inside the request page.
        unsafe {
            self.req_at::<u8>(r * SLOT_BYTES + HEADER_BYTES)
                .read_volatile()
        }
    }
}
