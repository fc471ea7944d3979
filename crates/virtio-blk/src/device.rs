//! The block device: features, configuration space, request execution.

use std::mem::offset_of;

use lazarus_virtio_mmio::{GuestMemory, RingFault, VirtioDevice};
use tracing::debug;
use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_F_BLK_SIZE, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO, VIRTIO_BLK_F_SEG_MAX,
    VIRTIO_BLK_F_SIZE_MAX, VIRTIO_BLK_ID_BYTES, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK,
    virtio_blk_config,
};
use virtio_bindings::virtio_ids::VIRTIO_ID_BLOCK;
use virtio_queue::DescriptorChain;
use vm_memory::{Bytes, GuestAddress};

use crate::disk::DiskImage;
use crate::request::{Op, Segment, parse};
use crate::{MAX_SEGMENT_BYTES, MAX_SEGMENTS, QUEUE_SIZE, SECTOR_SIZE};

/// Bytes copied between the image and guest memory at a time.
const CHUNK: usize = 64 << 10;

/// The configuration space: the fields up to `blk_size` (24 bytes) are
/// filled; the rest of `struct virtio_blk_config` reads as zero.
const CONFIG_LEN: usize = size_of::<virtio_blk_config>();

/// Counters of the requests the device answered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlockStats {
    /// Requests answered (each chain completed once).
    pub requests: u64,
    /// `IN` requests done.
    pub reads: u64,
    /// `OUT` requests done.
    pub writes: u64,
    /// `FLUSH` requests done.
    pub flushes: u64,
    /// `GET_ID` requests done.
    pub get_ids: u64,
    /// Requests answered `VIRTIO_BLK_S_IOERR`.
    pub io_errors: u64,
    /// Requests answered `VIRTIO_BLK_S_UNSUPP`.
    pub unsupported: u64,
}

/// A virtio block device (device id 2) on one queue, backed by a raw image.
///
/// Offered features: `VIRTIO_BLK_F_FLUSH` (writes reach the host's page
/// cache; `FLUSH` makes them durable with `fdatasync`), `VIRTIO_BLK_F_RO`
/// for a read-only image, `VIRTIO_BLK_F_BLK_SIZE` (512),
/// `VIRTIO_BLK_F_SEG_MAX` and `VIRTIO_BLK_F_SIZE_MAX` (at most
/// [`MAX_SEGMENTS`] segments of [`MAX_SEGMENT_BYTES`]; the device answers
/// `IOERR` to a request carrying more than
/// [`MAX_REQUEST_BYTES`](crate::MAX_REQUEST_BYTES) of data).
pub struct Block {
    disk: DiskImage,
    id: [u8; VIRTIO_BLK_ID_BYTES as usize],
    config: [u8; CONFIG_LEN],
    features: u64,
    buf: Vec<u8>,
    stats: BlockStats,
}

impl Block {
    /// A device for `disk`; its id (`GET_ID`) is the image's file name,
    /// cut to 20 bytes.
    pub fn new(disk: DiskImage) -> Self {
        let mut features = (1 << VIRTIO_BLK_F_FLUSH)
            | (1 << VIRTIO_BLK_F_BLK_SIZE)
            | (1 << VIRTIO_BLK_F_SEG_MAX)
            | (1 << VIRTIO_BLK_F_SIZE_MAX);
        if disk.is_read_only() {
            features |= 1 << VIRTIO_BLK_F_RO;
        }
        let mut config = [0u8; CONFIG_LEN];
        let mut put = |at: usize, bytes: &[u8]| config[at..at + bytes.len()].copy_from_slice(bytes);
        put(
            offset_of!(virtio_blk_config, capacity),
            &disk.sectors().to_le_bytes(),
        );
        put(
            offset_of!(virtio_blk_config, size_max),
            &MAX_SEGMENT_BYTES.to_le_bytes(),
        );
        put(
            offset_of!(virtio_blk_config, seg_max),
            &MAX_SEGMENTS.to_le_bytes(),
        );
        put(
            offset_of!(virtio_blk_config, blk_size),
            &(SECTOR_SIZE as u32).to_le_bytes(),
        );
        let name = disk
            .path()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut block = Self {
            disk,
            id: [0; VIRTIO_BLK_ID_BYTES as usize],
            config,
            features,
            buf: vec![0; CHUNK],
            stats: BlockStats::default(),
        };
        block.set_id(name.as_bytes());
        block
    }

    /// Sets the id `GET_ID` answers: `id` cut to 20 bytes, NUL-padded.
    pub fn set_id(&mut self, id: &[u8]) {
        self.id = [0; VIRTIO_BLK_ID_BYTES as usize];
        let n = id.len().min(self.id.len());
        self.id[..n].copy_from_slice(&id[..n]);
    }

    /// The id `GET_ID` answers.
    pub fn id(&self) -> &[u8] {
        &self.id
    }

    /// The image.
    pub fn disk(&self) -> &DiskImage {
        &self.disk
    }

    /// What the device answered.
    pub fn stats(&self) -> BlockStats {
        self.stats
    }

    /// Carries out `op`; the status to answer and the bytes written into
    /// the chain's writable buffers before the status byte.
    fn execute(&mut self, mem: &GuestMemory, op: Op) -> Result<(u8, u32), RingFault> {
        let ok = VIRTIO_BLK_S_OK as u8;
        let ioerr = VIRTIO_BLK_S_IOERR as u8;
        match op {
            Op::Read { offset, data } => {
                let mut pos = offset;
                let mut written = 0u32;
                for seg in &data {
                    let mut done = 0;
                    while done < seg.len {
                        let n = (seg.len - done).min(CHUNK as u64) as usize;
                        let buf = &mut self.buf[..n];
                        if let Err(e) = self.disk.read_at(buf, pos) {
                            debug!(%e, "virtio-blk: read failed");
                            return Ok((ioerr, written));
                        }
                        write_guest(mem, seg.addr + done, buf)?;
                        done += n as u64;
                        pos += n as u64;
                        written += n as u32;
                    }
                }
                self.stats.reads += 1;
                Ok((ok, written))
            }
            Op::Write { offset, data } => {
                let mut pos = offset;
                for seg in &data {
                    let mut done = 0;
                    while done < seg.len {
                        let n = (seg.len - done).min(CHUNK as u64) as usize;
                        let buf = &mut self.buf[..n];
                        read_guest(mem, seg.addr + done, buf)?;
                        if let Err(e) = self.disk.write_at(buf, pos) {
                            debug!(%e, "virtio-blk: write failed");
                            return Ok((ioerr, 0));
                        }
                        done += n as u64;
                        pos += n as u64;
                    }
                }
                self.stats.writes += 1;
                Ok((ok, 0))
            }
            Op::Flush => match self.disk.flush() {
                Ok(()) => {
                    self.stats.flushes += 1;
                    Ok((ok, 0))
                }
                Err(e) => {
                    debug!(%e, "virtio-blk: flush failed");
                    Ok((ioerr, 0))
                }
            },
            Op::GetId { data } => {
                let mut at = 0;
                for Segment { addr, len } in data {
                    let end = at + len as usize;
                    write_guest(mem, addr, &self.id[at..end])?;
                    at = end;
                }
                self.stats.get_ids += 1;
                Ok((ok, at as u32))
            }
        }
    }
}

fn write_guest(mem: &GuestMemory, addr: u64, buf: &[u8]) -> Result<(), RingFault> {
    mem.write_slice(buf, GuestAddress(addr))
        .map_err(|_| RingFault::MemoryAccess { addr })
}

fn read_guest(mem: &GuestMemory, addr: u64, buf: &mut [u8]) -> Result<(), RingFault> {
    mem.read_slice(buf, GuestAddress(addr))
        .map_err(|_| RingFault::MemoryAccess { addr })
}

impl VirtioDevice for Block {
    fn device_id(&self) -> u32 {
        VIRTIO_ID_BLOCK
    }

    fn features(&self) -> u64 {
        self.features
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let Ok(start) = usize::try_from(offset) else {
            return;
        };
        if let Some(src) = self.config.get(start..) {
            let n = src.len().min(data.len());
            data[..n].copy_from_slice(&src[..n]);
        }
    }

    fn process_chain(
        &mut self,
        _queue: u16,
        chain: DescriptorChain<&GuestMemory>,
        mem: &GuestMemory,
    ) -> Result<u32, RingFault> {
        let parsed = parse(mem, chain, self.disk.capacity(), self.disk.is_read_only())?;
        let (status, written) = match parsed.op {
            Ok(op) => self.execute(mem, op)?,
            Err(refusal) => {
                debug!(reason = refusal.reason, "virtio-blk: request refused");
                (refusal.status, 0)
            }
        };
        write_guest(mem, parsed.status_addr, &[status])?;
        self.stats.requests += 1;
        match u32::from(status) {
            VIRTIO_BLK_S_OK => {}
            VIRTIO_BLK_S_IOERR => self.stats.io_errors += 1,
            _ => self.stats.unsupported += 1,
        }
        Ok(written + 1)
    }
}
