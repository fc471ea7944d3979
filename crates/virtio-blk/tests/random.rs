//! Random rings: thousands of random descriptor tables, chains, headers
//! and available indexes in guest memory, some well formed, most not.
//!
//! After every notification: no panic, the image keeps its size and the
//! image never saw an access outside it, every chain the transport
//! completed was answered exactly once, and a device in NEEDS_RESET
//! touches nothing (image, used ring, answers) until it is reset.
//!
//! `LAZARUS_VBLK_RANDOM_ITERS` and `LAZARUS_VBLK_RANDOM_SEED` change the
//! run's length and seed.

mod common;

use common::*;
use lazarus_virtio_mmio::testing::Buf;

const SIZE: usize = 64 << 10;
const SECTORS: u64 = (SIZE / 512) as u64;
const END: u64 = MEM_SIZE as u64;
const NEXT: u16 = 1;
const WRITE: u16 = 2;
const INDIRECT: u16 = 4;

struct Rng(u64);

impl Rng {
    /// splitmix64.
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

fn addr(rng: &mut Rng) -> u64 {
    match rng.below(12) {
        0 => rng.below(END),
        1 => END - 1 - rng.below(600),
        2 => END + rng.below(1 << 20),
        3 => u64::MAX - rng.below(4096),
        4 => rng.next(),
        _ => DATA + rng.below(DATA_MAX),
    }
}

fn len(rng: &mut Rng) -> u32 {
    match rng.below(12) {
        0 => 0,
        1 => 1,
        2 => 8,
        3 => 16,
        4 => 512,
        5 => 1024,
        6 => rng.below(70_000) as u32,
        7 => u32::MAX - rng.below(16) as u32,
        8 => 4096,
        9 => 15,
        _ => 512 * (1 + rng.below(8) as u32),
    }
}

fn kind(rng: &mut Rng) -> u32 {
    match rng.below(10) {
        0..=2 => T_IN,
        3..=5 => T_OUT,
        6 => T_FLUSH,
        7 => T_GET_ID,
        8 => rng.below(32) as u32,
        _ => rng.next() as u32,
    }
}

fn sector(rng: &mut Rng) -> u64 {
    match rng.below(8) {
        0 => rng.next(),
        1 => u64::MAX / 512 - rng.below(4),
        2 => SECTORS + rng.below(8),
        _ => rng.below(SECTORS),
    }
}

/// Everything that must not change while the device is stopped.
fn observe(rig: &Rig) -> (Vec<u8>, u16, u64, u64, u32) {
    (
        rig.image(),
        rig.drv.used_idx(),
        rig.t.stats().chains,
        rig.t.device().stats().requests,
        rig.t.interrupt_status(),
    )
}

#[test]
fn random_rings_never_escape() {
    let iterations: usize = std::env::var("LAZARUS_VBLK_RANDOM_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let seed: u64 = std::env::var("LAZARUS_VBLK_RANDOM_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x1a2a_5eed);
    let mut rng = Rng(seed);
    let mut rig = Rig::live(SIZE, false);
    let size = RING_SIZE;
    let mut resets = 0u64;
    let mut pauses = 0u64;

    for iteration in 0..iterations {
        let ctx = format!("seed {seed} iteration {iteration}");
        // Random descriptors everywhere.
        for i in 0..size {
            let mut flags = 0;
            if rng.chance(60) {
                flags |= NEXT;
            }
            if rng.chance(50) {
                flags |= WRITE;
            }
            if rng.chance(4) {
                flags |= INDIRECT;
            }
            let next = rng.below(u64::from(size) + 4) as u16;
            let (a, l) = (addr(&mut rng), len(&mut rng));
            rig.drv.write_desc(i, a, l, flags, next);
            if (DATA..DATA + DATA_MAX - 16).contains(&a) && rng.chance(70) {
                rig.header_at(a, kind(&mut rng), sector(&mut rng));
            }
        }
        // A few chains that look like requests, some of them slightly off.
        let mut heads = Vec::new();
        for _ in 0..rng.below(4) {
            let base = rng.below(u64::from(size) - 3) as u16;
            let hdr = DATA + 0x100 * rng.below(64);
            let data = DATA + 0x10000 + 0x1000 * rng.below(64);
            let status = HDR + rng.below(256);
            let t = kind(&mut rng);
            rig.header_at(hdr, t, sector(&mut rng));
            let data_len = if rng.chance(80) {
                512 * (1 + rng.below(8) as u32)
            } else {
                len(&mut rng)
            };
            let data_flags = if t == T_IN || t == T_GET_ID || rng.chance(10) {
                WRITE
            } else {
                0
            };
            let mut descs = vec![
                (hdr, if rng.chance(90) { 16 } else { len(&mut rng) }, NEXT),
                (data, data_len, NEXT | data_flags),
                (status, 1, if rng.chance(95) { WRITE } else { 0 }),
            ];
            if t == T_FLUSH && rng.chance(80) {
                descs.remove(1);
            }
            for (j, &(a, l, f)) in descs.iter().enumerate() {
                let index = base + j as u16;
                rig.drv.write_desc(index, a, l, f, index + 1);
            }
            heads.push(base);
        }
        // Publish some heads, now and then an index far ahead.
        let count = match rng.below(10) {
            0 => 0,
            1 => u64::from(size) + 1 + rng.below(1000),
            _ => 1 + rng.below(6),
        };
        for _ in 0..count.min(u64::from(size)) {
            let head = match heads.get(rng.below(8) as usize) {
                Some(&h) => h,
                None => rng.below(u64::from(size) + 8) as u16,
            };
            rig.drv.push_avail(head);
        }
        if count > u64::from(size) {
            let idx = rig.t.queue(0).map_or(0, |q| {
                use virtio_queue::QueueT;
                q.next_avail()
            });
            rig.drv.set_avail_idx(idx.wrapping_add(count as u16));
        }

        // Sometimes through a pause: nothing may happen before the resume.
        if rng.chance(10) {
            pauses += 1;
            rig.t.pause();
            let before = observe(&rig);
            rig.drv.notify(&mut rig.t);
            assert_eq!(observe(&rig), before, "{ctx}: work while paused");
            rig.t.resume();
        } else {
            rig.drv.notify(&mut rig.t);
        }

        let disk = rig.t.device().disk().stats();
        assert_eq!(disk.out_of_range, 0, "{ctx}: access outside the image");
        assert_eq!(
            std::fs::metadata(&rig.path).unwrap().len(),
            SIZE as u64,
            "{ctx}: image size changed"
        );
        assert_eq!(
            rig.t.stats().chains,
            rig.t.device().stats().requests,
            "{ctx}: completions and answers differ"
        );

        if rig.t.needs_reset() {
            resets += 1;
            // Stopped: a good request, notified, changes nothing.
            let before = observe(&rig);
            rig.header_at(HDR, T_OUT, 0);
            rig.drv.add_chain(&[
                Buf::read(HDR, 16),
                Buf::read(DATA, 512),
                Buf::write(STATUS, 1),
            ]);
            rig.drv.notify(&mut rig.t);
            rig.t.pause();
            rig.t.resume();
            assert_eq!(observe(&rig), before, "{ctx}: processed while NEEDS_RESET");
            rig.drv.init(&mut rig.t, |o| o).unwrap();
        } else if rng.chance(2) {
            // Drivers reset healthy devices too.
            rig.drv.init(&mut rig.t, |o| o).unwrap();
        }
    }

    // The run went through every kind of outcome.
    let stats = rig.t.device().stats();
    eprintln!(
        "seed {seed}: {iterations} iterations, {resets} NEEDS_RESET, {pauses} pauses, {stats:?}, {:?}",
        rig.t.device().disk().stats()
    );
    if iterations >= 1000 {
        assert!(resets > 100, "{resets} resets");
        assert!(stats.reads > 20 && stats.writes > 20, "{stats:?}");
        assert!(stats.flushes > 0 && stats.get_ids > 0, "{stats:?}");
        assert!(stats.io_errors > 20 && stats.unsupported > 20, "{stats:?}");
    }
    // And the device still works, once the driver starts afresh (the
    // random chains left used entries it never read).
    rig.drv.init(&mut rig.t, |o| o).unwrap();
    let before = rig.image();
    assert_eq!(rig.write(3, &[0x3c; 512]), S_OK);
    let mut model = before;
    model[3 * 512..4 * 512].fill(0x3c);
    assert_eq!(rig.image(), model);
}
