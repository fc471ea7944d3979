//! The hypercall port ([`Hypercalls::handle_port_write`] and
//! [`Hypercalls::handle_block`]) as a hostile guest drives it: any RAM
//! contents, any block address, call number and arguments, in any order.
//!
//! Guest RAM is small (1 to 8 pages) so that the fuzzer finds addresses
//! inside it as easily as outside. After every call the harness checks
//! that the hypervisor wrote guest RAM only where it may (the `ret` field
//! of a block it accepted) and that a console write passed exactly the
//! guest's bytes.

use std::io::{self, Write};

use arbitrary::{Arbitrary, Unstructured};
use lazarus_abi::hypercall::{
    ABI_VERSION, HC_CONSOLE_WRITE, HC_CPU_ON, Hypercall, ROOT_MAGIC, RootHeader,
};
use lazarus_vmm::MAX_VCPUS;
use lazarus_vmm::hypercall::Hypercalls;
use lazarus_vmm::memory::{GuestRam, read_bytes, write_bytes};
use lazarus_vmm::stats::ExitStats;
use vm_memory::GuestAddress;
use zerocopy::IntoBytes;

const PAGE: u64 = 4096;
/// Offset of `ret` in a block.
const RET_OFFSET: u64 = std::mem::offset_of!(Hypercall, ret) as u64;

/// A hypercall number: mostly the real ones.
#[derive(Arbitrary, Debug)]
enum Nr {
    /// `HC_*` number 1 to 8 (others: 0 or past the last).
    Known(u8),
    Raw(u64),
}

/// An argument: any value, or an address inside RAM.
#[derive(Arbitrary, Debug)]
enum Arg {
    Raw(u64),
    /// Offset into RAM (taken modulo its size).
    InRam(u32),
}

/// One thing the guest does.
#[derive(Arbitrary, Debug)]
enum Op {
    /// Writes a block at `gpa` (if it fits in RAM) and `out`s its address.
    Call { gpa: Arg, nr: Nr, args: [Arg; 5] },
    /// An `out` of any width and value to the port.
    Out(Vec<u8>),
    /// A block address no 32-bit `out` can give (the port decoder's
    /// caller never passes one, but the function takes a u64).
    Block(u64),
    /// The guest writes its memory.
    Poke { gpa: u32, bytes: Vec<u8> },
    /// The guest writes a valid state-root header of `size` bytes.
    PlantRoot { gpa: u32, size: u32 },
    /// Snapshot and restore the bookkeeping.
    SaveRestore,
    /// A vCPU thread picks up its start.
    TakeStart(u32),
}

/// The whole input.
#[derive(Arbitrary, Debug)]
struct Input {
    pages: u8,
    vcpus: u8,
    ram: Vec<u8>,
    ops: Vec<Op>,
}

/// A console that keeps only the latest write (the harness compares it
/// with guest RAM), so that memory stays bounded however many calls run.
#[derive(Default)]
struct LastWrite {
    last: Vec<u8>,
    writes: u64,
}

impl Write for LastWrite {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.last.clear();
        self.last.extend_from_slice(buf);
        self.writes += 1;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The VM as the port sees it.
struct Vm {
    mem: GuestRam,
    size: u64,
    hc: Hypercalls,
    stats: ExitStats,
    console: LastWrite,
}

impl Vm {
    fn arg(&self, a: &Arg) -> u64 {
        match *a {
            Arg::Raw(v) => v,
            Arg::InRam(off) => u64::from(off) % self.size,
        }
    }

    fn ram(&self) -> Vec<u8> {
        read_bytes(&self.mem, 0, self.size).unwrap_or_default()
    }

    /// Runs `call`, checking that it wrote RAM only at `gpa`'s `ret` and
    /// only when the block was usable (aligned and in RAM).
    fn checked(&mut self, gpa: u64, call: impl FnOnce(&mut Self)) {
        let before = self.ram();
        let (calls, rejected) = self.hc.counts();
        let writes = self.console.writes;
        call(self);
        let after = self.ram();
        let (calls_now, rejected_now) = self.hc.counts();
        // The block as the hypervisor read it, if it is usable.
        let block = usize::try_from(gpa)
            .ok()
            .filter(|_| gpa.is_multiple_of(8))
            .and_then(|at| before.get(at..at.checked_add(size_of::<Hypercall>())?));
        let Some(block) = block else {
            assert_eq!(
                (calls_now, rejected_now),
                (calls, rejected + 1),
                "an unusable block at {gpa:#x} was not rejected"
            );
            assert!(before == after, "RAM changed (unusable block {gpa:#x})");
            return;
        };
        assert_eq!(
            calls_now,
            calls + 1,
            "a usable block at {gpa:#x} was not run"
        );
        // Only `ret` may change (slices compare with memcmp, uninstrumented,
        // which keeps runs fast).
        let ret_at = (gpa + RET_OFFSET) as usize;
        let ret_end = ret_at + size_of::<i64>();
        assert!(
            before[..ret_at] == after[..ret_at] && before[ret_end..] == after[ret_end..],
            "RAM outside the result of the block at {gpa:#x} changed"
        );
        let mut hc = Hypercall::default();
        hc.as_mut_bytes().copy_from_slice(block);
        let mut ret = [0u8; 8];
        ret.copy_from_slice(&after[ret_at..ret_end]);
        let ret = i64::from_le_bytes(ret);
        // A console write passes the guest's bytes, no more, no less.
        if hc.nr == HC_CONSOLE_WRITE && ret > 0 {
            let [addr, len, ..] = hc.args;
            assert_eq!(self.console.writes, writes + 1);
            assert_eq!(ret as u64, len);
            let sent = usize::try_from(addr)
                .ok()
                .and_then(|a| before.get(a..a.checked_add(usize::try_from(len).ok()?)?));
            assert_eq!(sent, Some(&self.console.last[..]));
        } else {
            assert_eq!(self.console.writes, writes, "console written by {hc:?}");
        }
        if hc.nr == HC_CPU_ON && ret == 0 {
            assert!(hc.args[0] < u64::from(MAX_VCPUS));
        }
    }
}

fn decode(data: &[u8]) -> Option<Input> {
    Input::arbitrary_take_rest(Unstructured::new(data)).ok()
}

/// The guest RAM and operations an input stands for, to read a crashing
/// input.
pub fn describe(data: &[u8]) -> String {
    format!("{:#?}", decode(data))
}

/// Runs one input.
pub fn run(data: &[u8]) {
    let Some(input) = decode(data) else {
        return;
    };
    let size = (1 + u64::from(input.pages % 8)) * PAGE;
    let mem = match GuestRam::from_ranges(&[(GuestAddress(0), size as usize)]) {
        Ok(mem) => mem,
        Err(e) => panic!("cannot allocate {size} bytes of guest RAM: {e}"),
    };
    let fill = &input.ram[..input.ram.len().min(size as usize)];
    if let Err(e) = write_bytes(&mem, 0, fill) {
        panic!("cannot fill guest RAM: {e}");
    }
    let vcpus = 1 + u32::from(input.vcpus) % MAX_VCPUS;
    let mut vm = Vm {
        mem,
        size,
        hc: Hypercalls::with_vcpus(vcpus),
        stats: ExitStats::default(),
        console: LastWrite::default(),
    };
    for op in &input.ops {
        match op {
            Op::Call { gpa, nr, args } => {
                // The port carries 32 bits.
                let gpa = vm.arg(gpa) & u64::from(u32::MAX);
                let nr = match *nr {
                    Nr::Known(n) => u64::from(n % 10),
                    Nr::Raw(n) => n,
                };
                let block = Hypercall {
                    nr,
                    args: args.each_ref().map(|a| vm.arg(a)),
                    ret: 0x5555,
                };
                // The guest writes its block where it fits.
                let _ = write_bytes(&vm.mem, gpa, block.as_bytes());
                let out = (gpa as u32).to_le_bytes();
                vm.checked(gpa, |vm| {
                    vm.hc
                        .handle_port_write(&vm.mem, &out, &mut vm.console, &vm.stats);
                });
            }
            Op::Out(bytes) => {
                let before = vm.ram();
                let counts = vm.hc.counts();
                vm.hc
                    .handle_port_write(&vm.mem, bytes, &mut vm.console, &vm.stats);
                if bytes.len() != 4 {
                    assert_eq!(before, vm.ram(), "a {}-byte out wrote RAM", bytes.len());
                    assert_eq!(vm.hc.counts(), (counts.0, counts.1 + 1));
                }
            }
            Op::Block(gpa) => {
                let gpa = *gpa;
                vm.checked(gpa, |vm| {
                    vm.hc.handle_block(&vm.mem, gpa, &mut vm.console, &vm.stats);
                });
            }
            Op::Poke { gpa, bytes } => {
                let _ = write_bytes(&vm.mem, u64::from(*gpa) % size, bytes);
            }
            Op::PlantRoot {
                gpa,
                size: root_size,
            } => {
                let header = RootHeader {
                    magic: ROOT_MAGIC,
                    abi_version: ABI_VERSION,
                    root_size: *root_size,
                    ..RootHeader::default()
                };
                let at = (u64::from(*gpa) % size) & !7;
                let _ = write_bytes(&vm.mem, at, header.as_bytes());
            }
            Op::SaveRestore => {
                let saved = vm.hc.save_state();
                vm.hc.restore_state(&saved);
                assert_eq!(vm.hc.root_gpa(), saved.root_gpa);
            }
            Op::TakeStart(id) => {
                let _ = vm.hc.take_cpu_start(*id);
            }
        }
    }
}
