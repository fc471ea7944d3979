//! `/dev/rand`: pseudo-random bytes, not cryptographic; it exists to
//! exercise the device path. Each open has a seed (from the CPU's entropy,
//! or `IOC_RESEED`), and the 8 bytes at word `w` of its stream are
//! splitmix64 of seed and `w`: a counter-based generator, so that a read at
//! the kernel's position after a reset (which forgets the seeds, given
//! back by the kernel's replay of `IOC_RESEED`) continues the stream.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU64, Ordering};

use lazarus_extsdk::abi::dev::rand::{IOC_RESEED, MAX_OPENS, READ_MAX};
use lazarus_extsdk::abi::ext::{REPLAY_READ, ioctl_bit};
use lazarus_extsdk::errno::{EBADF, EINVAL, EMFILE};
use lazarus_extsdk::user::copy_to_user;
use lazarus_extsdk::{api, declare_extension};

/// Marks a free entry of [`SEEDS`] (a seed is never 0: see `seed_of`).
const FREE: u64 = 0;
/// Each open's seed, indexed by `aux`.
static SEEDS: [AtomicU64; MAX_OPENS] = [const { AtomicU64::new(FREE) }; MAX_OPENS];

/// Bytes generated per `copy_to_user` call.
const CHUNK: usize = 256;

/// splitmix64's finalizer: spreads `z` over all bits.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The seed for `IOC_RESEED`'s argument (0 = fresh entropy); never [`FREE`].
fn seed_of(arg: u64) -> u64 {
    let raw = if arg == 0 { (api().entropy)() } else { arg };
    mix(raw.wrapping_add(0x9e37_79b9_7f4a_7c15)) | 1
}

/// Word `w` of the stream of `seed`.
fn word(seed: u64, w: u64) -> u64 {
    mix(seed.wrapping_add(w.wrapping_mul(0x9e37_79b9_7f4a_7c15)))
}

fn init() -> i32 {
    0
}

extern "C" fn exit() {}

extern "C" fn open(_pid: u32) -> i64 {
    let seed = seed_of(0);
    for (i, s) in SEEDS.iter().enumerate() {
        if s.compare_exchange(FREE, seed, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            return i as i64;
        }
    }
    -EMFILE
}

extern "C" fn close(aux: u64) {
    if let Some(s) = SEEDS.get(aux as usize) {
        s.store(FREE, Ordering::Release);
    }
}

/// Fills up to `READ_MAX` bytes of the user buffer with the stream from
/// byte `pos`.
extern "C" fn read(aux: u64, buf: u64, len: usize, pos: u64) -> i64 {
    let seed = match SEEDS.get(aux as usize).map(|s| s.load(Ordering::Acquire)) {
        Some(s) if s != FREE => s,
        _ => return -EBADF,
    };
    let len = len.min(READ_MAX);
    let mut chunk = [0u8; CHUNK + 8];
    let mut done = 0;
    while done < len {
        let at = pos + done as u64;
        let skip = (at % 8) as usize;
        let n = (len - done).min(CHUNK);
        for (i, bytes) in chunk[..(skip + n).next_multiple_of(8)]
            .chunks_exact_mut(8)
            .enumerate()
        {
            bytes.copy_from_slice(&word(seed, at / 8 + i as u64).to_le_bytes());
        }
        if let Err(e) = copy_to_user(buf + done as u64, &chunk[skip..skip + n]) {
            return e;
        }
        done += n;
    }
    done as i64
}

extern "C" fn ioctl(aux: u64, cmd: u64, arg: u64) -> i64 {
    match (cmd, SEEDS.get(aux as usize)) {
        (IOC_RESEED, Some(s)) if s.load(Ordering::Acquire) != FREE => {
            s.store(seed_of(arg), Ordering::Release);
            0
        }
        (IOC_RESEED, _) => -EBADF,
        _ => -EINVAL,
    }
}

declare_extension! {
    name: "rand",
    device: "rand",
    init: init,
    exit: exit,
    open: Some(open),
    read: Some(read),
    write: None,
    ioctl: Some(ioctl),
    close: Some(close),
    replay: REPLAY_READ,
    replay_ioctls: ioctl_bit(IOC_RESEED),
    config_ioctls: ioctl_bit(IOC_RESEED),
}
