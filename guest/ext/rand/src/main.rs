//! `/dev/rand`: pseudo-random bytes (xorshift64*, seeded from the CPU's
//! entropy). Not cryptographic; it exists to exercise the device path.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU64, Ordering};

use lazarus_extsdk::abi::dev::rand::{IOC_RESEED, READ_MAX};
use lazarus_extsdk::errno::EINVAL;
use lazarus_extsdk::user::copy_to_user;
use lazarus_extsdk::{api, declare_extension};

/// Generator state; never zero (xorshift's fixed point).
static STATE: AtomicU64 = AtomicU64::new(1);

/// Bytes generated per `copy_to_user` call.
const CHUNK: usize = 256;

/// Spreads a seed over all bits and avoids zero (splitmix64 finalizer).
fn mix_seed(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) | 1
}

fn next(state: &mut u64) -> u64 {
    let mut x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    x.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

fn init() -> i32 {
    STATE.store(mix_seed((api().entropy)()), Ordering::Relaxed);
    0
}

extern "C" fn exit() {}

/// Fills up to `READ_MAX` bytes of the user buffer.
extern "C" fn read(_aux: u64, buf: u64, len: usize) -> i64 {
    let len = len.min(READ_MAX);
    // Concurrent readers may get overlapping streams; harmless here.
    let mut state = STATE.load(Ordering::Relaxed);
    let mut chunk = [0u8; CHUNK];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(CHUNK);
        for word in chunk[..n.next_multiple_of(8)].chunks_exact_mut(8) {
            word.copy_from_slice(&next(&mut state).to_le_bytes());
        }
        if let Err(e) = copy_to_user(buf + done as u64, &chunk[..n]) {
            return e;
        }
        done += n;
    }
    STATE.store(state, Ordering::Relaxed);
    done as i64
}

extern "C" fn ioctl(_aux: u64, cmd: u64, arg: u64) -> i64 {
    match cmd {
        IOC_RESEED => {
            let seed = if arg == 0 { (api().entropy)() } else { arg };
            STATE.store(mix_seed(seed), Ordering::Relaxed);
            0
        }
        _ => -EINVAL,
    }
}

declare_extension! {
    name: "rand",
    device: "rand",
    init: init,
    exit: exit,
    open: None,
    read: Some(read),
    write: None,
    ioctl: Some(ioctl),
    close: None,
}
