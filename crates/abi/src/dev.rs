//! Device ioctl numbers of the bundled extensions and the kvstore wire
//! protocol.
//!
//! User programs, the extensions and (for fault-injection campaigns) the
//! host all name the same commands, so they live here rather than in any
//! one of them.

/// `/dev/rand`: reads fill the buffer with pseudo-random bytes. Each open
/// is its own stream: the bytes at position `p` depend only on the open's
/// seed and `p`, so a seeded stream reads the same whoever reads it and
/// continues exactly where it was after a reset of the extension.
pub mod rand {
    /// Device name: `/dev/rand`.
    pub const DEV: &str = "rand";
    /// Opens at once; one more open fails with EMFILE.
    pub const MAX_OPENS: usize = 32;
    /// ioctl: reseed this open's stream with `arg` (0 = fresh entropy,
    /// as at open). A configuration ioctl: the kernel issues it again
    /// after a reset.
    pub const IOC_RESEED: u64 = 1;
    /// Largest number of bytes one read returns; keeps the ring-0 path short.
    pub const READ_MAX: usize = 4096;
}

/// `/dev/ramdisk`: a 64 KiB memory disk; each open has its own position
/// (`SYS_SEEK`). Its contents survive a reset of the extension.
pub mod ramdisk {
    /// Device name: `/dev/ramdisk`.
    pub const DEV: &str = "ramdisk";
    /// Disk size in bytes.
    pub const SIZE: u64 = 64 * 1024;
    /// ioctl: returns the disk size in bytes.
    pub const IOC_SIZE: u64 = 2;
    /// Largest number of bytes one read or write moves.
    pub const IO_MAX: usize = 4096;
}

/// `/dev/vda`: the virtio disk, driven by the `virtblk` extension. Each
/// open has its own byte position (`SYS_SEEK`); reads and writes move
/// whole 512-byte sectors at a sector-aligned position (else `EINVAL`), at most
/// [`IO_MAX`](virtblk::IO_MAX) bytes at a time, straight between the
/// caller's buffer and the disk. A write is on the host image when it
/// returns; [`IOC_FLUSH`](virtblk::IOC_FLUSH) makes it durable there.
pub mod virtblk {
    /// Device name: `/dev/vda`.
    pub const DEV: &str = "vda";
    /// Sector size in bytes.
    pub const SECTOR: u64 = 512;
    /// Largest number of bytes one read or write moves.
    pub const IO_MAX: usize = 64 * 1024;
    /// ioctl: returns the disk size in bytes.
    pub const IOC_SIZE: u64 = 2;
    /// ioctl: flush the device's write cache (virtio `FLUSH`); returns 0.
    pub const IOC_FLUSH: u64 = 4;
    /// ioctl: copy the device's id (virtio `GET_ID`, 20 bytes, NUL-padded)
    /// to the user buffer at `arg`; returns 20.
    pub const IOC_GET_ID: u64 = 5;
    /// Bytes of a device id.
    pub const ID_BYTES: usize = 20;
    /// ioctl: arm the driver fault `arg` (a `FAULT_*`), for tests and
    /// fault campaigns; returns 0. Each is a real driver failure: the
    /// driver crashes or finds itself broken (`ExtApi::failed`), the
    /// kernel resets it with its device, and the requests in flight are
    /// issued again, so their callers see no error.
    pub const IOC_FAULT: u64 = 100;
    /// The next request hands the device a buffer outside guest RAM: the
    /// device refuses the ring (`DEVICE_NEEDS_RESET`) and the driver,
    /// which cannot trust its ring any more, declares itself failed.
    pub const FAULT_BAD_DESCRIPTOR: u64 = 1;
    /// The next interrupt handler run dereferences a null pointer (a
    /// fault in interrupt context, with a request in flight).
    pub const FAULT_IRQ_HANDLER: u64 = 2;
    /// The next completion names a request that is not in flight; the
    /// driver finds its queue inconsistent and declares itself failed.
    pub const FAULT_UNKNOWN_COMPLETION: u64 = 3;
    /// The next request is never handed to the device (as if its
    /// interrupt and completion were lost): the per-request timeout finds
    /// it, and the driver declares itself failed.
    pub const FAULT_LOST_INTERRUPT: u64 = 4;
    /// The next requests are held back from the device, so that several
    /// are in flight, and [`STALL_TICKS`] after the first a timer callback
    /// of the driver dereferences a null pointer.
    pub const FAULT_STALL: u64 = 5;
    /// Ticks (10 ms) [`FAULT_STALL`] holds requests before the crash.
    pub const STALL_TICKS: u64 = 30;

    /// The faults by the names `blk fault` and the tests use.
    pub const FAULTS: [(&str, u64); 5] = [
        ("bad-descriptor", FAULT_BAD_DESCRIPTOR),
        ("irq-handler", FAULT_IRQ_HANDLER),
        ("unknown-completion", FAULT_UNKNOWN_COMPLETION),
        ("lost-interrupt", FAULT_LOST_INTERRUPT),
        ("stall", FAULT_STALL),
    ];

    /// The fault named `name` (see [`FAULTS`]).
    pub fn fault_by_name(name: &str) -> Option<u64> {
        FAULTS.iter().find(|(n, _)| *n == name).map(|&(_, f)| f)
    }

    /// The test pattern `blk write` puts in `sector` for `seed` (and `blk
    /// verify`, or a host test reading the image, expects): a header
    /// naming both, then an xorshift stream of them, so a sector written
    /// to the wrong place or torn is told apart from a right one.
    pub fn pattern(seed: u32, sector: u64, out: &mut [u8; SECTOR as usize]) {
        out[..4].copy_from_slice(b"LZBK");
        out[4..12].copy_from_slice(&sector.to_le_bytes());
        out[12..16].copy_from_slice(&seed.to_le_bytes());
        let mut x = (u64::from(seed) << 32 ^ sector).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        for chunk in out[16..].chunks_mut(8) {
            chunk.copy_from_slice(&xorshift(&mut x).to_le_bytes()[..chunk.len()]);
        }
    }

    /// Largest scratch area: room for a workload's test patterns, a
    /// small share of the default 64 MiB disk.
    pub const SCRATCH_MAX: u64 = 1 << 20;

    /// The scratch area of a disk of `size` bytes: the byte range at its
    /// end where tests and fault campaigns write their patterns, so that
    /// they never clobber the kvstore's log (which has everything before
    /// it, [`kvlog::region`](super::kvlog::region)). The last
    /// [`SCRATCH_MAX`] bytes, or the last eighth of a smaller disk (empty
    /// below 8 sectors); whole sectors.
    pub fn scratch(size: u64) -> core::ops::Range<u64> {
        let end = size - size % SECTOR;
        let len = SCRATCH_MAX.min(end / 8 / SECTOR * SECTOR);
        end - len..end
    }

    /// Marsaglia's xorshift64 step (never 0 from a non-zero state).
    fn xorshift(x: &mut u64) -> u64 {
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        *x
    }

    /// The random requests of `blk bench` and of the host's half of
    /// `lazarus bench io`: byte offsets of [`BenchOffsets::IO`]-byte
    /// blocks in the first `bytes` of the disk, the same for the guest and
    /// the host from the same seed, one stream for reads and another for
    /// writes.
    #[derive(Clone, Debug)]
    pub struct BenchOffsets {
        x: u64,
        blocks: u64,
    }

    impl BenchOffsets {
        /// Bytes of each random request.
        pub const IO: usize = 4096;

        /// The reads' offsets.
        pub fn reads(seed: u64, bytes: u64) -> Self {
            Self::new(seed | 1, bytes)
        }

        /// The writes' offsets.
        pub fn writes(seed: u64, bytes: u64) -> Self {
            Self::new((seed | 1).rotate_left(17) | 1, bytes)
        }

        fn new(x: u64, bytes: u64) -> Self {
            Self {
                x,
                blocks: (bytes / Self::IO as u64).max(1),
            }
        }
    }

    impl Iterator for BenchOffsets {
        type Item = u64;

        fn next(&mut self) -> Option<u64> {
            Some((xorshift(&mut self.x) % self.blocks) * Self::IO as u64)
        }
    }
}

/// The kvstore's append-only log on `/dev/vda` (see the kvstore's
/// `log.rs`): its [`region`](kvlog::region) of the disk (all but the
/// scratch area) is split in two halves; each holds one generation
/// of the log as 512-byte blocks numbered from 0 at the half's start.
/// Replay takes the half whose block 0 is valid with the higher
/// generation and reads its blocks in order until one is not the next
/// valid block of that generation (a torn or never-written block ends the
/// log). Compaction writes the whole store into the other half as the
/// next generation, so the old log stays valid until the new one is.
///
/// Version 2 moved the log off the disk's scratch area (version 1 split
/// the whole disk); a version-1 block is not valid, so a disk written
/// before starts with an empty store instead of replaying a log whose
/// halves are no longer where it was written.
pub mod kvlog {
    /// Block size: one sector.
    pub const BLOCK: usize = 512;
    /// Bytes of the block header.
    pub const HEADER: usize = 24;
    /// "LZKV".
    pub const MAGIC: [u8; 4] = *b"LZKV";
    /// Layout version (2: the log leaves the scratch area alone).
    pub const VERSION: u16 = 2;
    /// Record: the key was set (`key_len` key bytes, then the value).
    pub const OP_PUT: u8 = 1;
    /// Record: the key was removed (no value).
    pub const OP_DEL: u8 = 2;
    /// Bytes of a record's header: op, key length, value length (u16).
    pub const RECORD_HEADER: usize = 4;
    /// Interval of the group flush, like Redis's `appendfsync everysec`:
    /// a change is on the disk, flushed, at most this long after it was
    /// acknowledged.
    pub const FLUSH_INTERVAL_MS: u64 = 1000;

    /// The log's byte range on a disk of `size` bytes: everything before
    /// [`virtblk::scratch`](super::virtblk::scratch). The kvstore and
    /// every host reader of the log take its halves from here.
    pub fn region(size: u64) -> core::ops::Range<u64> {
        0..super::virtblk::scratch(size).start
    }

    /// A block's header: magic, version, bytes of records used after the
    /// header (u16), the block's number in its half (u64), the generation
    /// (u32) and the FNV-1a of the whole block with this field zero, cut
    /// to 32 bits.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct BlockHeader {
        /// Bytes of records after the header.
        pub used: u16,
        /// Number of the block in its half, from 0.
        pub seq: u64,
        /// The log's generation.
        pub generation: u32,
    }

    /// Writes `h` into `block` (records already in place) and seals it.
    pub fn seal(block: &mut [u8; BLOCK], h: BlockHeader) {
        block[..4].copy_from_slice(&MAGIC);
        block[4..6].copy_from_slice(&VERSION.to_le_bytes());
        block[6..8].copy_from_slice(&h.used.to_le_bytes());
        block[8..16].copy_from_slice(&h.seq.to_le_bytes());
        block[16..20].copy_from_slice(&h.generation.to_le_bytes());
        block[20..24].fill(0);
        let sum = crate::repair::fnv1a(block) as u32;
        block[20..24].copy_from_slice(&sum.to_le_bytes());
    }

    /// The header of a valid block (magic, version, size and checksum
    /// right), else `None`.
    pub fn open(block: &[u8; BLOCK]) -> Option<BlockHeader> {
        if block[..4] != MAGIC || block[4..6] != VERSION.to_le_bytes() {
            return None;
        }
        let used = u16::from_le_bytes([block[6], block[7]]);
        if HEADER + used as usize > BLOCK {
            return None;
        }
        let mut copy = *block;
        copy[20..24].fill(0);
        let sum = u32::from_le_bytes([block[20], block[21], block[22], block[23]]);
        if crate::repair::fnv1a(&copy) as u32 != sum {
            return None;
        }
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&block[8..16]);
        let mut generation = [0u8; 4];
        generation.copy_from_slice(&block[16..20]);
        Some(BlockHeader {
            used,
            seq: u64::from_le_bytes(seq),
            generation: u32::from_le_bytes(generation),
        })
    }

    /// Of the halves whose block 0 is `first` (valid or not), the one
    /// the log is in: the valid one of the higher generation, as
    /// `(half, generation)`.
    pub fn newest_half(first: [Option<BlockHeader>; 2]) -> Option<(u64, u32)> {
        (0..2u64)
            .filter_map(|h| {
                first[h as usize]
                    .filter(|b| b.seq == 0)
                    .map(|b| (h, b.generation))
            })
            .max_by_key(|&(_, g)| g)
    }

    /// Replays consecutive blocks of the log, the first being number
    /// `seq` of the half, as the kvstore does at start: each block must be
    /// the valid next block of `generation`; the first that is not ends
    /// the log. Calls `visit(op, key, value)` for every record, in order.
    /// Returns the blocks that belong to the log and whether the log ended
    /// among `blocks` (else the next blocks may continue it).
    pub fn replay_blocks(
        blocks: &[u8],
        mut seq: u64,
        generation: u32,
        mut visit: impl FnMut(u8, &[u8], &[u8]),
    ) -> (u64, bool) {
        let mut n = 0;
        for b in blocks.chunks_exact(BLOCK) {
            let Ok(block) = <&[u8; BLOCK]>::try_from(b) else {
                return (n, true);
            };
            let Some(h) = open(block).filter(|h| h.seq == seq && h.generation == generation) else {
                return (n, true);
            };
            for (op, key, value) in records(&block[HEADER..HEADER + h.used as usize]) {
                visit(op, key, value);
            }
            n += 1;
            seq += 1;
        }
        (n, false)
    }

    /// Bytes of a record of `key` and `value`.
    pub const fn record_len(key: usize, value: usize) -> usize {
        RECORD_HEADER + key + value
    }

    /// Writes one record at the start of `out`; returns its length, or
    /// `None` if it does not fit.
    pub fn put_record(out: &mut [u8], op: u8, key: &[u8], value: &[u8]) -> Option<usize> {
        let n = record_len(key.len(), value.len());
        if n > out.len() || key.len() > u8::MAX as usize || value.len() > u16::MAX as usize {
            return None;
        }
        out[0] = op;
        out[1] = key.len() as u8;
        out[2..4].copy_from_slice(&(value.len() as u16).to_le_bytes());
        out[4..4 + key.len()].copy_from_slice(key);
        out[4 + key.len()..n].copy_from_slice(value);
        Some(n)
    }

    /// The records of a valid block's used bytes, in order; a record that
    /// runs past the end (never written so by the kvstore) ends them.
    pub fn records(used: &[u8]) -> Records<'_> {
        Records { rest: used }
    }

    /// Iterator of `(op, key, value)`.
    pub struct Records<'a> {
        rest: &'a [u8],
    }

    impl<'a> Iterator for Records<'a> {
        type Item = (u8, &'a [u8], &'a [u8]);

        fn next(&mut self) -> Option<Self::Item> {
            let r = self.rest;
            if r.len() < RECORD_HEADER {
                return None;
            }
            let (k, v) = (r[1] as usize, u16::from_le_bytes([r[2], r[3]]) as usize);
            let n = record_len(k, v);
            if n > r.len() {
                self.rest = &[];
                return None;
            }
            self.rest = &r[n..];
            Some((r[0], &r[4..4 + k], &r[4 + k..n]))
        }
    }
}

/// `/dev/crashtest`: deliberately crashes the kernel, in the spirit of
/// Linux's LKDTM. Commands below [`IOC_CRASH_BASE`](crashtest::IOC_CRASH_BASE) are harmless; every
/// command from it on runs one kind of kernel crash directly in the ioctl,
/// in the calling process's kernel context (or, for [`IOC_TIMER_FAULT`](crashtest::IOC_TIMER_FAULT),
/// in a timer callback).
pub mod crashtest {
    /// Device name: `/dev/crashtest`.
    pub const DEV: &str = "crashtest";
    /// ioctl: returns [`PING_REPLY`].
    pub const IOC_PING: u64 = 0;
    /// The known answer to [`IOC_PING`]; anything else is a wrong reply.
    pub const PING_REPLY: i64 = 0x1a2a;

    /// First crashing command; every ioctl from here on crashes the kernel.
    pub const IOC_CRASH_BASE: u64 = 100;
    /// `ExtApi::panic("crashtest: requested panic")`.
    pub const IOC_PANIC: u64 = 100;
    /// Reads address 0 (#PF, not present).
    pub const IOC_NULL_READ: u64 = 101;
    /// Writes to an unmapped address (#PF, write).
    pub const IOC_WILD_WRITE: u64 = 102;
    /// Reads a non-canonical address (#GP).
    pub const IOC_GP: u64 = 103;
    /// Executes `ud2` in ring 0 (#UD).
    pub const IOC_UD2: u64 = 104;
    /// Divides by zero (#DE).
    pub const IOC_DIVIDE: u64 = 105;
    /// Recurses until the kernel stack's guard page (#PF or #DF).
    pub const IOC_STACK_OVERFLOW: u64 = 106;
    /// Spins forever with interrupts disabled (the heartbeat stops).
    pub const IOC_HARD_LOCKUP: u64 = 107;
    /// Enables interrupts and spins forever in the kernel (system calls
    /// otherwise run with interrupts off), for the soft-lockup detector.
    pub const IOC_SOFT_LOCKUP: u64 = 108;
    /// Spins with interrupts disabled trying to take the extension's lock,
    /// which another process holds (see [`IOC_HOLD_LOCK`]): a deadlock on a
    /// kernel lock held by another process, found as a lockup.
    pub const IOC_DEADLOCK: u64 = 109;
    /// Switches to an unmapped stack and faults (#DF).
    pub const IOC_DOUBLE_FAULT: u64 = 110;
    /// Frees a node still on the kernel's extension list, writes through
    /// the stale pointer (use after free); the kernel's list checks catch it.
    pub const IOC_LIST_CORRUPTION: u64 = 111;
    /// Registers a timer whose callback reads address 0 (oops in irq).
    pub const IOC_TIMER_FAULT: u64 = 112;
    /// Not a crash: `arg` points at `[gpa, out]`; reads the u64 at
    /// guest-physical `gpa` through `ExtApi::ioremap` into `out`.
    pub const IOC_PEEK_PHYS: u64 = 60;
    /// Not a crash: `arg` points at `[gpa, value]`; writes `value` there.
    pub const IOC_POKE_PHYS: u64 = 61;
    /// Not a crash: takes the extension's lock and sleeps in the kernel
    /// holding it, forever. The other half of [`IOC_DEADLOCK`].
    pub const IOC_HOLD_LOCK: u64 = 50;
    /// Loads an empty IDT and faults: the CPU cannot deliver the exception
    /// nor the double fault, and shuts down (triple fault).
    pub const IOC_TRIPLE_FAULT: u64 = 113;
    /// Executes an SSE instruction in ring 0 (SSE is off in the kernel):
    /// #UD on hardware, an emulation failure (KVM internal error) under
    /// the emulated ring 0 of docs/PLATFORM.md.
    pub const IOC_EMULATION_FAILURE: u64 = 114;
    /// Overwrites the first instruction of a kernel function (the one
    /// behind `ExtApi::log`) with `ud2` and calls it: corrupted kernel code,
    /// which the repair must restore from its pristine copy.
    pub const IOC_CORRUPT_CODE: u64 = 115;

    /// Not a crash: from now on [`IOC_PING`] returns a wrong reply, a
    /// fail-silent extension its client must report (`SYS_EXT_COMPLAIN`).
    pub const IOC_BREAK_PING: u64 = 51;
    /// Not a crash: from now on `read` claims more bytes than asked for,
    /// a broken contract the kernel catches.
    pub const IOC_BREAK_READ: u64 = 52;

    /// Not a crash: takes the extension's lock ([`IOC_HOLD_LOCK`]'s),
    /// blocking while another process holds it, and returns holding it.
    pub const IOC_LOCK_A: u64 = 53;
    /// Not a crash: likewise for the extension's second lock.
    pub const IOC_LOCK_B: u64 = 54;
    /// Not a crash: one non-blocking attempt at the second lock: 0 (now
    /// held) or `EBUSY`. A caller retrying it spins on its CPU.
    pub const IOC_TRY_LOCK_B: u64 = 55;
    /// Not a crash: releases both locks where the caller holds them.
    pub const IOC_UNLOCK: u64 = 56;
    /// Spins with interrupts off until the first lock is free: the half
    /// of an ABBA deadlock that locks up its CPU.
    pub const IOC_SPIN_LOCK_A: u64 = 57;
    /// Not a crash: sleeps inside the extension for `arg` milliseconds,
    /// so that a fault elsewhere finds this process inside it.
    pub const IOC_SLEEP_IN_EXT: u64 = 58;
    /// Zeroes the kernel's IDT (one table, shared by every CPU), sends
    /// every other CPU an interrupt and faults: each CPU that takes an
    /// interrupt or exception now shuts down, at nearly the same moment.
    pub const IOC_IDT_WIPE: u64 = 59;

    /// Scenarios across processes (and, on several vCPUs, across CPUs)
    /// that `crash NAME` plays; each crashes the kernel once.
    pub const SCENARIOS: &[(&str, &str)] = &[
        (
            "lock-waiter",
            "fault holding a lock another process spins on; it gets the lock",
        ),
        (
            "ext-victim",
            "fault while another process sleeps inside the same extension",
        ),
        (
            "abba",
            "ABBA deadlock: one process spins on A holding B, another waits for B holding A",
        ),
        (
            "irq-fault-ap",
            "null read in a timer callback on the last CPU (not the boot CPU)",
        ),
        (
            "idt-wipe",
            "wipe the IDT every CPU shares and fault: other CPUs triple-fault at the same moment",
        ),
    ];

    /// Failures that are not crashes: the extension keeps running but
    /// fails its callers (name for tools, ioctl, description).
    pub const FAILURES: &[(&str, u64, &str)] = &[
        (
            "fail-silent",
            IOC_BREAK_PING,
            "answer pings wrongly; the client reports it",
        ),
        (
            "overlong-read",
            IOC_BREAK_READ,
            "read claims more bytes than asked; the kernel catches it",
        ),
    ];

    /// Every crash kind: (name for tools, ioctl, description).
    pub const KINDS: &[(&str, u64, &str)] = &[
        ("panic", IOC_PANIC, "explicit panic via the extension API"),
        ("null-read", IOC_NULL_READ, "read from address 0"),
        ("wild-write", IOC_WILD_WRITE, "write to an unmapped address"),
        ("gp", IOC_GP, "access a non-canonical address"),
        ("ud2", IOC_UD2, "invalid opcode in ring 0"),
        ("divide", IOC_DIVIDE, "divide by zero"),
        ("stack-overflow", IOC_STACK_OVERFLOW, "unbounded recursion"),
        ("hard-lockup", IOC_HARD_LOCKUP, "spin with interrupts off"),
        ("soft-lockup", IOC_SOFT_LOCKUP, "spin in the kernel"),
        (
            "deadlock",
            IOC_DEADLOCK,
            "spin on a kernel lock another process holds",
        ),
        (
            "double-fault",
            IOC_DOUBLE_FAULT,
            "fault on an unmapped stack",
        ),
        (
            "list-corruption",
            IOC_LIST_CORRUPTION,
            "use after free of a kernel list node",
        ),
        (
            "timer-fault",
            IOC_TIMER_FAULT,
            "null read in a timer callback",
        ),
        ("triple-fault", IOC_TRIPLE_FAULT, "fault with an empty IDT"),
        (
            "emulation-failure",
            IOC_EMULATION_FAILURE,
            "SSE in ring 0 (KVM internal error here)",
        ),
        (
            "corrupt-code",
            IOC_CORRUPT_CODE,
            "overwrite kernel code, then run it",
        ),
    ];

    /// The ioctl of a crash kind named as in [`KINDS`].
    pub fn kind_by_name(name: &str) -> Option<u64> {
        KINDS.iter().find(|k| k.0 == name).map(|k| k.1)
    }
}

/// The kvstore service's IPC protocol.
///
/// Every message is at most [`crate::syscall::IPC_MSG_MAX`] bytes: an
/// 8-byte header, then the key, then the value (requests) or the payload
/// (replies). Integers are little-endian.
///
/// Request header: `op: u8, key_len: u8, val_len: u16, tag: u32`.
/// Reply header: `status: u8, flags: u8, len: u16, tag: u32`; `status` is 0
/// or a positive errno, `tag` echoes the request's so that a client can
/// match replies to requests.
pub mod kv {
    /// Service name registered with `SYS_SVC_REGISTER`.
    pub const SERVICE: &str = "kv";
    /// Bytes of the request and reply headers.
    pub const HEADER_LEN: usize = 8;
    /// Longest key in bytes.
    pub const KEY_MAX: usize = 32;
    /// Longest value in bytes.
    pub const VALUE_MAX: usize = 180;

    /// Stores key -> value. Reply: empty.
    pub const OP_PUT: u8 = 1;
    /// Reply: the value, or status ENOENT.
    pub const OP_GET: u8 = 2;
    /// Reply: empty, or status ENOENT.
    pub const OP_DEL: u8 = 3;
    /// Reply: the number of keys as a u64.
    pub const OP_COUNT: u8 = 4;
    /// Key = cursor (keys strictly after it; empty = from the start).
    /// Reply: as many keys as fit, each as `len: u8` then the bytes;
    /// [`FLAG_MORE`] set if more follow.
    pub const OP_LIST: u8 = 5;
    /// Reply: [`STATS_FIELDS`] u64s.
    pub const OP_STATS: u8 = 6;
    /// Writes and flushes the disk log now (before a poweroff). Reply:
    /// empty, or status EIO if the log has failed.
    pub const OP_SYNC: u8 = 7;

    /// Reply flag of [`OP_LIST`]: call again with the last key as cursor.
    pub const FLAG_MORE: u8 = 1;

    /// Bytes of a [`load_value`].
    pub const LOAD_VALUE_LEN: usize = 24;

    /// The value the `kvload` test program writes for `key`, which a
    /// reader in the guest or a host test reading the disk log expects:
    /// "v" then the key's FNV-1a in hex, then the key's length, so a value
    /// stored under the wrong key or torn is told apart.
    pub fn load_value(key: &[u8]) -> [u8; LOAD_VALUE_LEN] {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [b'.'; LOAD_VALUE_LEN];
        out[0] = b'v';
        let sum = crate::repair::fnv1a(key);
        for i in 0..16 {
            out[1 + i] = HEX[((sum >> (60 - 4 * i)) & 0xf) as usize];
        }
        out[17] = b'/';
        let len = key.len().min(999);
        out[18] = b'0' + (len / 100) as u8;
        out[19] = b'0' + (len / 10 % 10) as u8;
        out[20] = b'0' + (len % 10) as u8;
        out
    }

    /// `OP_STATS` reply fields, in order.
    pub const STATS_FIELDS: [&str; 9] = [
        "keys",
        "bytes",
        "puts",
        "gets",
        "dels",
        "requests",
        "persistent",
        "replayed",
        "unflushed",
    ];

    // A request with the longest key and value fits one message, and the
    // lengths fit their header fields (u8 key, u16 value).
    const _: () = assert!(HEADER_LEN + KEY_MAX + VALUE_MAX <= crate::syscall::IPC_MSG_MAX);
    const _: () = assert!(KEY_MAX <= u8::MAX as usize);
    const _: () = assert!(STATS_FIELDS.len() * 8 <= crate::syscall::IPC_MSG_MAX - HEADER_LEN);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_ends_at_the_first_block_that_does_not_continue_it() {
        extern crate std;
        use kvlog::*;
        use std::vec;
        use std::vec::Vec;
        let block = |seq: u64, generation: u32, key: &[u8]| {
            let mut b = [0u8; BLOCK];
            let n = put_record(&mut b[HEADER..], OP_PUT, key, b"v").expect("fits");
            seal(
                &mut b,
                BlockHeader {
                    used: n as u16,
                    seq,
                    generation,
                },
            );
            b
        };
        let mut half = Vec::new();
        for (seq, generation, key) in [(0, 7, b"a"), (1, 7, b"b"), (3, 7, b"c"), (3, 7, b"d")] {
            half.extend_from_slice(&block(seq, generation, key));
        }
        let mut keys = Vec::new();
        let (n, ended) = replay_blocks(&half, 0, 7, |_, k, _| keys.push(k.to_vec()));
        assert_eq!(
            (n, ended, keys),
            (2, true, vec![b"a".to_vec(), b"b".to_vec()])
        );
        // Read on from block 2: a chunk that is all log does not end it.
        let (n, ended) = replay_blocks(&half[..2 * BLOCK], 0, 7, |_, _, _| {});
        assert_eq!((n, ended), (2, false));
        // The other generation is not this log.
        assert_eq!(replay_blocks(&half, 0, 8, |_, _, _| {}), (0, true));
        let h = |generation| {
            Some(BlockHeader {
                used: 0,
                seq: 0,
                generation,
            })
        };
        assert_eq!(newest_half([h(3), h(4)]), Some((1, 4)));
        assert_eq!(newest_half([h(5), None]), Some((0, 5)));
        assert_eq!(newest_half([None, None]), None);
    }

    #[test]
    fn load_values_name_their_key() {
        let a = kv::load_value(b"wa17");
        assert_eq!(&a[17..21], b"/004");
        assert_ne!(a, kv::load_value(b"wa18"));
    }

    #[test]
    fn scratch_is_the_disk_end_and_the_log_has_the_rest() {
        let mib = 1 << 20;
        assert_eq!(virtblk::scratch(64 * mib), 63 * mib..64 * mib);
        assert_eq!(kvlog::region(64 * mib), 0..63 * mib);
        // A small disk gives an eighth; a ragged tail is not used.
        assert_eq!(virtblk::scratch(64 * 1024 + 100), 56 * 1024..64 * 1024);
        assert_eq!(kvlog::region(64 * 1024 + 100), 0..56 * 1024);
        // Below 8 sectors there is no scratch area.
        assert!(virtblk::scratch(7 * 512).is_empty());
        assert_eq!(kvlog::region(7 * 512), 0..7 * 512);
        assert!(virtblk::scratch(0).is_empty());
        for size in [0, 511, 512, 4096, 1 << 20, 9 << 20, u64::MAX] {
            let s = virtblk::scratch(size);
            assert!(
                s.start.is_multiple_of(virtblk::SECTOR) && s.end.is_multiple_of(virtblk::SECTOR)
            );
            assert!(s.end <= size && s.end - s.start <= virtblk::SCRATCH_MAX);
            assert_eq!(kvlog::region(size).end, s.start);
        }
    }

    #[test]
    fn crash_kinds_are_unique_and_crash() {
        for (i, a) in crashtest::KINDS.iter().enumerate() {
            assert!(
                a.1 >= crashtest::IOC_CRASH_BASE,
                "{} is below the crash base",
                a.0
            );
            assert_eq!(crashtest::kind_by_name(a.0), Some(a.1));
            for b in &crashtest::KINDS[i + 1..] {
                assert!(a.0 != b.0 && a.1 != b.1, "{} and {} collide", a.0, b.0);
            }
        }
        assert_eq!(crashtest::kind_by_name("nope"), None);
    }
}
