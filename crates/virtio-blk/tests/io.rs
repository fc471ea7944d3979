//! Requests a well-behaved driver makes, and requests the device refuses
//! with an error status.

mod common;

use common::*;
use lazarus_virtio_blk::{HEADER_LEN, MAX_REQUEST_BYTES, QUEUE_SIZE};
use lazarus_virtio_mmio::regs;
use lazarus_virtio_mmio::testing::{Buf, TestDriver};

const SIZE: usize = 1 << 20;
const SECTORS: u64 = (SIZE / 512) as u64;

#[test]
fn identity_features_and_config() {
    let rig = Rig::new(SIZE, false);
    assert_eq!(TestDriver::read_reg(&rig.t, regs::DEVICE_ID), 2);
    let offered = rig.t.offered_features();
    assert_eq!(
        offered,
        VERSION_1 | F_FLUSH | F_BLK_SIZE | F_SEG_MAX | F_SIZE_MAX
    );
    assert_eq!(rig.config_u64(0), SECTORS);
    assert_eq!(rig.config_u32(8), 64 << 10); // size_max
    assert_eq!(rig.config_u32(12), 128); // seg_max
    assert_eq!(rig.config_u32(20), 512); // blk_size
    assert_eq!(rig.config_u32(24), 0);
    assert_eq!(rig.config_u64(0x2000), 0);
    let mut rig = rig;
    TestDriver::write_reg(&mut rig.t, regs::QUEUE_SEL, 0);
    assert_eq!(
        TestDriver::read_reg(&rig.t, regs::QUEUE_NUM_MAX),
        u32::from(QUEUE_SIZE)
    );
    let ro = Rig::new(SIZE, true);
    assert_eq!(ro.t.offered_features() & F_RO, F_RO);
}

#[test]
fn writes_and_reads_land_exactly_where_asked() {
    let mut rig = Rig::live(SIZE, false);
    let mut model = rig.image();
    let mut check = |rig: &mut Rig, sector: u64, data: Vec<u8>| {
        assert_eq!(rig.write(sector, &data), S_OK);
        let at = (sector * 512) as usize;
        model[at..at + data.len()].copy_from_slice(&data);
        let back = rig.read(sector, data.len() as u32);
        assert_eq!(back.status, S_OK);
        assert_eq!(back.used_len, data.len() as u32 + 1);
        assert_eq!(back.data, data);
        assert_eq!(rig.image(), model, "image after writing sector {sector}");
    };
    check(&mut rig, 0, vec![0x11; 512]);
    check(&mut rig, 7, (0..512).map(|i| i as u8).collect());
    check(&mut rig, SECTORS - 1, vec![0x22; 512]);
    check(
        &mut rig,
        100,
        (0..64 * 1024).map(|i| (i * 7) as u8).collect(),
    );
    // A request bigger than the copy chunk, up to the last sector.
    let big: Vec<u8> = (0..200 * 1024).map(|i| (i % 251) as u8).collect();
    check(&mut rig, SECTORS - 400, big);
    // Zero-length data at the very end is fine (and touches nothing).
    assert_eq!(rig.request(T_OUT, SECTORS, &[], 0).status, S_OK);
    assert_eq!(rig.flush(), S_OK);
    assert_eq!(rig.image(), model);
    let disk = rig.t.device().disk().stats();
    assert_eq!(disk.flushes, 1);
    assert_eq!(disk.out_of_range, 0);
    let stats = rig.t.device().stats();
    assert_eq!(stats.writes, 6);
    assert_eq!(stats.reads, 5);
    assert_eq!(stats.flushes, 1);
    assert_eq!(stats.requests, 12);
    assert_eq!(rig.t.stats().chains, 12);
    assert!(!rig.t.needs_reset());
}

#[test]
fn any_descriptor_layout_works() {
    let mut rig = Rig::live(SIZE, false);
    let mut model = rig.image();
    // Header and data in one descriptor, data scattered over three more
    // buffers of odd sizes (1536 bytes in all), status in its own.
    let data: Vec<u8> = (0..1536).map(|i| (i * 3 + 1) as u8).collect();
    rig.header_at(DATA, T_OUT, 9);
    rig.put(DATA + 16, &data[..100]);
    rig.put(DATA + 0x1000, &data[100..1000]);
    rig.put(DATA + 0x3000, &data[1000..]);
    let used = rig.submit(&[
        Buf::read(DATA, 16 + 100),
        Buf::read(DATA + 0x1000, 900),
        Buf::read(DATA + 0x3000, 536),
        Buf::write(STATUS, 1),
    ]);
    assert_eq!(used.map(|u| u.1), Some(1));
    assert_eq!(rig.status(), S_OK);
    model[9 * 512..9 * 512 + 1536].copy_from_slice(&data);
    assert_eq!(rig.image(), model);

    // A header split in two; read data scattered, the status byte sharing
    // the last data descriptor.
    rig.header_at(HDR, T_IN, 9);
    rig.put(DATA, &[0; 0x4000]);
    let used = rig.submit(&[
        Buf::read(HDR, 5),
        Buf::read(HDR + 5, 11),
        Buf::write(DATA, 1000),
        Buf::write(DATA + 0x2000, 537),
    ]);
    assert_eq!(used.map(|u| u.1), Some(1537));
    let mut back = rig.get(DATA, 1000);
    back.extend(rig.get(DATA + 0x2000, 536));
    assert_eq!(back, data);
    assert_eq!(rig.get(DATA + 0x2000 + 536, 1), [S_OK]);
}

#[test]
fn read_only_disk_refuses_writes() {
    let mut rig = Rig::live(SIZE, true);
    let before = rig.image();
    let reply = rig.request(T_OUT, 3, &[0x77; 1024], 0);
    assert_eq!(reply.status, S_IOERR);
    assert_eq!(reply.used_len, 1);
    assert_eq!(rig.image(), before);
    let back = rig.read(3, 1024);
    assert_eq!(back.status, S_OK);
    assert_eq!(back.data, before[3 * 512..5 * 512]);
    assert_eq!(rig.flush(), S_OK);
    assert_eq!(rig.t.device().disk().stats().writes, 0);
    assert_eq!(rig.t.device().stats().io_errors, 1);
}

#[test]
fn out_of_range_and_misshapen_requests_get_ioerr() {
    let mut rig = Rig::live(SIZE, false);
    let before = rig.image();
    let cases: Vec<(&str, u32, u64, Vec<u8>, u32)> = vec![
        ("write past the end", T_OUT, SECTORS, vec![1; 512], 0),
        ("write across the end", T_OUT, SECTORS - 1, vec![1; 1024], 0),
        ("read past the end", T_IN, SECTORS, vec![], 512),
        ("read across the end", T_IN, SECTORS - 1, vec![], 1024),
        (
            "sector * 512 overflows",
            T_OUT,
            u64::MAX / 512 + 1,
            vec![1; 512],
            0,
        ),
        ("offset + len overflows", T_IN, u64::MAX / 512, vec![], 512),
        ("huge sector", T_IN, u64::MAX, vec![], 512),
        ("write not whole sectors", T_OUT, 0, vec![1; 513], 0),
        ("read not whole sectors", T_IN, 0, vec![], 100),
        ("read with device-readable data", T_IN, 0, vec![1; 512], 512),
        (
            "write with device-writable data",
            T_OUT,
            0,
            vec![1; 512],
            512,
        ),
        ("flush with data", T_FLUSH, 0, vec![1; 512], 0),
        (
            "get-id with device-readable data",
            T_GET_ID,
            0,
            vec![1; 16],
            20,
        ),
        ("get-id buffer too short", T_GET_ID, 0, vec![], 19),
    ];
    for (what, kind, sector, out, in_len) in cases {
        let reply = rig.request(kind, sector, &out, in_len);
        assert_eq!(reply.status, S_IOERR, "{what}");
        assert_eq!(reply.used_len, 1, "{what}");
        if in_len > 0 {
            assert!(
                reply.data.iter().all(|&b| b == 0xcc),
                "{what}: data written"
            );
        }
        assert_eq!(rig.image(), before, "{what}: image changed");
        assert!(!rig.t.needs_reset(), "{what}");
    }
    // More data than a request may carry: nine descriptors on the same
    // 1 MiB of guest memory.
    const { assert!(9 << 20 > MAX_REQUEST_BYTES) };
    rig.header_at(HDR, T_OUT, 0);
    let mut bufs = vec![Buf::read(HDR, 16)];
    bufs.extend((0..9).map(|_| Buf::read(DATA, 1 << 20)));
    bufs.push(Buf::write(STATUS, 1));
    rig.submit(&bufs).unwrap();
    assert_eq!(rig.status(), S_IOERR);
    assert_eq!(rig.image(), before);
    assert_eq!(rig.t.device().disk().stats().out_of_range, 0);
}

#[test]
fn unknown_request_types_are_unsupported() {
    let mut rig = Rig::live(SIZE, false);
    let before = rig.image();
    // SCSI, discard, write-zeroes, secure erase, zone reset, barrier, junk.
    for kind in [2, 11, 13, 14, 24, 0x8000_0000, 0xdead_beef] {
        let reply = rig.request(kind, 0, &[], 0);
        assert_eq!(reply.status, S_UNSUPP, "type {kind:#x}");
        assert_eq!(reply.used_len, 1);
    }
    let reply = rig.request(11, 0, &[0; 16], 0);
    assert_eq!(reply.status, S_UNSUPP);
    assert_eq!(rig.image(), before);
    assert_eq!(rig.t.device().stats().unsupported, 8);
}

#[test]
fn get_id() {
    let mut rig = Rig::live(SIZE, false);
    let reply = rig.request(T_GET_ID, 0, &[], 20);
    assert_eq!(reply.status, S_OK);
    assert_eq!(reply.used_len, 21);
    let mut id = b"disk.img".to_vec();
    id.resize(20, 0);
    assert_eq!(reply.data, id);
    // A longer buffer gets the 20 bytes.
    rig.t
        .device_mut()
        .set_id(b"a-serial-longer-than-twenty-bytes");
    let reply = rig.request(T_GET_ID, 0, &[], 64);
    assert_eq!(reply.status, S_OK);
    assert_eq!(reply.used_len, 21);
    assert_eq!(&reply.data[..20], b"a-serial-longer-than");
    assert!(reply.data[20..].iter().all(|&b| b == 0xcc));
    assert_eq!(rig.t.device().stats().get_ids, 2);
}

#[test]
fn interrupts_follow_completions() {
    let mut rig = Rig::live(SIZE, false);
    assert_eq!(rig.interrupts(), 0);
    rig.write(0, &[1; 512]);
    assert_eq!(rig.interrupts(), 1);
    assert_eq!(rig.t.interrupt_status(), 1);
    assert_eq!(TestDriver::ack_interrupt(&mut rig.t), 1);
    assert_eq!(rig.t.interrupt_status(), 0);
    // Several requests, one notification, one interrupt.
    for i in 0..4 {
        rig.header_at(HDR + 0x20 * i, T_IN, i);
        rig.drv.add_chain(&[
            Buf::read(HDR + 0x20 * i, HEADER_LEN as u32),
            Buf::write(DATA + 0x200 * i, 512),
            Buf::write(STATUS + i, 1),
        ]);
    }
    rig.drv.notify(&mut rig.t);
    assert_eq!(rig.interrupts(), 1);
    assert_eq!((0..4).filter_map(|_| rig.drv.pop_used()).count(), 4);
}

#[test]
fn paused_device_touches_nothing_until_resumed() {
    let mut rig = Rig::live(SIZE, false);
    let before = rig.image();
    rig.t.pause();
    rig.header_at(HDR, T_OUT, 5);
    rig.put(DATA, &[0xab; 1024]);
    rig.put(STATUS, &[S_UNANSWERED]);
    rig.drv.add_chain(&[
        Buf::read(HDR, 16),
        Buf::read(DATA, 1024),
        Buf::write(STATUS, 1),
    ]);
    rig.drv.notify(&mut rig.t);
    rig.drv.notify(&mut rig.t);
    assert_eq!(rig.image(), before);
    assert_eq!(rig.drv.used_idx(), 0);
    assert_eq!(rig.status(), S_UNANSWERED);
    assert_eq!(rig.interrupts(), 0);
    assert_eq!(rig.t.interrupt_status(), 0);
    assert_eq!(rig.t.device().stats().requests, 0);
    // The hypervisor may snapshot the rings meanwhile; still nothing.
    let _ = rig.t.state();
    assert_eq!(rig.drv.used_idx(), 0);

    rig.t.resume();
    assert_eq!(rig.status(), S_OK);
    assert_eq!(rig.drv.pop_used(), Some((0, 1)));
    assert_eq!(rig.drv.pop_used(), None);
    assert_eq!(rig.interrupts(), 1);
    let mut model = before;
    model[5 * 512..7 * 512].fill(0xab);
    assert_eq!(rig.image(), model);
    assert_eq!(rig.t.device().stats().writes, 1);
    assert_eq!(rig.t.device().disk().stats().writes, 1);
    // Done once: resuming again, or another notification, does nothing.
    rig.t.resume();
    rig.drv.notify(&mut rig.t);
    assert_eq!(rig.t.device().stats().requests, 1);
    assert_eq!(rig.drv.used_idx(), 1);
}
