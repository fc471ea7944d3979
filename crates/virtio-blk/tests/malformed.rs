//! A driver that breaks the rules: each case ends in an error status or in
//! DEVICE_NEEDS_RESET, never in a panic, and the image is never touched.

mod common;

use common::*;
use lazarus_virtio_mmio::testing::{Buf, InitError, RingLayout, TestDriver};
use lazarus_virtio_mmio::{INT_CONFIG, RingFault, regs, status};

const SIZE: usize = 256 << 10;
const NEXT: u16 = 1;
const WRITE: u16 = 2;
const INDIRECT: u16 = 4;
const END: u64 = MEM_SIZE as u64;

/// Checks that the last notification put the device in NEEDS_RESET with
/// a configuration-change interrupt, touched neither the image nor the
/// used ring, and that nothing is processed until a reset.
fn assert_needs_reset(rig: &mut Rig, before: &[u8], what: &str) -> RingFault {
    assert!(rig.t.needs_reset(), "{what}: no NEEDS_RESET");
    let fault = rig.t.fault().cloned().expect("a fault");
    assert_eq!(
        TestDriver::read_reg(&rig.t, regs::STATUS) & status::NEEDS_RESET,
        status::NEEDS_RESET
    );
    assert_eq!(rig.t.interrupt_status() & INT_CONFIG, INT_CONFIG, "{what}");
    assert!(rig.interrupts() >= 1, "{what}: no interrupt");
    assert_eq!(rig.drv.used_idx(), 0, "{what}: used ring written");
    assert_eq!(rig.image(), before, "{what}: image changed");
    // A good request now is not looked at.
    rig.header_at(HDR, T_OUT, 0);
    rig.put(DATA, &[0x99; 512]);
    rig.drv.add_chain(&[
        Buf::read(HDR, 16),
        Buf::read(DATA, 512),
        Buf::write(STATUS, 1),
    ]);
    rig.drv.notify(&mut rig.t);
    assert_eq!(rig.drv.used_idx(), 0, "{what}: processed while NEEDS_RESET");
    assert_eq!(rig.image(), before, "{what}: image changed");
    // After a reset all is well again.
    rig.drv.init(&mut rig.t, |o| o).unwrap();
    assert!(!rig.t.needs_reset());
    assert_eq!(rig.read(0, 512).data, before[..512], "{what}: after reset");
    fault
}

/// Submits `bufs` to a fresh device and expects NEEDS_RESET.
fn expect_reset(bufs: &[Buf], what: &str) -> RingFault {
    let mut rig = Rig::live(SIZE, false);
    let before = rig.image();
    rig.header_at(HDR, T_OUT, 0);
    rig.put(DATA, &[0x55; 4096]);
    rig.put(STATUS, &[S_UNANSWERED]);
    rig.drv.add_chain(bufs);
    rig.drv.notify(&mut rig.t);
    assert_eq!(rig.status(), S_UNANSWERED, "{what}: answered");
    assert_needs_reset(&mut rig, &before, what)
}

#[test]
fn buffers_outside_guest_memory() {
    let hdr = Buf::read(HDR, 16);
    let st = Buf::write(STATUS, 1);
    for (what, data) in [
        ("data past the end of memory", Buf::read(END, 512)),
        ("data across the end of memory", Buf::read(END - 256, 512)),
        ("data far away", Buf::read(1 << 40, 512)),
        (
            "data wrapping the address space",
            Buf::read(u64::MAX - 255, 512),
        ),
    ] {
        let fault = expect_reset(&[hdr, data, st], what);
        assert!(
            matches!(fault, RingFault::OutsideMemory { .. }),
            "{what}: {fault}"
        );
    }
    let fault = expect_reset(
        &[Buf::read(END - 8, 16), Buf::read(DATA, 512), st],
        "header",
    );
    assert!(matches!(fault, RingFault::OutsideMemory { .. }));
    let fault = expect_reset(&[hdr, Buf::read(DATA, 512), Buf::write(END, 1)], "status");
    assert!(matches!(fault, RingFault::OutsideMemory { .. }));
    // A read into memory that is not there: nothing read from the image
    // lands anywhere.
    let fault = expect_reset(&[hdr, Buf::write(END - 512, 1024), st], "read target");
    assert!(matches!(fault, RingFault::OutsideMemory { .. }));
}

#[test]
fn status_descriptor_unusable() {
    let hdr = Buf::read(HDR, 16);
    let data = Buf::read(DATA, 512);
    let fault = expect_reset(&[hdr, data, Buf::read(STATUS, 1)], "read-only status");
    assert_eq!(fault, RingFault::NoStatus { head: 0 });
    let fault = expect_reset(&[hdr, data, Buf::write(STATUS, 0)], "empty status");
    assert_eq!(fault, RingFault::NoStatus { head: 0 });
    let fault = expect_reset(&[hdr], "header only");
    assert_eq!(fault, RingFault::NoStatus { head: 0 });
}

/// A descriptor as written: address, length, flags, next.
type RawDesc = (u64, u32, u16, u16);

fn raw_chain(rig: &mut Rig, descs: &[RawDesc], head: u16) {
    for (i, &(addr, len, flags, next)) in descs.iter().enumerate() {
        rig.drv.write_desc(i as u16, addr, len, flags, next);
    }
    rig.drv.push_avail(head);
    rig.drv.notify(&mut rig.t);
}

#[test]
fn descriptor_loops_and_bad_indexes() {
    let cases: &[(&str, &[RawDesc], u16)] = &[
        (
            "a loop of two",
            &[(HDR, 16, NEXT, 1), (DATA, 512, NEXT, 0)],
            0,
        ),
        ("a descriptor pointing at itself", &[(HDR, 16, NEXT, 0)], 0),
        (
            "a loop after a good start",
            &[
                (HDR, 16, NEXT, 1),
                (DATA, 512, NEXT, 2),
                (STATUS, 1, WRITE | NEXT, 1),
            ],
            0,
        ),
        (
            "next index outside the table",
            &[(HDR, 16, NEXT, 1), (DATA, 512, NEXT, RING_SIZE)],
            0,
        ),
        (
            "head index outside the table",
            &[(HDR, 16, 0, 0)],
            RING_SIZE + 3,
        ),
        (
            "indirect table of a bad length",
            &[(0x30000, 40, INDIRECT, 0)],
            0,
        ),
        (
            "indirect table outside memory",
            &[(END, 48, INDIRECT, 0)],
            0,
        ),
    ];
    for &(what, descs, head) in cases {
        let mut rig = Rig::live(SIZE, false);
        let before = rig.image();
        rig.header_at(HDR, T_OUT, 0);
        rig.put(STATUS, &[S_UNANSWERED]);
        raw_chain(&mut rig, descs, head);
        assert_eq!(rig.status(), S_UNANSWERED, "{what}: answered");
        let fault = assert_needs_reset(&mut rig, &before, what);
        assert!(
            matches!(fault, RingFault::BrokenChain { .. }),
            "{what}: {fault}"
        );
    }
}

#[test]
fn indirect_tables_are_followed_and_checked() {
    // Not offered, but virtio-queue follows them with the same checks: a
    // good one works.
    let mut rig = Rig::live(SIZE, false);
    let table = 0x30000;
    rig.header_at(HDR, T_IN, 1);
    for (i, (addr, len, flags)) in [
        (HDR, 16u32, NEXT),
        (DATA, 512, NEXT | WRITE),
        (STATUS, 1, WRITE),
    ]
    .into_iter()
    .enumerate()
    {
        let mut d = [0u8; 16];
        d[..8].copy_from_slice(&addr.to_le_bytes());
        d[8..12].copy_from_slice(&len.to_le_bytes());
        d[12..14].copy_from_slice(&flags.to_le_bytes());
        d[14..].copy_from_slice(&(i as u16 + 1).to_le_bytes());
        rig.put(table + 16 * i as u64, &d);
    }
    raw_chain(&mut rig, &[(table, 48, INDIRECT, 0)], 0);
    assert_eq!(rig.status(), S_OK);
    assert_eq!(rig.get(DATA, 512), rig.image()[512..1024]);
    // An indirect descriptor inside an indirect table is refused.
    let before = rig.image();
    rig.put(table + 16, &{
        let mut d = [0u8; 16];
        d[..8].copy_from_slice(&table.to_le_bytes());
        d[8..12].copy_from_slice(&48u32.to_le_bytes());
        d[12..14].copy_from_slice(&INDIRECT.to_le_bytes());
        d
    });
    rig.drv.init(&mut rig.t, |o| o).unwrap();
    rig.put(STATUS, &[S_UNANSWERED]);
    raw_chain(&mut rig, &[(table, 48, INDIRECT, 0)], 0);
    assert_eq!(rig.status(), S_UNANSWERED);
    assert_needs_reset(&mut rig, &before, "nested indirect");
}

#[test]
fn request_level_mistakes_get_ioerr() {
    let mut rig = Rig::live(SIZE, false);
    let before = rig.image();
    let st = Buf::write(STATUS, 1);
    let cases: Vec<(&str, Vec<Buf>)> = vec![
        ("header of 8 bytes", vec![Buf::read(HDR, 8), st]),
        ("no header at all", vec![st]),
        (
            "header of 15 bytes then writable data",
            vec![Buf::read(HDR, 15), Buf::write(DATA, 512), st],
        ),
        (
            "readable data after writable data",
            vec![
                Buf::read(HDR, 16),
                Buf::write(DATA, 512),
                Buf::read(DATA, 512),
                st,
            ],
        ),
    ];
    for (what, bufs) in cases {
        rig.header_at(HDR, T_OUT, 0);
        let used = rig.submit(&bufs);
        assert_eq!(used.map(|u| u.1), Some(1), "{what}");
        assert_eq!(rig.status(), S_IOERR, "{what}");
        assert_eq!(rig.image(), before, "{what}");
        assert!(!rig.t.needs_reset(), "{what}");
    }
}

#[test]
fn avail_index_far_ahead() {
    let mut rig = Rig::live(SIZE, false);
    let before = rig.image();
    rig.drv.set_avail_idx(RING_SIZE + 1);
    rig.drv.notify(&mut rig.t);
    let fault = assert_needs_reset(&mut rig, &before, "avail index far ahead");
    assert!(
        fault.to_string().contains("available ring index"),
        "{fault}"
    );
}

#[test]
fn bad_queue_set_up() {
    for (what, num, ring) in [
        ("size not a power of two", 48, RingLayout::at(RING, 64)),
        ("rings outside memory", 64, RingLayout::at(END - 0x200, 64)),
        ("rings far outside memory", 64, RingLayout::at(1 << 45, 64)),
    ] {
        let mut rig = Rig::new(SIZE, false);
        let before = rig.image();
        rig.drv.negotiate(&mut rig.t, |o| o).unwrap();
        rig.drv.program_queue(&mut rig.t, num, ring);
        TestDriver::write_reg(&mut rig.t, regs::QUEUE_READY, 1);
        assert!(rig.t.needs_reset(), "{what}");
        assert!(matches!(rig.t.fault(), Some(RingFault::QueueConfig { .. })));
        assert_eq!(
            rig.drv.driver_ok(&mut rig.t),
            Err(InitError::NeedsReset(0x4b))
        );
        rig.drv.notify(&mut rig.t);
        assert_eq!(rig.image(), before);
        rig.drv.init(&mut rig.t, |o| o).unwrap();
        assert_eq!(rig.write(0, &[1; 512]), S_OK, "{what}: after reset");
    }
}

#[test]
fn notify_before_driver_ok_does_nothing() {
    let mut rig = Rig::new(SIZE, false);
    let before = rig.image();
    rig.drv.negotiate(&mut rig.t, |o| o).unwrap();
    rig.drv.setup_queue(&mut rig.t).unwrap();
    rig.header_at(HDR, T_OUT, 0);
    rig.put(DATA, &[0x42; 512]);
    rig.drv.add_chain(&[
        Buf::read(HDR, 16),
        Buf::read(DATA, 512),
        Buf::write(STATUS, 1),
    ]);
    rig.drv.notify(&mut rig.t);
    assert_eq!(rig.drv.used_idx(), 0);
    assert_eq!(rig.image(), before);
    assert_eq!(rig.interrupts(), 0);
    assert!(!rig.t.needs_reset());
    assert_eq!(rig.t.stats().ignored_notifies, 1);
}

#[test]
fn legacy_or_greedy_drivers_are_refused() {
    let mut rig = Rig::new(SIZE, false);
    let err = rig.drv.negotiate(&mut rig.t, |o| o & !VERSION_1);
    assert_eq!(err, Err(InitError::FeaturesRefused));
    // Discard (bit 13) and multiqueue (bit 12) are not offered.
    let err = rig.drv.negotiate(&mut rig.t, |o| o | 1 << 13 | 1 << 12);
    assert_eq!(err, Err(InitError::FeaturesRefused));
    // Read-only on a writable disk is not offered either.
    let err = rig.drv.negotiate(&mut rig.t, |o| o | F_RO);
    assert_eq!(err, Err(InitError::FeaturesRefused));
    // The device stays usable for a driver that behaves.
    rig.drv
        .init(&mut rig.t, |o| o & (VERSION_1 | F_FLUSH))
        .unwrap();
    assert_eq!(rig.write(1, &[3; 512]), S_OK);
}
