//! A block device on a temporary image, driven as a guest driver would.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;

use lazarus_virtio_blk::{Block, BlockTransport, DiskImage, HEADER_LEN};
use lazarus_virtio_mmio::testing::{Buf, RingLayout, TestDriver};
use lazarus_virtio_mmio::{GuestMemory, MmioTransport};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

pub const MEM_SIZE: usize = 4 << 20;
pub const RING: u64 = 0x1000;
pub const RING_SIZE: u16 = 64;
pub const HDR: u64 = 0x10000;
pub const STATUS: u64 = 0x10100;
pub const DATA: u64 = 0x20000;
/// Room for data at `DATA`.
pub const DATA_MAX: u64 = 2 << 20;

pub const T_IN: u32 = 0;
pub const T_OUT: u32 = 1;
pub const T_FLUSH: u32 = 4;
pub const T_GET_ID: u32 = 8;
pub const S_OK: u8 = 0;
pub const S_IOERR: u8 = 1;
pub const S_UNSUPP: u8 = 2;
/// What the status byte holds before the device answers.
pub const S_UNANSWERED: u8 = 0xee;

pub const VERSION_1: u64 = 1 << 32;
pub const F_SIZE_MAX: u64 = 1 << 1;
pub const F_SEG_MAX: u64 = 1 << 2;
pub const F_RO: u64 = 1 << 5;
pub const F_BLK_SIZE: u64 = 1 << 6;
pub const F_FLUSH: u64 = 1 << 9;

pub struct Rig {
    pub t: BlockTransport,
    pub drv: TestDriver,
    pub mem: Arc<GuestMemory>,
    pub path: PathBuf,
    _dir: tempfile::TempDir,
}

/// An answered request.
#[derive(Debug, PartialEq, Eq)]
pub struct Reply {
    pub status: u8,
    pub used_len: u32,
    pub data: Vec<u8>,
}

pub fn memory() -> Arc<GuestMemory> {
    Arc::new(GuestMemory::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap())
}

/// A new image of `size` bytes holding `fill(offset)` at every byte.
pub fn image(dir: &tempfile::TempDir, size: usize, fill: impl Fn(usize) -> u8) -> PathBuf {
    let path = dir.path().join("disk.img");
    let bytes: Vec<u8> = (0..size).map(fill).collect();
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Pseudo-random image contents.
pub fn pattern(i: usize) -> u8 {
    (i.wrapping_mul(2_654_435_761) >> 13) as u8
}

impl Rig {
    /// A device on a new image of `size` bytes (patterned), not yet
    /// initialized.
    pub fn new(size: usize, read_only: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = image(&dir, size, pattern);
        let disk = DiskImage::open(&path, read_only).unwrap();
        let mem = memory();
        let irq = EventFd::new(EFD_NONBLOCK).unwrap();
        let t = MmioTransport::new(Block::new(disk), mem.clone(), irq).unwrap();
        let drv = TestDriver::new(mem.clone(), RingLayout::at(RING, RING_SIZE));
        Self {
            t,
            drv,
            mem,
            path,
            _dir: dir,
        }
    }

    /// A device on a new image, initialized with every offered feature.
    pub fn live(size: usize, read_only: bool) -> Self {
        let mut rig = Self::new(size, read_only);
        rig.drv.init(&mut rig.t, |offered| offered).unwrap();
        rig
    }

    pub fn image(&self) -> Vec<u8> {
        std::fs::read(&self.path).unwrap()
    }

    pub fn put(&self, addr: u64, bytes: &[u8]) {
        self.mem.write_slice(bytes, GuestAddress(addr)).unwrap();
    }

    pub fn get(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut buf = vec![0; len];
        self.mem.read_slice(&mut buf, GuestAddress(addr)).unwrap();
        buf
    }

    /// Writes a request header at `addr`.
    pub fn header_at(&self, addr: u64, kind: u32, sector: u64) {
        let mut h = [0u8; HEADER_LEN as usize];
        h[..4].copy_from_slice(&kind.to_le_bytes());
        h[8..].copy_from_slice(&sector.to_le_bytes());
        self.put(addr, &h);
    }

    /// Submits `bufs` as one chain, notifies, and returns the used element
    /// (`None`: nothing was completed).
    pub fn submit(&mut self, bufs: &[Buf]) -> Option<(u32, u32)> {
        self.put(STATUS, &[S_UNANSWERED]);
        let head = self.drv.add_chain(bufs);
        self.drv.notify(&mut self.t);
        let used = self.drv.pop_used();
        if let Some((id, _)) = used {
            assert_eq!(id, u32::from(head));
        }
        used
    }

    pub fn status(&self) -> u8 {
        self.get(STATUS, 1)[0]
    }

    /// The usual layout: header, data (`out` read by the device, or
    /// `in_len` bytes written by it), status.
    pub fn request(&mut self, kind: u32, sector: u64, out: &[u8], in_len: u32) -> Reply {
        assert!(out.len() as u64 <= DATA_MAX && u64::from(in_len) <= DATA_MAX);
        self.header_at(HDR, kind, sector);
        let mut bufs = vec![Buf::read(HDR, HEADER_LEN as u32)];
        if !out.is_empty() {
            self.put(DATA, out);
            bufs.push(Buf::read(DATA, out.len() as u32));
        }
        if in_len > 0 {
            self.put(DATA, &vec![0xcc; in_len as usize]);
            bufs.push(Buf::write(DATA, in_len));
        }
        bufs.push(Buf::write(STATUS, 1));
        let (_, used_len) = self.submit(&bufs).expect("request completed");
        let status = self.status();
        assert_ne!(status, S_UNANSWERED, "status byte not written");
        Reply {
            status,
            used_len,
            data: self.get(DATA, in_len as usize),
        }
    }

    pub fn write(&mut self, sector: u64, data: &[u8]) -> u8 {
        self.request(T_OUT, sector, data, 0).status
    }

    pub fn read(&mut self, sector: u64, len: u32) -> Reply {
        self.request(T_IN, sector, &[], len)
    }

    pub fn flush(&mut self) -> u8 {
        self.request(T_FLUSH, 0, &[], 0).status
    }

    /// Interrupts signalled since the last call.
    pub fn interrupts(&self) -> u64 {
        self.t.irq().read().unwrap_or(0)
    }

    pub fn config_u64(&self, offset: u64) -> u64 {
        let mut b = [0u8; 8];
        self.t.read(0x100 + offset, &mut b);
        u64::from_le_bytes(b)
    }

    pub fn config_u32(&self, offset: u64) -> u32 {
        let mut b = [0u8; 4];
        self.t.read(0x100 + offset, &mut b);
        u32::from_le_bytes(b)
    }
}
