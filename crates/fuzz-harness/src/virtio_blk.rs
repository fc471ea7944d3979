//! The virtio block device behind its MMIO transport, as a hostile guest
//! drives it: any guest RAM, any register writes in any order, queue
//! notifications at any time, so every descriptor chain, address and
//! length the request parser sees comes from the input.
//!
//! Guest RAM is small (1 to 16 pages) so that addresses land inside it as
//! easily as outside, and the disk small (1 to 64 sectors). After every
//! step the harness checks that the image kept its size (a request never
//! writes past the end), and that a device in `DEVICE_NEEDS_RESET` stays
//! there, and touches neither guest RAM nor the image, until the driver
//! resets it.

use std::sync::Arc;

use arbitrary::{Arbitrary, Unstructured};
use lazarus_virtio_blk::{Block, DiskImage};
use lazarus_virtio_mmio::{GuestMemory, MmioTransport, regs};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;

const PAGE: usize = 4096;
/// `DEVICE_NEEDS_RESET` in the status register.
const NEEDS_RESET: u32 = 0x40;

/// One thing the guest does.
#[derive(Arbitrary, Debug)]
enum Op {
    /// A 32-bit register write (offset taken modulo the register file).
    Write { reg: u16, value: u32 },
    /// A register read of any width.
    Read { offset: u16, width: u8 },
    /// `QueueNotify` for queue `q`.
    Notify(u8),
    /// The guest writes its memory.
    Poke { gpa: u16, bytes: Vec<u8> },
    /// The driver's usual start, to get past the status machine quickly.
    Start {
        features: u32,
        queue_size: u16,
        desc: u16,
        avail: u16,
        used: u16,
    },
    /// Pause and resume, as around a repair.
    PauseResume,
}

#[derive(Arbitrary, Debug)]
struct Input {
    pages: u8,
    sectors: u8,
    ram: Vec<u8>,
    ops: Vec<Op>,
}

fn write(t: &mut MmioTransport<Block>, reg: u32, value: u32) {
    t.write(u64::from(reg), &value.to_le_bytes());
}

/// Runs one input.
pub fn run(data: &[u8]) {
    let Ok(input) = Input::arbitrary(&mut Unstructured::new(data)) else {
        return;
    };
    let pages = usize::from(input.pages % 16) + 1;
    let Ok(mem) = GuestMemory::from_ranges(&[(GuestAddress(0), pages * PAGE)]) else {
        return;
    };
    let ram_len = input.ram.len().min(pages * PAGE);
    let _ = mem.write_slice(&input.ram[..ram_len], GuestAddress(0));
    let mem = Arc::new(mem);
    let Ok(dir) = tempfile::tempdir() else { return };
    let path = dir.path().join("fuzz.img");
    let size = (u64::from(input.sectors % 64) + 1) * 512;
    let Ok((disk, _)) = DiskImage::open_or_create(&path, size) else {
        return;
    };
    let Ok(irq) = EventFd::new(libc::EFD_NONBLOCK) else {
        return;
    };
    let Ok(mut t) = MmioTransport::new(Block::new(disk), mem.clone(), irq) else {
        return;
    };
    let ram = |m: &GuestMemory| {
        let mut buf = vec![0u8; pages * PAGE];
        let _ = m.read_slice(&mut buf, GuestAddress(0));
        buf
    };
    let image = || std::fs::read(&path).unwrap_or_default();
    for op in input.ops.iter().take(64) {
        let stuck = t.status() & NEEDS_RESET != 0;
        let (ram_before, image_before) = if stuck {
            (ram(&mem), image())
        } else {
            (Vec::new(), Vec::new())
        };
        let mut reset = false;
        match op {
            Op::Write { reg, value } => {
                let reg = (u32::from(*reg) % 0x200) & !3;
                reset = reg == regs::STATUS && *value == 0;
                write(&mut t, reg, *value);
            }
            Op::Read { offset, width } => {
                let mut buf = vec![0u8; usize::from(width % 8) + 1];
                t.read(u64::from(*offset % 0x200), &mut buf);
            }
            Op::Notify(q) => write(&mut t, regs::QUEUE_NOTIFY, u32::from(*q % 2)),
            Op::Poke { gpa, bytes } => {
                let at = usize::from(*gpa) % (pages * PAGE);
                let n = bytes.len().min(pages * PAGE - at);
                let _ = mem.write_slice(&bytes[..n], GuestAddress(at as u64));
                // The guest's own write, not the device's.
                if stuck {
                    continue;
                }
            }
            Op::Start {
                features,
                queue_size,
                desc,
                avail,
                used,
            } => {
                reset = true;
                write(&mut t, regs::STATUS, 0);
                write(&mut t, regs::STATUS, 1);
                write(&mut t, regs::STATUS, 3);
                write(&mut t, regs::DRIVER_FEATURES_SEL, 0);
                write(&mut t, regs::DRIVER_FEATURES, *features);
                write(&mut t, regs::DRIVER_FEATURES_SEL, 1);
                write(&mut t, regs::DRIVER_FEATURES, 1);
                write(&mut t, regs::STATUS, 11);
                write(&mut t, regs::QUEUE_SEL, 0);
                write(&mut t, regs::QUEUE_NUM, u32::from(*queue_size % 257));
                write(&mut t, regs::QUEUE_DESC_LOW, u32::from(*desc));
                write(&mut t, regs::QUEUE_AVAIL_LOW, u32::from(*avail));
                write(&mut t, regs::QUEUE_USED_LOW, u32::from(*used));
                write(&mut t, regs::QUEUE_READY, 1);
                write(&mut t, regs::STATUS, 15);
            }
            Op::PauseResume => {
                t.pause();
                t.resume();
            }
        }
        let now = image();
        assert_eq!(now.len() as u64, size, "the image changed size");
        if stuck && !reset {
            assert!(
                ram(&mem) == ram_before,
                "a device that needs a reset wrote guest RAM"
            );
            assert!(
                now == image_before,
                "a device that needs a reset wrote the image"
            );
        }
    }
}
