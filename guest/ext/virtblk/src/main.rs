//! `/dev/vda`: a driver for the virtio block device (virtio 1.2 over
//! MMIO). `init` finds the device among the platform's, resets it,
//! negotiates features, sets up queue 0 in DMA memory and registers its
//! interrupt. Reads and writes go straight between the caller's pages and
//! the disk (the kernel hands their physical segments over, `user_dma`),
//! so no ring-0 loop copies data: on these hosts every ring-0 instruction
//! is emulated.
//!
//! A request waits for its completion: the device's answer is found in
//! the used ring, by the interrupt handler or by the waiting caller
//! itself, which polls after each tick, so a lost interrupt only delays
//! it. A request the device never answers fails with `EIO` after
//! [`REQUEST_TIMEOUT_TICKS`]. Positions are the kernel's: a request
//! names its own, so that the kernel can issue it again after a reset.
#![no_std]
#![no_main]

mod queue;
mod regs;

use core::cell::UnsafeCell;

use core::sync::atomic::{AtomicU32, Ordering};

use lazarus_extsdk::abi::dev::virtblk::{
    FAULT_BAD_DESCRIPTOR, ID_BYTES, IO_MAX, IOC_FAULT, IOC_FLUSH, IOC_GET_ID, IOC_SIZE, SECTOR,
};
use lazarus_extsdk::abi::ext::{DEVICE_VIRTIO_MMIO, DmaSeg, REPLAY_READ, REPLAY_WRITE, ioctl_bit};
use lazarus_extsdk::dev::{self, DmaBuf, Mmio};
use lazarus_extsdk::errno::{EBUSY, EINVAL, EIO, ENODEV, ENOMEM, ENOSPC, EROFS};
use lazarus_extsdk::sync::IrqGuard;
use lazarus_extsdk::user::copy_to_user;
use lazarus_extsdk::{api, declare_extension, klog};

use queue::{Buf, MAX_INFLIGHT, MAX_SEGS, QUEUE_SIZE, Queue};
use regs::*;

/// Ticks (10 ms) a request may take before it fails with `EIO`.
pub const REQUEST_TIMEOUT_TICKS: u64 = 200;

const T_IN: u32 = 0;
const T_OUT: u32 = 1;
const T_FLUSH: u32 = 4;
const T_GET_ID: u32 = 8;
/// `VIRTIO_BLK_S_OK`; anything else is an error.
const S_OK: u8 = 0;

/// A fault armed by `IOC_FAULT` for the next read or write.
static FAULT: AtomicU32 = AtomicU32::new(0);
/// Far outside any guest RAM (at most 3 GiB).
const BAD_ADDRESS: u64 = 0xffff_f000_0000;

#[derive(Clone, Copy, PartialEq, Eq)]
enum SlotState {
    Free,
    Submitted,
    /// Completed: the status byte and the bytes written.
    Done(u8, u32),
}

/// The driver's state: the device, its queue and the request slots.
struct Driver {
    mmio: Mmio,
    queue: Queue,
    irq: i32,
    /// Capacity in sectors.
    sectors: u64,
    read_only: bool,
    flush: bool,
    /// The device asked for a reset (a ring it could not trust): every
    /// request fails until the driver is reset.
    broken: bool,
    slots: [SlotState; MAX_INFLIGHT],
    /// Completions that named no request in flight.
    unknown_completions: u64,
    /// Times the driver reset the device after it asked for it.
    resets: u64,
}

/// The one driver, touched with interrupts off (the handler runs on the
/// CPU that holds the big kernel lock, possibly in the middle of a
/// request), and only under the big kernel lock, which serializes CPUs.
struct Global(UnsafeCell<Option<Driver>>);
// SAFETY: see above: every access is under the big kernel lock with
// interrupts disabled, so there is never more than one.
unsafe impl Sync for Global {}
static DRIVER: Global = Global(UnsafeCell::new(None));

/// Runs `f` on the driver with interrupts off.
fn with_driver<R>(f: impl FnOnce(&mut Driver) -> R) -> Option<R> {
    let _irq = IrqGuard::new();
    // SAFETY: see `Global`: interrupts are off and the big kernel lock is
    // held, so this is the only reference.
    let d = unsafe { &mut *DRIVER.0.get() };
    d.as_mut().map(f)
}

fn init() -> i32 {
    let Some(info) = (0..8)
        .filter_map(dev::device)
        .find(|d| d.kind == DEVICE_VIRTIO_MMIO && is_block(d.base, d.size))
    else {
        klog!("virtblk: no virtio block device");
        return -(ENODEV as i32);
    };
    match probe(info.base, info.size, info.gsi) {
        Ok(d) => {
            klog!(
                "virtblk: /dev/vda: {} MiB{} at {:#x}, irq {}",
                (d.sectors * SECTOR) >> 20,
                if d.read_only { ", read-only" } else { "" },
                info.base,
                info.gsi
            );
            // SAFETY: init runs before any device call or interrupt of ours.
            unsafe { *DRIVER.0.get() = Some(d) };
            0
        }
        Err(e) => {
            klog!("virtblk: device set-up failed ({})", e);
            e
        }
    }
}

fn is_block(base: u64, size: u64) -> bool {
    Mmio::map(base, size).is_some_and(|m| {
        m.read32(MAGIC_VALUE) == MAGIC
            && m.read32(VERSION) == MMIO_VERSION
            && m.read32(DEVICE_ID) == ID_BLOCK
    })
}

/// The driver initialisation of virtio 1.2, 3.1.1, up to (not
/// including) `DRIVER_OK`: reset, feature negotiation and queue 0 on
/// `ring`. Returns the features the device offered.
fn start(mmio: &Mmio, ring: &DmaBuf) -> Result<u64, i64> {
    // A reset first: after a repair the device may still hold the old
    // driver's queues.
    mmio.write32(STATUS, 0);
    mmio.write32(STATUS, S_ACKNOWLEDGE);
    mmio.write32(STATUS, S_ACKNOWLEDGE | S_DRIVER);
    let offered = features(mmio);
    if offered & F_VERSION_1 == 0 {
        return Err(EINVAL);
    }
    let wanted = F_VERSION_1 | (offered & (F_BLK_RO | F_BLK_FLUSH));
    mmio.write32(DRIVER_FEATURES_SEL, 0);
    mmio.write32(DRIVER_FEATURES, wanted as u32);
    mmio.write32(DRIVER_FEATURES_SEL, 1);
    mmio.write32(DRIVER_FEATURES, (wanted >> 32) as u32);
    mmio.write32(STATUS, S_ACKNOWLEDGE | S_DRIVER | S_FEATURES_OK);
    if mmio.read32(STATUS) & S_FEATURES_OK == 0 {
        return Err(EINVAL);
    }
    mmio.write32(QUEUE_SEL, 0);
    if mmio.read32(QUEUE_READY) != 0 || mmio.read32(QUEUE_NUM_MAX) < u32::from(QUEUE_SIZE) {
        return Err(EBUSY);
    }
    mmio.write32(QUEUE_NUM, u32::from(QUEUE_SIZE));
    let at = |off: usize| ring.phys() + off as u64;
    for (low, high, addr) in [
        (QUEUE_DESC_LOW, QUEUE_DESC_HIGH, at(queue::DESC_OFF)),
        (QUEUE_DRIVER_LOW, QUEUE_DRIVER_HIGH, at(queue::AVAIL_OFF)),
        (QUEUE_DEVICE_LOW, QUEUE_DEVICE_HIGH, at(queue::USED_OFF)),
    ] {
        mmio.write32(low, addr as u32);
        mmio.write32(high, (addr >> 32) as u32);
    }
    mmio.write32(QUEUE_READY, 1);
    Ok(offered)
}

const RUNNING: u32 = S_ACKNOWLEDGE | S_DRIVER | S_FEATURES_OK | S_DRIVER_OK;

fn probe(base: u64, size: u64, gsi: u32) -> Result<Driver, i32> {
    let mmio = Mmio::map(base, size).ok_or(-(ENOMEM as i32))?;
    let (Some(ring), Some(reqs)) = (DmaBuf::new(4096, 4096), DmaBuf::new(4096, 4096)) else {
        return fail(&mmio, ENOMEM);
    };
    let free = |ring: DmaBuf, reqs: DmaBuf| {
        // SAFETY: the device never got DRIVER_OK, so it never used them.
        unsafe {
            ring.free();
            reqs.free();
        }
    };
    let offered = match start(&mmio, &ring) {
        Ok(f) => f,
        Err(e) => {
            free(ring, reqs);
            return fail(&mmio, e);
        }
    };
    let sectors = u64::from(mmio.read32(CONFIG)) | (u64::from(mmio.read32(CONFIG + 4)) << 32);
    let irq = match dev::irq_register(gsi, on_interrupt, 0) {
        Ok(id) => id,
        Err(e) => {
            mmio.write32(STATUS, S_FAILED);
            free(ring, reqs);
            return Err(e);
        }
    };
    mmio.write32(STATUS, RUNNING);
    Ok(Driver {
        mmio,
        queue: Queue::new(ring, reqs),
        irq,
        sectors,
        read_only: offered & F_BLK_RO != 0,
        flush: offered & F_BLK_FLUSH != 0,
        broken: false,
        slots: [SlotState::Free; MAX_INFLIGHT],
        unknown_completions: 0,
        resets: 0,
    })
}

/// After the device asked for a reset (a ring it could not trust), with
/// no request in flight: the device and queue start afresh, as Linux's
/// virtio drivers recover. What was in flight already failed with `EIO`.
fn reset(d: &mut Driver) -> Result<(), i64> {
    d.queue.clear();
    start(&d.mmio, &d.queue.ring).inspect_err(|_| d.mmio.write32(STATUS, S_FAILED))?;
    d.mmio.write32(STATUS, RUNNING);
    d.broken = false;
    d.resets += 1;
    klog!("virtblk: device reset ({} so far)", d.resets);
    Ok(())
}

fn features(mmio: &Mmio) -> u64 {
    mmio.write32(DEVICE_FEATURES_SEL, 0);
    let low = mmio.read32(DEVICE_FEATURES);
    mmio.write32(DEVICE_FEATURES_SEL, 1);
    u64::from(low) | (u64::from(mmio.read32(DEVICE_FEATURES)) << 32)
}

fn fail<T>(mmio: &Mmio, errno: i64) -> Result<T, i32> {
    mmio.write32(STATUS, S_FAILED);
    Err(-(errno as i32))
}

extern "C" fn exit() {
    // The kernel unloads only with no open descriptors, so no request is
    // in flight.
    let _irq = IrqGuard::new();
    // SAFETY: as in `with_driver`.
    if let Some(d) = unsafe { (*DRIVER.0.get()).take() } {
        d.mmio.write32(STATUS, 0);
        dev::irq_unregister(d.irq);
        // SAFETY: the device was reset above and uses them no more.
        unsafe {
            d.queue.ring.free();
            d.queue.reqs.free();
        }
    }
}

/// The device's interrupt: acknowledge it, note a reset request, and
/// collect completions.
extern "C" fn on_interrupt(_arg: u64) {
    with_driver(|d| {
        let status = d.mmio.read32(INTERRUPT_STATUS);
        d.mmio.write32(INTERRUPT_ACK, status);
        if status & INT_CONFIG != 0 && d.mmio.read32(STATUS) & S_NEEDS_RESET != 0 {
            klog!("virtblk: the device needs a reset");
            d.broken = true;
        }
        reap(d);
    });
}

/// Moves every published completion to its slot.
fn reap(d: &mut Driver) {
    while let Some((id, len)) = d.queue.pop_used() {
        let r = id as usize / queue::DESCS_PER_REQ;
        let head = (id as usize).is_multiple_of(queue::DESCS_PER_REQ);
        match d.slots.get(r) {
            Some(SlotState::Submitted) if head => {
                d.slots[r] = SlotState::Done(d.queue.status(r), len);
            }
            _ => d.unknown_completions += 1,
        }
    }
}

/// Runs one request to completion: `Ok(bytes the device wrote)`.
fn request(kind: u32, sector: u64, data: &[Buf]) -> Result<u32, i64> {
    let start = (api().ticks)();
    // A free slot (they are all busy only while other callers sleep).
    let r = loop {
        let got = with_driver(|d| {
            if d.broken {
                // Reset once nothing is in flight any more.
                if d.slots.iter().any(|s| *s != SlotState::Free) {
                    return Err(EIO);
                }
                reset(d)?;
            }
            let Some(r) = d.slots.iter().position(|s| *s == SlotState::Free) else {
                return Ok(None);
            };
            d.slots[r] = SlotState::Submitted;
            d.queue.push(r, kind, sector, data);
            Ok(Some(r))
        })
        .ok_or(ENODEV)??;
        if let Some(r) = got {
            break r;
        }
        if (api().ticks)() - start > REQUEST_TIMEOUT_TICKS {
            return Err(EIO);
        }
        (api().sleep_ticks)(1);
    };
    // The device answers before this write returns (the hypervisor works
    // synchronously), but the driver does not rely on it.
    with_driver(|d| d.mmio.write32(QUEUE_NOTIFY, 0));
    loop {
        let state = with_driver(|d| {
            reap(d);
            let s = d.slots[r];
            // Done, or never to be done by a device that needs a reset.
            if matches!(s, SlotState::Done(..)) || d.broken {
                d.slots[r] = SlotState::Free;
            }
            (s, d.broken)
        })
        .ok_or(ENODEV)?;
        match state {
            (SlotState::Done(S_OK, len), _) => return Ok(len),
            (SlotState::Done(..), _) => return Err(EIO),
            (_, true) => return Err(EIO),
            _ => {}
        }
        if (api().ticks)() - start > REQUEST_TIMEOUT_TICKS {
            // The slot stays busy: the device may still answer into it.
            klog!("virtblk: request to sector {} timed out", sector);
            return Err(EIO);
        }
        (api().sleep_ticks)(1);
    }
}

fn geometry() -> Result<(u64, bool, bool), i64> {
    with_driver(|d| (d.sectors * SECTOR, d.read_only, d.flush)).ok_or(ENODEV)
}

/// A read or write of `len` bytes at byte position `at`.
fn transfer(at: u64, buf: u64, len: usize, write: bool) -> i64 {
    let (size, read_only, _) = match geometry() {
        Ok(g) => g,
        Err(e) => return -e,
    };
    if !at.is_multiple_of(SECTOR) || !(len as u64).is_multiple_of(SECTOR) || len > IO_MAX {
        return -EINVAL;
    }
    if write && read_only {
        return -EROFS;
    }
    let n = (len as u64).min(size.saturating_sub(at)) as usize;
    if n == 0 {
        return if write && len > 0 { -ENOSPC } else { 0 };
    }
    let mut segs = [DmaSeg::default(); MAX_SEGS];
    let count = match dev::user_segments(buf, n, !write, &mut segs) {
        Ok(c) => c,
        Err(e) => return e,
    };
    let mut bufs = [Buf {
        addr: 0,
        len: 0,
        device_writes: false,
    }; MAX_SEGS];
    for (b, s) in bufs.iter_mut().zip(&segs[..count]) {
        *b = Buf::from_seg(s, !write);
    }
    if u64::from(FAULT.swap(0, Ordering::AcqRel)) == FAULT_BAD_DESCRIPTOR {
        // A driver bug that hands the device a buffer outside guest RAM.
        bufs[0].addr = BAD_ADDRESS;
    }
    let kind = if write { T_OUT } else { T_IN };
    match request(kind, at / SECTOR, &bufs[..count]) {
        Ok(_) => n as i64,
        Err(e) => -e,
    }
}

extern "C" fn read(_aux: u64, buf: u64, len: usize, pos: u64) -> i64 {
    transfer(pos, buf, len, false)
}

extern "C" fn write(_aux: u64, buf: u64, len: usize, pos: u64) -> i64 {
    transfer(pos, buf, len, true)
}

fn get_id(user_buf: u64) -> i64 {
    let Some((ptr, phys)) = with_driver(|d| d.queue.id_area()) else {
        return -ENODEV;
    };
    let area = Buf {
        addr: phys,
        len: ID_BYTES as u32,
        device_writes: true,
    };
    if let Err(e) = request(T_GET_ID, 0, &[area]) {
        return -e;
    }
    let mut id = [0u8; ID_BYTES];
    // SAFETY: the id area is ID_BYTES inside the driver's request page,
    // which the device finished writing when the request completed.
    unsafe { core::ptr::copy_nonoverlapping(ptr, id.as_mut_ptr(), ID_BYTES) };
    match copy_to_user(user_buf, &id) {
        Ok(()) => ID_BYTES as i64,
        Err(e) => e,
    }
}

extern "C" fn ioctl(_aux: u64, cmd: u64, arg: u64) -> i64 {
    let (size, _, flush) = match geometry() {
        Ok(g) => g,
        Err(e) => return -e,
    };
    match cmd {
        IOC_SIZE => size as i64,
        IOC_FLUSH if !flush => 0,
        IOC_FLUSH => request(T_FLUSH, 0, &[]).map_or_else(|e| -e, |_| 0),
        IOC_GET_ID => get_id(arg),
        IOC_FAULT if arg == FAULT_BAD_DESCRIPTOR => {
            FAULT.store(arg as u32, Ordering::Release);
            0
        }
        _ => -EINVAL,
    }
}

declare_extension! {
    name: "virtblk",
    device: "vda",
    init: init,
    exit: exit,
    open: None,
    read: Some(read),
    write: Some(write),
    ioctl: Some(ioctl),
    close: None,
    // A sector written again holds the same bytes; the ioctls only read
    // or flush.
    replay: REPLAY_READ | REPLAY_WRITE,
    replay_ioctls: ioctl_bit(IOC_SIZE) | ioctl_bit(IOC_FLUSH) | ioctl_bit(IOC_GET_ID),
}
