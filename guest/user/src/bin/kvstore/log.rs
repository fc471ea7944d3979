//! The kvstore's append-only log on the virtio disk (`/dev/vda`), laid out
//! as `abi::dev::kvlog` says: every change is appended to the tail block
//! in memory and the dirty blocks are written and flushed as a group
//! every `FLUSH_INTERVAL_MS` (Redis's `appendfsync everysec`), so a
//! restart loses at most the changes of the last interval. At start the
//! log is replayed into the store. When the half the log is in fills up,
//! the store is written into the other half as the next generation
//! (compaction), and the old half stays valid until the new one is.

use alloc::collections::BTreeMap;
use alloc::vec;
use alloc::vec::Vec;

use lazarus_ulib::abi::dev::kvlog::{
    self, BLOCK, BlockHeader, FLUSH_INTERVAL_MS, HEADER, OP_DEL, OP_PUT,
};
use lazarus_ulib::abi::dev::virtblk::{DEV, IO_MAX, IOC_FLUSH, IOC_SIZE};
use lazarus_ulib::io::{close, ioctl, open, read, seek, write};
use lazarus_ulib::process::uptime_ms;
use lazarus_ulib::{Errno, eprintln};

/// Blocks per read or write.
const CHUNK_BLOCKS: u64 = (IO_MAX / BLOCK) as u64;

pub type Map = BTreeMap<Vec<u8>, Vec<u8>>;

/// What the replay found, for the start-up line.
pub struct Replayed {
    pub changes: u64,
    pub blocks: u64,
    pub generation: u32,
    pub ms: u64,
}

pub struct Log {
    fd: i32,
    /// Byte offset of the log's region on the disk (`kvlog::region`).
    base: u64,
    /// Blocks in each half.
    half_blocks: u64,
    /// The half the log is in (0 or 1).
    half: u64,
    generation: u32,
    /// Blocks already in place before the first dirty one (the tail
    /// block's number is `first_dirty + dirty.len()`).
    first_dirty: u64,
    /// Full blocks not yet written, in order.
    dirty: Vec<[u8; BLOCK]>,
    /// The block being filled, and whether it changed since written.
    tail: [u8; BLOCK],
    tail_used: usize,
    tail_dirty: bool,
    /// Changes appended since the last flush.
    unflushed: u64,
    last_flush_ms: u64,
    /// Persistence stopped (a disk error): the store goes on in memory.
    failed: bool,
}

impl Log {
    /// Opens the disk and replays its log into a store. `None` when there
    /// is no disk (the store then lives in memory only).
    pub fn open() -> Option<(Log, Map, Replayed)> {
        let fd = match open(&alloc::format!("/dev/{DEV}")) {
            Ok(fd) => fd,
            Err(Errno::ENOENT | Errno::ENODEV) => return None,
            Err(e) => {
                eprintln!("kvstore: cannot open /dev/{DEV}: {e}; keeping data in memory only");
                return None;
            }
        };
        let size = match ioctl(fd, IOC_SIZE, 0) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("kvstore: /dev/{DEV}: {e}; keeping data in memory only");
                let _ = close(fd);
                return None;
            }
        };
        let region = kvlog::region(size);
        let half_blocks = (region.end - region.start) / BLOCK as u64 / 2;
        let mut log = Log {
            fd,
            base: region.start,
            half_blocks,
            half: 0,
            generation: 0,
            first_dirty: 0,
            dirty: Vec::new(),
            tail: [0; BLOCK],
            tail_used: 0,
            tail_dirty: false,
            unflushed: 0,
            last_flush_ms: uptime_ms(),
            failed: half_blocks < 2,
        };
        let start = uptime_ms();
        let mut map = Map::new();
        let (changes, blocks) = log.replay(&mut map);
        let replayed = Replayed {
            changes,
            blocks,
            generation: log.generation,
            ms: uptime_ms() - start,
        };
        Some((log, map, replayed))
    }

    fn seek_block(&self, half: u64, seq: u64) -> Result<(), Errno> {
        seek(
            self.fd,
            self.base + (half * self.half_blocks + seq) * BLOCK as u64,
        )
        .map(drop)
    }

    fn read_block(&self, half: u64, seq: u64) -> Option<BlockHeader> {
        let mut b = [0u8; BLOCK];
        self.seek_block(half, seq).ok()?;
        (read(self.fd, &mut b).ok()? == BLOCK).then_some(())?;
        kvlog::open(&b).filter(|h| h.seq == seq)
    }

    /// Reads the newer valid half into `map`: (changes, blocks).
    fn replay(&mut self, map: &mut Map) -> (u64, u64) {
        if self.half_blocks < 2 {
            return (0, 0);
        }
        let first = [0, 1].map(|h| self.read_block(h, 0));
        let Some((half, generation)) = kvlog::newest_half(first) else {
            return (0, 0);
        };
        self.half = half;
        self.generation = generation;
        let (mut changes, mut seq) = (0u64, 0u64);
        let mut buf = vec![0u8; IO_MAX];
        while seq < self.half_blocks {
            let n = CHUNK_BLOCKS.min(self.half_blocks - seq);
            let bytes = (n as usize) * BLOCK;
            if self.seek_block(half, seq).is_err()
                || read(self.fd, &mut buf[..bytes]).ok() != Some(bytes)
            {
                break;
            }
            let (valid, ended) =
                kvlog::replay_blocks(&buf[..bytes], seq, generation, |op, key, value| {
                    changes += 1;
                    match op {
                        OP_PUT => {
                            map.insert(key.to_vec(), value.to_vec());
                        }
                        OP_DEL => {
                            map.remove(key);
                        }
                        _ => {}
                    }
                });
            if valid > 0 {
                // The last valid block is the tail: appending goes on there.
                let at = (valid as usize - 1) * BLOCK;
                self.tail.copy_from_slice(&buf[at..at + BLOCK]);
                self.tail_used = kvlog::open(&self.tail).map_or(0, |h| h.used as usize);
            }
            seq += valid;
            if ended {
                break;
            }
        }
        // The tail is block `seq - 1`, already on the disk.
        self.first_dirty = seq.saturating_sub(1);
        (changes, seq)
    }

    /// Whether changes are kept on the disk.
    pub fn persistent(&self) -> bool {
        !self.failed
    }

    /// Changes not yet flushed.
    pub fn unflushed(&self) -> u64 {
        self.unflushed
    }

    /// When the next flush is due, on the `uptime_ms` clock (it may have
    /// passed); `None` if nothing waits for one. No clock call: the server
    /// passes this to the kernel as its receive deadline.
    pub fn flush_deadline(&self) -> Option<u64> {
        (self.unflushed > 0 && !self.failed).then_some(self.last_flush_ms + FLUSH_INTERVAL_MS)
    }

    /// The number of the tail block.
    fn tail_seq(&self) -> u64 {
        self.first_dirty + self.dirty.len() as u64
    }

    /// Appends one change (to be flushed with its group).
    pub fn append(&mut self, op: u8, key: &[u8], value: &[u8], map: &Map) {
        if self.failed {
            return;
        }
        if kvlog::put_record(&mut self.tail[HEADER + self.tail_used..], op, key, value).is_none() {
            // The tail is full: seal it and start the next block.
            let seq = self.tail_seq();
            if seq + 1 >= self.half_blocks {
                // The half is full: the store (with this change already
                // in it) goes to the other half.
                self.compact(map);
                return;
            }
            self.seal_tail(seq);
            self.dirty.push(self.tail);
            self.tail = [0; BLOCK];
            self.tail_used = 0;
            if kvlog::put_record(&mut self.tail[HEADER..], op, key, value).is_none() {
                return;
            }
        }
        self.tail_used += kvlog::record_len(key.len(), value.len());
        self.tail_dirty = true;
        self.unflushed += 1;
    }

    fn seal_tail(&mut self, seq: u64) {
        kvlog::seal(
            &mut self.tail,
            BlockHeader {
                used: self.tail_used as u16,
                seq,
                generation: self.generation,
            },
        );
    }

    /// Writes the dirty blocks and the tail, then flushes the device.
    pub fn flush(&mut self) {
        if self.failed || (self.dirty.is_empty() && !self.tail_dirty) {
            self.unflushed = 0;
            return;
        }
        let seq = self.tail_seq();
        self.seal_tail(seq);
        let mut blocks = core::mem::take(&mut self.dirty);
        blocks.push(self.tail);
        let r = self.write_blocks(self.half, self.first_dirty, &blocks);
        match r.and_then(|()| ioctl(self.fd, IOC_FLUSH, 0).map(drop)) {
            Ok(()) => {
                self.first_dirty = seq;
                self.tail_dirty = false;
                self.unflushed = 0;
                self.last_flush_ms = uptime_ms();
            }
            Err(e) => self.stop(e),
        }
    }

    fn write_blocks(&self, half: u64, first: u64, blocks: &[[u8; BLOCK]]) -> Result<(), Errno> {
        for (i, chunk) in blocks.chunks(CHUNK_BLOCKS as usize).enumerate() {
            self.seek_block(half, first + (i as u64) * CHUNK_BLOCKS)?;
            let bytes: Vec<u8> = chunk.iter().flatten().copied().collect();
            if write(self.fd, &bytes)? != bytes.len() {
                return Err(Errno::EIO);
            }
        }
        Ok(())
    }

    /// Writes the whole store into the other half as the next generation.
    fn compact(&mut self, map: &Map) {
        let (half, generation) = (1 - self.half, self.generation.wrapping_add(1));
        let mut blocks: Vec<[u8; BLOCK]> = Vec::new();
        let mut block = [0u8; BLOCK];
        let mut used = 0;
        let seal = |block: &mut [u8; BLOCK], used: usize, blocks: &mut Vec<[u8; BLOCK]>| {
            let seq = blocks.len() as u64;
            kvlog::seal(
                block,
                BlockHeader {
                    used: used as u16,
                    seq,
                    generation,
                },
            );
            blocks.push(*block);
            *block = [0; BLOCK];
        };
        for (k, v) in map {
            if kvlog::put_record(&mut block[HEADER + used..], OP_PUT, k, v).is_none() {
                seal(&mut block, used, &mut blocks);
                used = 0;
                if kvlog::put_record(&mut block[HEADER..], OP_PUT, k, v).is_none() {
                    continue;
                }
            }
            used += kvlog::record_len(k.len(), v.len());
        }
        seal(&mut block, used, &mut blocks);
        if blocks.len() as u64 >= self.half_blocks {
            eprintln!(
                "kvstore: the store no longer fits half the disk's log region; keeping data in memory only"
            );
            self.failed = true;
            return;
        }
        let r = self.write_blocks(half, 0, &blocks);
        match r.and_then(|()| ioctl(self.fd, IOC_FLUSH, 0).map(drop)) {
            Ok(()) => {
                let tail_seq = blocks.len() as u64 - 1;
                self.half = half;
                self.generation = generation;
                self.dirty.clear();
                self.first_dirty = tail_seq;
                // Unsealed copy of the last block, to append to.
                self.tail = blocks[tail_seq as usize];
                self.tail_used = used;
                self.tail_dirty = false;
                self.unflushed = 0;
                self.last_flush_ms = uptime_ms();
            }
            Err(e) => self.stop(e),
        }
    }

    fn stop(&mut self, e: Errno) {
        eprintln!("kvstore: the disk log failed ({e}); keeping data in memory only");
        self.failed = true;
    }
}
