//! The transport's registers, status machine, queue set-up, processing,
//! interrupts, pause/resume and save/restore, with a toy device.

use std::sync::Arc;

use lazarus_virtio_mmio::testing::{Buf, InitError, RingLayout, TestDriver};
use lazarus_virtio_mmio::{
    GuestMemory, INT_CONFIG, INT_VRING, MMIO_MAGIC, MmioTransport, RingFault, VENDOR_ID,
    VirtioDevice, regs, status,
};
use virtio_queue::{DescriptorChain, QueueT};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

const MEM_SIZE: usize = 1 << 20;
const RING: u64 = 0x1000;
const BUF: u64 = 0x8000;
const VERSION_1: u64 = 1 << 32;
const TOY_FEATURE: u64 = 1 << 3;

/// Answers each chain by writing 0x5a into its last writable byte; counts
/// what it saw.
#[derive(Default)]
struct Toy {
    chains: u32,
    activated: Option<u64>,
    resets: u32,
}

impl VirtioDevice for Toy {
    fn device_id(&self) -> u32 {
        42
    }
    fn features(&self) -> u64 {
        TOY_FEATURE
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &[16, 8]
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let config = [1u8, 2, 3, 4];
        for (i, b) in data.iter_mut().enumerate() {
            *b = config.get(offset as usize + i).copied().unwrap_or(0);
        }
    }
    fn activate(&mut self, features: u64) {
        self.activated = Some(features);
    }
    fn reset(&mut self) {
        self.resets += 1;
        self.activated = None;
    }
    fn process_chain(
        &mut self,
        _queue: u16,
        chain: DescriptorChain<&GuestMemory>,
        mem: &GuestMemory,
    ) -> Result<u32, RingFault> {
        let head = chain.head_index();
        let last = chain.last().ok_or(RingFault::BrokenChain { head })?;
        if !last.is_write_only() || last.len() == 0 {
            return Err(RingFault::NoStatus { head });
        }
        let at = last.addr().0 + u64::from(last.len()) - 1;
        mem.write_obj(0x5au8, GuestAddress(at))
            .map_err(|_| RingFault::MemoryAccess { addr: at })?;
        self.chains += 1;
        Ok(1)
    }
}

struct Setup {
    t: MmioTransport<Toy>,
    drv: TestDriver,
    mem: Arc<GuestMemory>,
}

fn setup() -> Setup {
    let mem = Arc::new(GuestMemory::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap());
    let irq = EventFd::new(EFD_NONBLOCK).unwrap();
    let t = MmioTransport::new(Toy::default(), mem.clone(), irq).unwrap();
    let drv = TestDriver::new(mem.clone(), RingLayout::at(RING, 16));
    Setup { t, drv, mem }
}

fn live() -> Setup {
    let mut s = setup();
    s.drv.init(&mut s.t, |offered| offered).unwrap();
    s
}

fn reg(t: &MmioTransport<Toy>, r: u32) -> u32 {
    TestDriver::read_reg(t, r)
}

fn wreg(t: &mut MmioTransport<Toy>, r: u32, v: u32) {
    TestDriver::write_reg(t, r, v)
}

/// Interrupts signalled since the last call.
fn irq_count(t: &MmioTransport<Toy>) -> u64 {
    t.irq().read().unwrap_or(0)
}

#[test]
fn identity_and_features() {
    let mut s = setup();
    assert_eq!(reg(&s.t, regs::MAGIC_VALUE), MMIO_MAGIC);
    assert_eq!(reg(&s.t, regs::VERSION), 2);
    assert_eq!(reg(&s.t, regs::DEVICE_ID), 42);
    assert_eq!(reg(&s.t, regs::VENDOR_ID), VENDOR_ID);
    wreg(&mut s.t, regs::DEVICE_FEATURES_SEL, 0);
    assert_eq!(reg(&s.t, regs::DEVICE_FEATURES), TOY_FEATURE as u32);
    wreg(&mut s.t, regs::DEVICE_FEATURES_SEL, 1);
    assert_eq!(reg(&s.t, regs::DEVICE_FEATURES), 1);
    wreg(&mut s.t, regs::DEVICE_FEATURES_SEL, 2);
    assert_eq!(reg(&s.t, regs::DEVICE_FEATURES), 0);
    // Queue 0 has 16 entries, queue 1 has 8, queue 2 does not exist.
    for (q, max) in [(0, 16), (1, 8), (2, 0), (u32::MAX, 0)] {
        wreg(&mut s.t, regs::QUEUE_SEL, q);
        assert_eq!(reg(&s.t, regs::QUEUE_NUM_MAX), max);
    }
    assert_eq!(reg(&s.t, regs::SHM_LEN_LOW), u32::MAX);
    // Registers are 32-bit; other widths read zero.
    let mut two = [0xffu8; 2];
    s.t.read(u64::from(regs::MAGIC_VALUE), &mut two);
    assert_eq!(two, [0, 0]);
    // The configuration space, any width, zero past its end and the window.
    let mut cfg = [0u8; 8];
    s.t.read(0x100, &mut cfg);
    assert_eq!(cfg, [1, 2, 3, 4, 0, 0, 0, 0]);
    s.t.read(0x102, &mut cfg[..2]);
    assert_eq!(&cfg[..2], &[3, 4]);
    s.t.read(0xffe, &mut cfg[..4]);
    assert_eq!(&cfg[..4], &[0; 4]);
    s.t.read(u64::MAX - 1, &mut cfg);
    assert_eq!(cfg, [0; 8]);
}

#[test]
fn full_initialization_and_a_request() {
    let mut s = live();
    assert_eq!(
        s.t.status(),
        status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK
    );
    assert_eq!(s.t.device().activated, Some(TOY_FEATURE | VERSION_1));
    let head = s
        .drv
        .add_chain(&[Buf::read(BUF, 16), Buf::write(BUF + 16, 4)]);
    s.drv.notify(&mut s.t);
    assert_eq!(s.drv.pop_used(), Some((u32::from(head), 1)));
    assert_eq!(s.drv.pop_used(), None);
    assert_eq!(s.mem.read_obj::<u8>(GuestAddress(BUF + 19)).unwrap(), 0x5a);
    assert_eq!(reg(&s.t, regs::INTERRUPT_STATUS), INT_VRING);
    assert_eq!(irq_count(&s.t), 1);
    wreg(&mut s.t, regs::INTERRUPT_ACK, INT_VRING);
    assert_eq!(reg(&s.t, regs::INTERRUPT_STATUS), 0);
    // Several chains, one notification: all of them, one interrupt.
    for i in 0..5 {
        s.drv.add_chain(&[Buf::write(BUF + 0x100 * i, 1)]);
    }
    s.drv.notify(&mut s.t);
    assert_eq!((0..5).filter_map(|_| s.drv.pop_used()).count(), 5);
    assert_eq!(irq_count(&s.t), 1);
    assert_eq!(s.t.stats().chains, 6);
    // Many rounds wrap the ring indexes.
    for _ in 0..40 {
        s.drv.add_chain(&[Buf::write(BUF, 1)]);
        s.drv.notify(&mut s.t);
        assert!(s.drv.pop_used().is_some());
    }
    assert!(!s.t.needs_reset());
}

#[test]
fn feature_negotiation_refusals() {
    let mut s = setup();
    // Without VERSION_1 (a legacy driver).
    let err = s.drv.negotiate(&mut s.t, |o| o & !VERSION_1).unwrap_err();
    assert_eq!(err, InitError::FeaturesRefused);
    assert!(s.t.feature_refusal().unwrap().contains("VERSION_1"));
    assert_eq!(s.t.status(), status::ACKNOWLEDGE | status::DRIVER);
    // A feature the device does not offer.
    let err = s.drv.negotiate(&mut s.t, |o| o | 1 << 20).unwrap_err();
    assert_eq!(err, InitError::FeaturesRefused);
    // A bit in the third feature word.
    wreg(&mut s.t, regs::STATUS, 0);
    wreg(&mut s.t, regs::STATUS, status::ACKNOWLEDGE);
    wreg(&mut s.t, regs::STATUS, status::ACKNOWLEDGE | status::DRIVER);
    wreg(&mut s.t, regs::DRIVER_FEATURES_SEL, 1);
    wreg(&mut s.t, regs::DRIVER_FEATURES, 1);
    wreg(&mut s.t, regs::DRIVER_FEATURES_SEL, 2);
    wreg(&mut s.t, regs::DRIVER_FEATURES, 1);
    wreg(
        &mut s.t,
        regs::STATUS,
        status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
    );
    assert_eq!(reg(&s.t, regs::STATUS) & status::FEATURES_OK, 0);
    // The offer itself is fine.
    assert_eq!(
        s.drv.negotiate(&mut s.t, |o| o).unwrap(),
        TOY_FEATURE | VERSION_1
    );
    // Features cannot change after FEATURES_OK.
    wreg(&mut s.t, regs::DRIVER_FEATURES_SEL, 0);
    wreg(&mut s.t, regs::DRIVER_FEATURES, 0);
    assert_eq!(s.t.driver_features(), TOY_FEATURE | VERSION_1);
}

#[test]
fn status_steps_in_order_only() {
    let mut s = setup();
    // Skipping ACKNOWLEDGE, or setting DRIVER_OK first, is ignored.
    wreg(&mut s.t, regs::STATUS, status::DRIVER);
    assert_eq!(s.t.status(), 0);
    wreg(&mut s.t, regs::STATUS, status::DRIVER_OK);
    assert_eq!(s.t.status(), 0);
    wreg(&mut s.t, regs::STATUS, status::ACKNOWLEDGE);
    wreg(
        &mut s.t,
        regs::STATUS,
        status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
    );
    assert_eq!(s.t.status(), status::ACKNOWLEDGE);
    // Clearing a bit is ignored; unknown bits too.
    wreg(&mut s.t, regs::STATUS, status::ACKNOWLEDGE | status::DRIVER);
    wreg(&mut s.t, regs::STATUS, status::DRIVER);
    wreg(
        &mut s.t,
        regs::STATUS,
        status::ACKNOWLEDGE | status::DRIVER | 0x10,
    );
    assert_eq!(s.t.status(), status::ACKNOWLEDGE | status::DRIVER);
    // The driver cannot set NEEDS_RESET.
    wreg(
        &mut s.t,
        regs::STATUS,
        status::ACKNOWLEDGE | status::DRIVER | status::NEEDS_RESET,
    );
    assert!(!s.t.needs_reset());
    // FAILED sticks until a reset, and stops everything.
    wreg(&mut s.t, regs::STATUS, status::FAILED);
    assert_eq!(
        s.t.status(),
        status::ACKNOWLEDGE | status::DRIVER | status::FAILED
    );
    wreg(
        &mut s.t,
        regs::STATUS,
        status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
    );
    assert_eq!(s.t.status() & status::FEATURES_OK, 0);
    wreg(&mut s.t, regs::STATUS, 0);
    assert_eq!(s.t.status(), 0);
    s.drv.init(&mut s.t, |o| o).unwrap();
}

#[test]
fn notify_before_driver_ok_is_ignored() {
    let mut s = setup();
    s.drv.negotiate(&mut s.t, |o| o).unwrap();
    s.drv.setup_queue(&mut s.t).unwrap();
    s.drv.add_chain(&[Buf::write(BUF, 1)]);
    s.drv.notify(&mut s.t);
    assert_eq!(s.drv.used_idx(), 0);
    assert_eq!(s.mem.read_obj::<u8>(GuestAddress(BUF)).unwrap(), 0);
    assert_eq!(s.t.interrupt_status(), 0);
    assert_eq!(irq_count(&s.t), 0);
    assert!(!s.t.needs_reset());
    assert_eq!(s.t.stats().ignored_notifies, 1);
    // The chain is still there; the next notification after DRIVER_OK
    // processes it.
    s.drv.driver_ok(&mut s.t).unwrap();
    s.drv.notify(&mut s.t);
    assert_eq!(s.drv.used_idx(), 1);
    // A notification for a queue that is not ready, or does not exist.
    wreg(&mut s.t, regs::QUEUE_NOTIFY, 1);
    wreg(&mut s.t, regs::QUEUE_NOTIFY, 7);
    assert_eq!(s.t.stats().ignored_notifies, 3);
}

fn expect_queue_refused(num: u32, ring: RingLayout, what: &str) {
    let mut s = setup();
    s.drv.negotiate(&mut s.t, |o| o).unwrap();
    s.drv.program_queue(&mut s.t, num, ring);
    wreg(&mut s.t, regs::QUEUE_READY, 1);
    assert!(s.t.needs_reset(), "{what}: accepted");
    assert_eq!(reg(&s.t, regs::QUEUE_READY), 0, "{what}");
    let fault = s.t.fault().unwrap().to_string();
    assert!(fault.contains("invalid configuration"), "{what}: {fault}");
    // Before DRIVER_OK: no interrupt.
    assert_eq!(irq_count(&s.t), 0);
    // Nothing more is accepted until a reset, then all is well.
    s.drv.driver_ok(&mut s.t).unwrap_err();
    s.drv.init(&mut s.t, |o| o).unwrap();
}

#[test]
fn bad_queue_configurations_need_reset() {
    let ok = RingLayout::at(RING, 16);
    expect_queue_refused(12, ok, "size not a power of two");
    expect_queue_refused(0, ok, "size 0");
    expect_queue_refused(32, RingLayout::at(RING, 32), "size above the maximum");
    expect_queue_refused(1 << 16, ok, "size past 16 bits");
    let outside = RingLayout::at(MEM_SIZE as u64 - 0x100, 16);
    expect_queue_refused(16, outside, "rings across the end of memory");
    expect_queue_refused(16, RingLayout::at(1 << 40, 16), "rings far outside memory");
    let mut near_end = ok;
    near_end.used = u64::MAX - 3;
    expect_queue_refused(16, near_end, "used ring wrapping the address space");
    let mut misaligned = ok;
    misaligned.desc += 8;
    expect_queue_refused(16, misaligned, "descriptor table misaligned");
    let mut misaligned = ok;
    misaligned.used += 2;
    expect_queue_refused(16, misaligned, "used ring misaligned");
    let mut at_zero = ok;
    at_zero.avail = 0;
    expect_queue_refused(16, at_zero, "available ring at 0");
}

#[test]
fn queue_registers_only_during_setup() {
    let mut s = setup();
    // Before FEATURES_OK, queue writes are ignored.
    s.drv.program_queue(&mut s.t, 16, RingLayout::at(RING, 16));
    wreg(&mut s.t, regs::QUEUE_READY, 1);
    assert_eq!(reg(&s.t, regs::QUEUE_READY), 0);
    s.drv.init(&mut s.t, |o| o).unwrap();
    // A ready queue's registers cannot change under it.
    s.drv.program_queue(&mut s.t, 8, RingLayout::at(0x40000, 8));
    assert_eq!(s.t.queue(0).unwrap().desc_table(), RING);
    assert_eq!(s.t.queue(0).unwrap().size(), 16);
}

#[test]
fn avail_index_far_ahead_needs_reset_until_reset() {
    let mut s = live();
    s.drv.add_chain(&[Buf::write(BUF, 1)]);
    s.drv.notify(&mut s.t);
    assert_eq!(s.drv.pop_used(), Some((0, 1)));
    irq_count(&s.t);
    s.drv.set_avail_idx(1 + 17);
    s.drv.notify(&mut s.t);
    assert!(s.t.needs_reset());
    assert_eq!(
        reg(&s.t, regs::STATUS) & status::NEEDS_RESET,
        status::NEEDS_RESET
    );
    assert!(matches!(s.t.fault(), Some(RingFault::Ring { .. })));
    assert_eq!(s.t.interrupt_status() & INT_CONFIG, INT_CONFIG);
    assert_eq!(irq_count(&s.t), 1);
    // Stopped: a good chain is not touched.
    s.drv.set_avail_idx(1);
    s.drv.add_chain(&[Buf::write(BUF + 1, 1)]);
    s.drv.notify(&mut s.t);
    assert_eq!(s.drv.used_idx(), 1);
    assert_eq!(s.mem.read_obj::<u8>(GuestAddress(BUF + 1)).unwrap(), 0);
    // Status writes other than 0 do not clear it.
    wreg(&mut s.t, regs::STATUS, status::ACKNOWLEDGE);
    assert!(s.t.needs_reset());
    // A reset does.
    s.drv.init(&mut s.t, |o| o).unwrap();
    assert!(!s.t.needs_reset());
    assert!(s.t.fault().is_none());
    assert_eq!(s.t.interrupt_status(), 0);
    s.drv.add_chain(&[Buf::write(BUF + 2, 1)]);
    s.drv.notify(&mut s.t);
    assert_eq!(s.drv.pop_used(), Some((0, 1)));
}

#[test]
fn device_fault_needs_reset() {
    let mut s = live();
    // A chain with no writable byte: the toy cannot answer it.
    s.drv.add_chain(&[Buf::read(BUF, 4)]);
    s.drv.add_chain(&[Buf::write(BUF, 4)]);
    s.drv.notify(&mut s.t);
    assert_eq!(s.t.fault(), Some(&RingFault::NoStatus { head: 0 }));
    // The chain after it was not processed.
    assert_eq!(s.drv.used_idx(), 0);
    assert_eq!(s.t.device().chains, 0);
}

#[test]
fn pause_holds_notifications_and_interrupts() {
    let mut s = live();
    s.t.pause();
    assert!(s.t.is_paused());
    s.drv.add_chain(&[Buf::write(BUF, 1)]);
    s.drv.notify(&mut s.t);
    s.drv.notify(&mut s.t);
    assert_eq!(s.drv.used_idx(), 0);
    assert_eq!(s.t.device().chains, 0);
    assert_eq!(s.t.interrupt_status(), 0);
    assert_eq!(irq_count(&s.t), 0);
    assert_eq!(s.t.stats().deferred_notifies, 2);
    s.t.resume();
    assert_eq!(s.drv.pop_used(), Some((0, 1)));
    assert_eq!(s.drv.pop_used(), None);
    assert_eq!(s.t.device().chains, 1);
    assert_eq!(irq_count(&s.t), 1);
    // Resuming again does nothing more.
    s.t.resume();
    assert_eq!(s.t.device().chains, 1);
    // A fault from a register write while paused: its interrupt waits.
    s.t.pause();
    s.t.notify_config_change();
    assert_eq!(s.t.interrupt_status() & INT_CONFIG, INT_CONFIG);
    assert_eq!(irq_count(&s.t), 0);
    s.t.resume();
    assert_eq!(irq_count(&s.t), 1);
    assert_eq!(reg(&s.t, regs::CONFIG_GENERATION), 1);
    // A reset while paused drops what was pending.
    s.t.pause();
    s.drv.add_chain(&[Buf::write(BUF, 1)]);
    s.drv.notify(&mut s.t);
    wreg(&mut s.t, regs::STATUS, 0);
    s.t.resume();
    assert_eq!(s.t.device().chains, 1);
}

#[test]
fn a_hypervisor_reset_of_a_lost_driver_forgets_its_rings() {
    let mut s = live();
    // The driver is gone (reset by a repair) with a request notified but
    // not processed while the device was paused.
    s.t.pause();
    s.drv.add_chain(&[Buf::write(BUF, 1)]);
    s.drv.notify(&mut s.t);
    s.t.reset_device();
    s.t.resume();
    // Nothing from the old rings is processed, no interrupt comes, and
    // the device waits for a new driver.
    assert_eq!(s.t.device().chains, 0);
    assert_eq!(irq_count(&s.t), 0);
    assert_eq!(reg(&s.t, regs::STATUS), 0);
    assert_eq!(reg(&s.t, regs::QUEUE_READY), 0);
    assert!(!s.t.needs_reset());
}

#[test]
fn save_and_restore() {
    let mut s = live();
    for _ in 0..3 {
        s.drv.add_chain(&[Buf::write(BUF, 1)]);
        s.drv.notify(&mut s.t);
    }
    s.t.pause();
    s.drv.add_chain(&[Buf::write(BUF, 1)]);
    s.drv.notify(&mut s.t);
    let state = s.t.state();
    assert_eq!(state.queues[0].next_avail, 3);
    assert_eq!(state.pending, 1);

    // Into a fresh transport on the same memory.
    let irq = EventFd::new(EFD_NONBLOCK).unwrap();
    let mut t2 = MmioTransport::new(Toy::default(), s.mem.clone(), irq).unwrap();
    t2.pause();
    t2.restore(&state).unwrap();
    assert_eq!(t2.state(), state);
    assert_eq!(t2.device().activated, Some(TOY_FEATURE | VERSION_1));
    t2.resume();
    assert_eq!(t2.device().chains, 1);
    assert_eq!(s.drv.used_idx(), 4);

    // Bad states are refused and change nothing.
    let before = t2.state();
    let mut bad = state.clone();
    bad.queues.pop();
    assert!(t2.restore(&bad).is_err());
    let mut bad = state.clone();
    bad.status = status::DRIVER_OK;
    assert!(t2.restore(&bad).is_err());
    let mut bad = state.clone();
    bad.queues[0].num = 12;
    assert!(t2.restore(&bad).is_err());
    let mut bad = state.clone();
    bad.queues[0].desc = 1 << 40;
    assert!(t2.restore(&bad).is_err());
    let mut bad = state.clone();
    bad.driver_features = 0;
    assert!(t2.restore(&bad).is_err());
    let mut bad = state.clone();
    bad.pending = 1 << 5;
    assert!(t2.restore(&bad).is_err());
    assert_eq!(t2.state(), before);
}
