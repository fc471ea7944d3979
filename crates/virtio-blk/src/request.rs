//! A descriptor chain read into a block request, every guest-provided
//! value checked.
//!
//! The chain is read from guest memory once: the descriptors are copied
//! (by `virtio-queue`) and the header is copied, and only the copies are
//! checked and used, so a guest changing them meanwhile cannot get a
//! different request executed than the one checked.
//!
//! A request layout (virtio spec 1.2, 5.2.6): a 16-byte header the device
//! reads (`type`, `reserved`, `sector`), then data (read by the device for
//! `OUT`, written for `IN` and `GET_ID`), then one status byte the device
//! writes. Virtio 1.x drivers may split or merge these across descriptors
//! in any way (2.6.4), so the header is the first 16 device-readable
//! bytes, the data the rest of the device-readable bytes or all
//! device-writable bytes but the last, and the status the last byte of the
//! last descriptor.

use lazarus_virtio_mmio::{GuestMemory, RingFault};
use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_ID_BYTES, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_FLUSH,
    VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
};
use virtio_queue::DescriptorChain;
use virtio_queue::desc::split::Descriptor;
use vm_memory::{Bytes, GuestAddress, GuestMemory as _, Permissions};

use crate::{MAX_REQUEST_BYTES, SECTOR_SIZE};

/// Size of the request header.
pub const HEADER_LEN: u64 = 16;

/// A run of guest memory checked to lie inside guest RAM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Segment {
    pub(crate) addr: u64,
    pub(crate) len: u64,
}

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Op {
    /// Read `data`'s length from byte `offset` of the image into `data`.
    Read { offset: u64, data: Vec<Segment> },
    /// Write `data` at byte `offset` of the image.
    Write { offset: u64, data: Vec<Segment> },
    /// Make completed writes durable.
    Flush,
    /// Write the device id into `data` (at most 20 bytes).
    GetId { data: Vec<Segment> },
}

/// A chain, read and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Parsed {
    /// Where the status byte goes.
    pub(crate) status_addr: u64,
    /// The request, or the error status to answer with (and why).
    pub(crate) op: Result<Op, Refusal>,
}

/// A request answered with an error status without touching the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) status: u8,
    pub(crate) reason: &'static str,
}

fn ioerr(reason: &'static str) -> Refusal {
    Refusal {
        status: VIRTIO_BLK_S_IOERR as u8,
        reason,
    }
}

/// Reads `chain` into a request for an image of `capacity` bytes
/// (`read_only`: refuse writes). `Err` is a chain the device cannot answer.
pub(crate) fn parse(
    mem: &GuestMemory,
    chain: DescriptorChain<&GuestMemory>,
    capacity: u64,
    read_only: bool,
) -> Result<Parsed, RingFault> {
    let head = chain.head_index();
    // `virtio-queue` ends the iteration early, without an error, on a
    // loop (after a queue's worth of descriptors), a next index outside
    // the table, an unreadable descriptor or a bad indirect table; a chain
    // whose last descriptor still says NEXT did not really end.
    let mut descs: Vec<Descriptor> = Vec::new();
    let mut ended = false;
    for desc in chain {
        ended = !desc.has_next();
        descs.push(desc);
    }
    let Some(last) = descs.last().copied().filter(|_| ended) else {
        return Err(RingFault::BrokenChain { head });
    };
    for desc in &descs {
        check_inside(mem, head, desc)?;
    }
    if !last.is_write_only() || last.len() == 0 {
        return Err(RingFault::NoStatus { head });
    }
    // Inside guest memory, so no overflow.
    let status_addr = last.addr().0 + u64::from(last.len()) - 1;
    let parsed = |op| Ok(Parsed { status_addr, op });

    // The last descriptor is writable, so there is a first writable one.
    let first_writable = descs
        .iter()
        .position(|d| d.is_write_only())
        .unwrap_or(descs.len() - 1);
    let (readable, writable) = descs.split_at(first_writable);
    if writable.iter().any(|d| !d.is_write_only()) {
        return parsed(Err(ioerr(
            "a device-readable buffer after a device-writable one",
        )));
    }
    let readable = segments(readable);
    let writable = segments(writable);
    let readable_len: u64 = readable.iter().map(|s| s.len).sum();
    let writable_len: u64 = writable.iter().map(|s| s.len).sum();
    if readable_len < HEADER_LEN {
        return parsed(Err(ioerr("the request header is shorter than 16 bytes")));
    }
    let (header_segs, out_data) = split(&readable, HEADER_LEN);
    let mut header = [0u8; HEADER_LEN as usize];
    let mut at = 0;
    for seg in &header_segs {
        let end = at + seg.len as usize;
        mem.read_slice(&mut header[at..end], GuestAddress(seg.addr))
            .map_err(|_| RingFault::MemoryAccess { addr: seg.addr })?;
        at = end;
    }
    let [t0, t1, t2, t3, _, _, _, _, s0, s1, s2, s3, s4, s5, s6, s7] = header;
    let kind = u32::from_le_bytes([t0, t1, t2, t3]);
    let sector = u64::from_le_bytes([s0, s1, s2, s3, s4, s5, s6, s7]);
    let out_len = readable_len - HEADER_LEN;
    // The status byte is the last writable byte.
    let in_len = writable_len - 1;
    let (in_data, _status) = split(&writable, in_len);

    let op = match kind {
        VIRTIO_BLK_T_IN => {
            if out_len != 0 {
                Err(ioerr("a read carries device-readable data"))
            } else {
                data_range(sector, in_len, capacity).map(|offset| Op::Read {
                    offset,
                    data: in_data,
                })
            }
        }
        VIRTIO_BLK_T_OUT => {
            if in_len != 0 {
                Err(ioerr("a write carries device-writable data"))
            } else if read_only {
                Err(ioerr("the disk is read-only"))
            } else {
                data_range(sector, out_len, capacity).map(|offset| Op::Write {
                    offset,
                    data: out_data,
                })
            }
        }
        VIRTIO_BLK_T_FLUSH => {
            if out_len != 0 || in_len != 0 {
                Err(ioerr("a flush carries data"))
            } else {
                Ok(Op::Flush)
            }
        }
        VIRTIO_BLK_T_GET_ID => {
            if out_len != 0 {
                Err(ioerr("a get-id carries device-readable data"))
            } else if in_len < u64::from(VIRTIO_BLK_ID_BYTES) {
                Err(ioerr("a get-id buffer is shorter than 20 bytes"))
            } else {
                let (id, _) = split(&in_data, u64::from(VIRTIO_BLK_ID_BYTES));
                Ok(Op::GetId { data: id })
            }
        }
        _ => Err(Refusal {
            status: VIRTIO_BLK_S_UNSUPP as u8,
            reason: "unsupported request type",
        }),
    };
    parsed(op)
}

/// The byte offset of `len` bytes from `sector`, if the range is a whole
/// number of sectors, not too large, and inside the image.
fn data_range(sector: u64, len: u64, capacity: u64) -> Result<u64, Refusal> {
    if !len.is_multiple_of(SECTOR_SIZE) {
        return Err(ioerr("the data is not a whole number of 512-byte sectors"));
    }
    if len > MAX_REQUEST_BYTES {
        return Err(ioerr("the data is larger than a request may carry"));
    }
    let offset = sector
        .checked_mul(SECTOR_SIZE)
        .ok_or(ioerr("the sector is past the end of the disk"))?;
    match offset.checked_add(len) {
        Some(end) if end <= capacity => Ok(offset),
        _ => Err(ioerr("the sectors are past the end of the disk")),
    }
}

fn check_inside(mem: &GuestMemory, head: u16, desc: &Descriptor) -> Result<(), RingFault> {
    let (addr, len) = (desc.addr().0, desc.len());
    if len == 0 {
        return Ok(());
    }
    let access = if desc.is_write_only() {
        Permissions::Write
    } else {
        Permissions::Read
    };
    let fits = addr.checked_add(u64::from(len)).is_some()
        && mem.check_range(GuestAddress(addr), len as usize, access);
    if fits {
        Ok(())
    } else {
        Err(RingFault::OutsideMemory { head, addr, len })
    }
}

fn segments(descs: &[Descriptor]) -> Vec<Segment> {
    descs
        .iter()
        .filter(|d| d.len() != 0)
        .map(|d| Segment {
            addr: d.addr().0,
            len: u64::from(d.len()),
        })
        .collect()
}

/// Splits `segs` after `at` bytes (`at` at most their total length).
pub(crate) fn split(segs: &[Segment], at: u64) -> (Vec<Segment>, Vec<Segment>) {
    let mut head = Vec::new();
    let mut tail = Vec::new();
    let mut left = at;
    for seg in segs {
        if left >= seg.len {
            head.push(*seg);
            left -= seg.len;
        } else if left > 0 {
            head.push(Segment {
                addr: seg.addr,
                len: left,
            });
            tail.push(Segment {
                addr: seg.addr + left,
                len: seg.len - left,
            });
            left = 0;
        } else {
            tail.push(*seg);
        }
    }
    (head, tail)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(addr: u64, len: u64) -> Segment {
        Segment { addr, len }
    }

    #[test]
    fn split_cuts_inside_and_between_segments() {
        let segs = [seg(0x1000, 16), seg(0x2000, 512), seg(0x3000, 1)];
        assert_eq!(split(&segs, 0), (vec![], segs.to_vec()));
        assert_eq!(
            split(&segs, 16),
            (
                vec![seg(0x1000, 16)],
                vec![seg(0x2000, 512), seg(0x3000, 1)]
            )
        );
        assert_eq!(
            split(&segs, 20),
            (
                vec![seg(0x1000, 16), seg(0x2000, 4)],
                vec![seg(0x2004, 508), seg(0x3000, 1)]
            )
        );
        assert_eq!(split(&segs, 529), (segs.to_vec(), vec![]));
    }

    #[test]
    fn data_range_checks_alignment_size_and_bounds() {
        let cap = 1 << 20;
        assert_eq!(data_range(0, 512, cap), Ok(0));
        assert_eq!(data_range(2047, 512, cap), Ok(2047 * 512));
        assert!(data_range(2048, 512, cap).is_err());
        assert!(data_range(2047, 1024, cap).is_err());
        assert!(data_range(0, 511, cap).is_err());
        assert!(data_range(u64::MAX / 512, 512, u64::MAX).is_err());
        assert!(data_range(u64::MAX, 0, cap).is_err());
        assert!(data_range(0, MAX_REQUEST_BYTES + 512, u64::MAX).is_err());
        assert_eq!(data_range(2048, 0, cap), Ok(cap));
    }
}
