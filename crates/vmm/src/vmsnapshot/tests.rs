//! Unit tests of whole-VM snapshots' parts (RAM, page map, MSRs, device
//! state); whole VMs are snapshotted in `tests/snapshot.rs`.

use super::diff::diff_ram;
use super::msr::{
    MSR_IA32_APICBASE, MSR_IA32_TSC_DEADLINE, REQUIRED_MSRS, X2APIC_MSRS, candidate_list,
};
use super::pagemap::{
    PAGE, PageMapBufs, SCAN_REGIONS, pagemap_file, read_populated, scan_populated,
};
use super::ram::{PageOp, RamImage, copy_ram_in, copy_ram_out, ram_base, restore_plan, runs};
use crate::console::{CaptureBuffer, ConsoleOutput, ConsoleSink};
use crate::error::Error;
use crate::hypercall::Hypercalls;
use crate::memory::create_guest_ram;
use crate::serial::SerialDevice;
use vmm_sys_util::eventfd::EventFd;

#[test]
fn runs_of_pages() {
    let f = |v: &[u8]| v.iter().map(|&b| b != 0).collect::<Vec<bool>>();
    assert_eq!(runs(&f(&[])).count(), 0);
    assert_eq!(runs(&f(&[0, 0])).count(), 0);
    assert_eq!(
        runs(&f(&[1, 1, 0, 1, 0, 0, 1, 1, 1])).collect::<Vec<_>>(),
        vec![(0, 2), (3, 1), (6, 3)]
    );
    assert_eq!(runs(&f(&[0, 1])).collect::<Vec<_>>(), vec![(1, 1)]);
}

#[test]
fn restore_plan_copies_zeroes_and_skips() {
    let saved = [true, true, false, false, false, true, false];
    let now = [true, true, true, false, true, true, false];
    assert_eq!(
        restore_plan(&saved, Some(&now)),
        vec![
            (0, 2, PageOp::Copy),
            (2, 1, PageOp::Zero),
            (4, 1, PageOp::Zero),
            (5, 1, PageOp::Copy),
        ]
    );
    // Unknown current state: everything not saved is zeroed.
    assert_eq!(
        restore_plan(&saved, None),
        vec![
            (0, 2, PageOp::Copy),
            (2, 3, PageOp::Zero),
            (5, 1, PageOp::Copy),
            (6, 1, PageOp::Zero),
        ]
    );
    assert!(restore_plan(&[], None).is_empty());
}

#[test]
fn msr_candidates_are_deduplicated_and_ordered() {
    let listed = [0x10, 0x6e0, 0x1b, 0x802, 0x3b, 0xc000_0082, 0x10];
    let c = candidate_list(&listed);
    assert_eq!(c.last(), Some(&MSR_IA32_TSC_DEADLINE));
    assert_eq!(&c[..3], &[0x10, 0x3b, 0xc000_0082]);
    assert!(!c.contains(&MSR_IA32_APICBASE));
    assert!(!c.iter().any(|i| X2APIC_MSRS.contains(i)));
    for r in REQUIRED_MSRS {
        assert_eq!(c.iter().filter(|&&i| i == r).count(), 1, "{r:#x}");
    }
    assert_eq!(candidate_list(&[]).last(), Some(&MSR_IA32_TSC_DEADLINE));
}

#[test]
fn pagemap_sees_touched_pages_only() {
    let mem = create_guest_ram(16 << 20).unwrap();
    let len = 16 << 20;
    let base = ram_base(&mem, len).unwrap();
    // SAFETY: offsets inside the 16 MiB mapping.
    let zero = unsafe {
        base.add(5 * PAGE).write(7);
        base.add(9 * PAGE + 100).write(1);
        base.add(3000 * PAGE).write(1);
        // A read maps the shared zero page.
        base.add(20 * PAGE).read_volatile()
    };
    assert_eq!(zero, 0);
    let (mut pm, mut pop) = (PageMapBufs::default(), Vec::new());
    assert!(read_populated(base as usize, len, &mut pm, &mut pop));
    assert_eq!(pop.len(), len / PAGE);
    let set = |pop: &[bool]| -> Vec<usize> {
        pop.iter()
            .enumerate()
            .filter(|(_, p)| **p)
            .map(|(i, _)| i)
            .collect()
    };
    let got = set(&pop);
    // The fallback (no PAGEMAP_SCAN) counts the zero page as data.
    assert!(got == [5, 9, 3000] || got == [5, 9, 20, 3000], "{got:?}");
    // This host's kernel (6.18) has PAGEMAP_SCAN: ranges, zero page
    // left out, in calls of at most SCAN_REGIONS ranges.
    let mut regions = Vec::new();
    let mut pop = vec![false; len / PAGE];
    scan_populated(
        pagemap_file().unwrap(),
        base as usize,
        len,
        &mut regions,
        &mut pop,
    )
    .unwrap();
    assert_eq!(set(&pop), [5, 9, 3000]);
    // Many ranges: more than one call.
    for i in 0..2 * SCAN_REGIONS + 3 {
        // SAFETY: every other page of the first 8 MiB.
        unsafe { base.add((100 + 2 * i) * PAGE).write(1) };
    }
    let mut pop = vec![false; len / PAGE];
    scan_populated(
        pagemap_file().unwrap(),
        base as usize,
        len,
        &mut regions,
        &mut pop,
    )
    .unwrap();
    assert_eq!(pop.iter().filter(|&&p| p).count(), 3 + 2 * SCAN_REGIONS + 3);
    assert!(pop[100] && !pop[101] && pop[102]);
}

#[test]
fn ram_round_trip_restores_data_and_zeroes_new_pages() {
    let len = 16 << 20;
    let mem = create_guest_ram(len as u64).unwrap();
    let base = ram_base(&mem, len).unwrap();
    // SAFETY: offsets inside the 16 MiB mapping.
    unsafe {
        base.add(3 * PAGE).write_bytes(0xab, PAGE);
        base.add(len - 1).write(0xcd);
    }
    let mut ram = RamImage::new(len);
    copy_ram_out(&mem, len, &mut ram).unwrap();
    assert_eq!(ram.populated.iter().filter(|&&p| p).count(), 2);
    // The guest goes on: changes a saved page, touches new ones.
    // SAFETY: as above.
    unsafe {
        base.add(3 * PAGE + 8).write(0);
        base.add(100 * PAGE).write_bytes(0x11, 3 * PAGE);
    }
    copy_ram_in(&mem, len, &ram).unwrap();
    let mut back = vec![0u8; len];
    // SAFETY: reads the whole mapping, nothing writes it meanwhile.
    unsafe { std::ptr::copy_nonoverlapping(base, back.as_mut_ptr(), len) };
    let mut want = vec![0u8; len];
    want[3 * PAGE..4 * PAGE].fill(0xab);
    want[len - 1] = 0xcd;
    assert!(back == want, "RAM differs after the restore");
    // A snapshot of the restored RAM is the same snapshot.
    let mut again = RamImage::new(len);
    copy_ram_out(&mem, len, &mut again).unwrap();
    let mut diffs = Vec::new();
    diff_ram(&ram, &again, &mut diffs);
    assert!(diffs.is_empty(), "{diffs:?}");
    // Zeroed pages stay resident; the snapshot copies them as zeros.
    // SAFETY: page 200 lies inside the `len`-byte mapping `base` points
    // at, which `mem` keeps alive; no vCPU runs in this test.
    unsafe { base.add(200 * PAGE).write(1) };
    copy_ram_out(&mem, len, &mut again).unwrap();
    diff_ram(&ram, &again, &mut diffs);
    assert_eq!(diffs.len(), 1, "{diffs:?}");
}

#[test]
fn serial_state_round_trip_keeps_the_sink() {
    let cap = CaptureBuffer::new();
    let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
    let mut dev = SerialDevice::new(
        irq.try_clone().unwrap(),
        ConsoleSink::new(ConsoleOutput::Capture(cap.clone())),
    );
    dev.write(1, &[1]); // IER: RX interrupt on
    dev.write(7, &[0x5a]); // scratch
    assert_eq!(dev.enqueue_input(b"abc"), 3);
    let saved = dev.save_state();
    let mut b = [0u8];
    dev.read(0, &mut b);
    assert_eq!(b[0], b'a');
    dev.write(7, &[0]);
    let _ = irq.read();
    dev.restore_state(&saved).unwrap();
    assert_eq!(dev.save_state(), saved);
    // The pending RX interrupt is raised again.
    assert_eq!(irq.read().unwrap(), 1);
    let mut got = Vec::new();
    for _ in 0..3 {
        dev.read(0, &mut b);
        got.push(b[0]);
    }
    assert_eq!(got, b"abc");
    dev.write(0, b"out");
    assert_eq!(cap.text(), "out");
    // A FIFO larger than the UART's is refused, the device unharmed.
    let mut bad = saved.clone();
    bad.in_buffer = vec![0; 65];
    assert!(matches!(
        dev.restore_state(&bad),
        Err(Error::SnapshotMismatch(_))
    ));
    dev.write(0, b"!");
    assert_eq!(cap.text(), "out!");
}

#[test]
fn hypercall_state_round_trip() {
    use lazarus_abi::hypercall::{HC_MILESTONE, HC_REGISTER_ROOT, Hypercall};
    let mem = create_guest_ram(16 << 20).unwrap();
    let hc = Hypercalls::new();
    let stats = crate::stats::ExitStats::default();
    let mut console = Vec::new();
    let mut call = |nr: u64, a0: u64| {
        let block = Hypercall {
            nr,
            args: [a0, 0, 0, 0, 0],
            ret: 0,
        };
        crate::memory::write_obj(&mem, 0x8000, &block).unwrap();
        hc.handle_block(&mem, 0x8000, &mut console, &stats)
    };
    call(HC_MILESTONE, 1);
    let saved = hc.save_state();
    call(HC_MILESTONE, 2);
    call(HC_MILESTONE, 1);
    // A bad root registration is rejected and changes nothing.
    call(HC_REGISTER_ROOT, 0x1234);
    assert_eq!(hc.milestones().len(), 2);
    hc.restore_state(&saved);
    let ms = hc.milestones();
    assert_eq!(ms.len(), 1);
    assert_eq!((ms[0].id, ms[0].count), (1, 1));
    assert_eq!(hc.root_gpa(), None);
    // The call counters are host statistics: not rolled back.
    assert_eq!(hc.counts().0, 4);
}
