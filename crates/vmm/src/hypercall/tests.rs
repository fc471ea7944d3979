//! Unit tests of the hypercall port.

use super::*;
use crate::memory::create_guest_ram;
use crate::root::tests::{ROOT_SIZE, plant_root};
use lazarus_abi::hypercall::ABI_VERSION;
use lazarus_abi::hypercall::{MILESTONE_KERNEL_READY, MILESTONE_SHELL_PROMPT};
use vm_memory::{Bytes, GuestAddress};

const MEM: u64 = 16 << 20;
const BLOCK: u64 = 0x8_0000;

struct Fixture {
    mem: GuestRam,
    hc: Hypercalls,
    stats: ExitStats,
    console: Vec<u8>,
}

impl Fixture {
    fn new() -> Self {
        Self {
            mem: create_guest_ram(MEM).unwrap(),
            hc: Hypercalls::new(),
            stats: ExitStats::default(),
            console: Vec::new(),
        }
    }

    /// Issues a hypercall through a block at `BLOCK`; returns (ret, action).
    fn call(&mut self, nr: u64, args: [u64; 5]) -> (i64, HcAction) {
        self.call_at(BLOCK, nr, args)
    }

    fn call_at(&mut self, gpa: u64, nr: u64, args: [u64; 5]) -> (i64, HcAction) {
        let block = Hypercall {
            nr,
            args,
            ret: 0x5555,
        };
        write_obj(&self.mem, gpa, &block).unwrap();
        let action = self.out(&(gpa as u32).to_le_bytes());
        let ret: i64 = read_obj(&self.mem, gpa + RET_OFFSET).unwrap();
        (ret, action)
    }

    fn out(&mut self, data: &[u8]) -> HcAction {
        self.hc
            .handle_port_write(&self.mem, data, &mut self.console, &self.stats)
    }
}

#[test]
fn poweroff_reboot_and_unknown() {
    let mut f = Fixture::new();
    assert_eq!(
        f.call(HC_POWEROFF, [3, 0, 0, 0, 0]),
        (0, HcAction::PowerOff(3))
    );
    // -1 as i32, sign-extended or zero-extended.
    assert_eq!(
        f.call(HC_POWEROFF, [u64::MAX, 0, 0, 0, 0]).1,
        HcAction::PowerOff(-1)
    );
    assert_eq!(
        f.call(HC_POWEROFF, [0xffff_ffff, 0, 0, 0, 0]).1,
        HcAction::PowerOff(-1)
    );
    assert_eq!(f.call(HC_REBOOT, [0; 5]), (0, HcAction::Reboot));
    for nr in [0, 9, 999, u64::MAX] {
        assert_eq!(f.call(nr, [0; 5]), (-errno::ENOSYS, HcAction::Continue));
    }
    assert_eq!(
        f.call(HC_RECOVERED, [3, 0, 0, 0, 0]),
        (0, HcAction::Recovered(3))
    );
}

#[test]
fn hostile_block_addresses_are_ignored() {
    let mut f = Fixture::new();
    // Beyond RAM, straddling the end, unaligned, at the 4 GiB limit.
    for gpa in [
        MEM as u32,
        (MEM - 8) as u32,
        BLOCK as u32 + 4,
        u32::MAX,
        u32::MAX - 7,
    ] {
        assert_eq!(f.out(&gpa.to_le_bytes()), HcAction::Continue);
    }
    // Wrong-size accesses.
    for data in [&[][..], &[1][..], &[0, 0, 8][..], &[0, 0, 8, 0, 0][..]] {
        assert_eq!(f.out(data), HcAction::Continue);
    }
    // A valid poweroff block straddling the end is not executed.
    let straddle = MEM - 16;
    f.mem
        .write_slice(&HC_POWEROFF.to_le_bytes(), GuestAddress(straddle))
        .unwrap();
    assert_eq!(f.out(&(straddle as u32).to_le_bytes()), HcAction::Continue);
    assert_eq!(f.hc.counts(), (0, 10));
}

#[test]
fn console_write_checks_buffer() {
    let mut f = Fixture::new();
    f.mem.write_slice(b"hello", GuestAddress(0x9000)).unwrap();
    assert_eq!(
        f.call(HC_CONSOLE_WRITE, [0x9000, 5, 0, 0, 0]),
        (5, HcAction::Continue)
    );
    assert_eq!(f.console, b"hello");
    let efault = (-errno::EFAULT, HcAction::Continue);
    assert_eq!(f.call(HC_CONSOLE_WRITE, [MEM, 1, 0, 0, 0]), efault);
    assert_eq!(f.call(HC_CONSOLE_WRITE, [MEM - 2, 4, 0, 0, 0]), efault);
    assert_eq!(f.call(HC_CONSOLE_WRITE, [u64::MAX, 2, 0, 0, 0]), efault);
    assert_eq!(f.call(HC_CONSOLE_WRITE, [u64::MAX - 1, 2, 0, 0, 0]), efault);
    assert_eq!(
        f.call(HC_CONSOLE_WRITE, [0x9000, CONSOLE_WRITE_MAX + 1, 0, 0, 0]),
        (-errno::E2BIG, HcAction::Continue)
    );
    assert_eq!(
        f.call(HC_CONSOLE_WRITE, [0x9000, u64::MAX, 0, 0, 0]),
        (-errno::E2BIG, HcAction::Continue)
    );
    assert_eq!(
        f.call(HC_CONSOLE_WRITE, [0x9000, 0, 0, 0, 0]),
        (0, HcAction::Continue)
    );
    assert_eq!(f.console, b"hello");
}

#[test]
fn register_root_validates_everything() {
    let mut f = Fixture::new();
    let v = u64::from(ABI_VERSION);
    let root = 0x20_0000;
    plant_root(&f.mem, root);
    let einval = (-errno::EINVAL, HcAction::Continue);
    let efault = (-errno::EFAULT, HcAction::Continue);
    assert_eq!(
        f.call(HC_REGISTER_ROOT, [root, ROOT_SIZE - 8, v, 0, 0]),
        einval
    );
    assert_eq!(f.call(HC_REGISTER_ROOT, [root, 0, v, 0, 0]), einval);
    assert_eq!(f.call(HC_REGISTER_ROOT, [root, u64::MAX, v, 0, 0]), einval);
    assert_eq!(
        f.call(HC_REGISTER_ROOT, [root, ROOT_SIZE, v + 1, 0, 0]),
        einval
    );
    assert_eq!(
        f.call(HC_REGISTER_ROOT, [root + 4, ROOT_SIZE, v, 0, 0]),
        efault
    );
    assert_eq!(f.call(HC_REGISTER_ROOT, [MEM, ROOT_SIZE, v, 0, 0]), efault);
    assert_eq!(
        f.call(HC_REGISTER_ROOT, [MEM - 8, ROOT_SIZE, v, 0, 0]),
        efault
    );
    assert_eq!(
        f.call(HC_REGISTER_ROOT, [u64::MAX - 7, ROOT_SIZE, v, 0, 0]),
        efault
    );
    // Right size and version, but no root there (bad magic).
    assert_eq!(
        f.call(HC_REGISTER_ROOT, [0x40_0000, ROOT_SIZE, v, 0, 0]),
        einval
    );
    assert_eq!(f.hc.root_gpa(), None);
    assert_eq!(
        f.call(HC_REGISTER_ROOT, [root, ROOT_SIZE, v, 0, 0]),
        (0, HcAction::Continue)
    );
    assert_eq!(f.hc.root_gpa(), Some(root));
}

#[test]
fn milestones_and_ext_events() {
    let mut f = Fixture::new();
    assert_eq!(
        f.call(HC_MILESTONE, [MILESTONE_KERNEL_READY, 0, 0, 0, 0]),
        (0, HcAction::Milestone(MILESTONE_KERNEL_READY))
    );
    f.call(HC_MILESTONE, [MILESTONE_SHELL_PROMPT, 0, 0, 0, 0]);
    f.call(HC_MILESTONE, [MILESTONE_SHELL_PROMPT, 0, 0, 0, 0]);
    let m = f.hc.milestone(MILESTONE_SHELL_PROMPT).unwrap();
    assert_eq!(m.count, 2);
    assert!(m.at >= f.hc.milestone(MILESTONE_KERNEL_READY).unwrap().at);
    for bad in [0, MILESTONE_MAX + 1, u64::MAX] {
        assert_eq!(
            f.call(HC_MILESTONE, [bad, 0, 0, 0, 0]),
            (-errno::EINVAL, HcAction::Continue)
        );
    }
    assert_eq!(f.hc.milestones().len(), 2);

    assert_eq!(
        f.call(HC_EXT_EVENT, [EXT_EVENT_LOADED, 2, 0, 0, 0]),
        (
            0,
            HcAction::ExtEvent(ExtEvent {
                loaded: true,
                slot: 2
            })
        )
    );
    f.call(HC_EXT_EVENT, [EXT_EVENT_UNLOADED, 2, 0, 0, 0]);
    assert_eq!(
        f.hc.ext_events(),
        (
            2,
            Some(ExtEvent {
                loaded: false,
                slot: 2
            })
        )
    );
    let einval = (-errno::EINVAL, HcAction::Continue);
    assert_eq!(f.call(HC_EXT_EVENT, [2, 0, 0, 0, 0]), einval);
    assert_eq!(f.call(HC_EXT_EVENT, [0, MAX_EXTS as u64, 0, 0, 0]), einval);
    assert_eq!(f.call(HC_EXT_EVENT, [0, u64::MAX, 0, 0, 0]), einval);
    assert_eq!(f.hc.ext_events().0, 2);
}

#[test]
fn random_blocks_never_panic_or_escape_ram() {
    let mut f = Fixture::new();
    // Deterministic xorshift; values biased toward interesting edges.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        match x % 8 {
            0 => 0,
            1 => u64::MAX - (x >> 60),
            2 => MEM - (x >> 58),
            3 => x % 8,
            _ => x,
        }
    };
    for _ in 0..5000 {
        let nr = next() % 10;
        let args = [next(), next(), next(), next(), next()];
        let gpa = (next() % MEM) & !7;
        if gpa + BLOCK_SIZE > MEM {
            continue;
        }
        let (ret, _) = f.call_at(gpa, nr, args);
        assert!(ret <= CONSOLE_WRITE_MAX as i64);
        f.console.clear();
        // Raw port values, including hostile ones.
        let raw = (next() & 0xffff_ffff) as u32;
        let _ = f.out(&raw.to_le_bytes());
    }
}

#[test]
fn block_at_the_last_valid_address_works() {
    let mut f = Fixture::new();
    let gpa = MEM - BLOCK_SIZE;
    // Block addresses are 32-bit; RAM here is 16 MiB so this fits.
    assert_eq!(
        f.call_at(gpa, HC_POWEROFF, [0; 5]),
        (0, HcAction::PowerOff(0))
    );
}

#[test]
fn cpu_on_checks_everything_and_starts_once() {
    let mut f = Fixture::new();
    f.hc = Hypercalls::with_vcpus(2);
    let good = [1, 0xffff_ffff_8000_1000, 0xffff_ffff_8010_0000, 7, 0x1000];
    let bad = |i: usize, v: u64| {
        let mut a = good;
        a[i] = v;
        a
    };
    for args in [
        bad(0, 2),                     // no such vCPU
        bad(0, u64::MAX),              // likewise
        bad(1, 0x0000_8000_0000_0000), // non-canonical entry
        bad(2, 0x1234_0000_0000_0000), // non-canonical stack
        bad(4, 0x1001),                // unaligned page table
        bad(4, MEM),                   // page table outside RAM
    ] {
        assert_eq!(
            f.call(HC_CPU_ON, args),
            (-errno::EINVAL, HcAction::Continue),
            "{args:x?}"
        );
    }
    assert_eq!(f.hc.take_cpu_start(1), None);
    // The boot vCPU runs already.
    assert_eq!(
        f.call(HC_CPU_ON, bad(0, 0)),
        (-errno::EBUSY, HcAction::Continue)
    );
    assert_eq!(f.call(HC_CPU_ON, good), (0, HcAction::StartCpu(1)));
    assert_eq!(f.call(HC_CPU_ON, good), (-errno::EBUSY, HcAction::Continue));
    let start = f.hc.take_cpu_start(1).unwrap();
    assert_eq!(
        (start.rip, start.rsp, start.arg, start.cr3),
        (good[1], good[2], 7, 0x1000)
    );
    assert_eq!(f.hc.take_cpu_start(1), None);
    // A snapshot from before the start brings the vCPU back unstarted.
    let saved = Hypercalls::with_vcpus(2).save_state();
    f.hc.restore_state(&saved);
    assert_eq!(f.call(HC_CPU_ON, good), (0, HcAction::StartCpu(1)));
}
