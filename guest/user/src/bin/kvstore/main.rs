//! The key-value service: registers as "kv" and answers requests of the
//! `lazarus_abi::dev::kv` protocol forever. The store is a BTreeMap in this
//! process's heap, which is exactly what a recovery must keep intact; with
//! a disk, every change also goes to a log there (`log.rs`), flushed once
//! a second and replayed when the service starts again.
#![no_std]
#![no_main]

extern crate alloc;

mod log;

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::ops::Bound;

use lazarus_ulib::abi::dev::kv::{
    FLAG_MORE, HEADER_LEN, OP_COUNT, OP_DEL, OP_GET, OP_LIST, OP_PUT, OP_STATS, OP_SYNC, SERVICE,
    STATS_FIELDS,
};
use lazarus_ulib::abi::dev::kvlog;
use lazarus_ulib::abi::syscall::IPC_MSG_MAX;
use lazarus_ulib::kv::{Msg, decode_request, encode_reply};
use lazarus_ulib::{Args, Errno, entry, eprintln, ipc};

use log::Log;

entry!(main);

/// Upper bound on stored keys, so a runaway client gets ENOSPC instead of
/// exhausting memory and killing the service.
const MAX_KEYS: usize = 65536;
/// Retries of a reply while the kernel's message table is full.
const SEND_TRIES: u32 = 1000;

#[derive(Default)]
struct Store {
    map: BTreeMap<Vec<u8>, Vec<u8>>,
    bytes: u64,
    puts: u64,
    gets: u64,
    dels: u64,
    requests: u64,
    /// The disk log, if there is a disk.
    log: Option<Log>,
    /// Changes replayed from the log at start.
    replayed: u64,
}

impl Store {
    /// Handles one request, writing the payload into `out[HEADER_LEN..]`;
    /// returns (status, flags, payload length).
    fn handle(&mut self, op: u8, key: &[u8], value: &[u8], out: &mut Msg) -> (u8, u8, usize) {
        self.requests += 1;
        let body = &mut out[HEADER_LEN..];
        match op {
            OP_PUT => {
                self.puts += 1;
                if !self.map.contains_key(key) && self.map.len() >= MAX_KEYS {
                    return (errno(Errno::ENOSPC), 0, 0);
                }
                self.bytes += value.len() as u64;
                if let Some(old) = self.map.insert(key.to_vec(), value.to_vec()) {
                    self.bytes -= old.len() as u64;
                }
                if let Some(log) = &mut self.log {
                    log.append(kvlog::OP_PUT, key, value, &self.map);
                }
                (0, 0, 0)
            }
            OP_GET => {
                self.gets += 1;
                match self.map.get(key) {
                    Some(v) => {
                        body[..v.len()].copy_from_slice(v);
                        (0, 0, v.len())
                    }
                    None => (errno(Errno::ENOENT), 0, 0),
                }
            }
            OP_DEL => {
                self.dels += 1;
                match self.map.remove(key) {
                    Some(old) => {
                        self.bytes -= old.len() as u64;
                        if let Some(log) = &mut self.log {
                            log.append(kvlog::OP_DEL, key, &[], &self.map);
                        }
                        (0, 0, 0)
                    }
                    None => (errno(Errno::ENOENT), 0, 0),
                }
            }
            OP_COUNT => {
                body[..8].copy_from_slice(&(self.map.len() as u64).to_le_bytes());
                (0, 0, 8)
            }
            OP_LIST => {
                let start = if key.is_empty() {
                    Bound::Unbounded
                } else {
                    Bound::Excluded(key)
                };
                let mut len = 0;
                let mut flags = 0;
                for k in self
                    .map
                    .range::<[u8], _>((start, Bound::Unbounded))
                    .map(|(k, _)| k)
                {
                    if len + 1 + k.len() > body.len() {
                        flags = FLAG_MORE;
                        break;
                    }
                    body[len] = k.len() as u8;
                    body[len + 1..len + 1 + k.len()].copy_from_slice(k);
                    len += 1 + k.len();
                }
                (0, flags, len)
            }
            OP_STATS => {
                let fields: [u64; STATS_FIELDS.len()] = [
                    self.map.len() as u64,
                    self.bytes,
                    self.puts,
                    self.gets,
                    self.dels,
                    self.requests,
                    u64::from(self.log.as_ref().is_some_and(Log::persistent)),
                    self.replayed,
                    self.log.as_ref().map_or(0, Log::unflushed),
                ];
                for (chunk, f) in body.chunks_exact_mut(8).zip(fields) {
                    chunk.copy_from_slice(&f.to_le_bytes());
                }
                (0, 0, fields.len() * 8)
            }
            OP_SYNC => match &mut self.log {
                Some(log) => {
                    log.flush();
                    if log.persistent() {
                        (0, 0, 0)
                    } else {
                        (errno(Errno::EIO), 0, 0)
                    }
                }
                None => (0, 0, 0),
            },
            _ => (errno(Errno::EINVAL), 0, 0),
        }
    }
}

fn errno(e: Errno) -> u8 {
    e.0 as u8
}

fn main(_args: Args) -> i32 {
    if let Err(e) = ipc::register(SERVICE) {
        eprintln!("kvstore: register {SERVICE}: {e}");
        return 1;
    }
    let mut store = Store::default();
    // Without a disk the store lives in memory only (`kv stats` says
    // `persistent=0`); the kernel already said there is no disk.
    if let Some((log, map, r)) = Log::open() {
        store.bytes = map.values().map(|v| v.len() as u64).sum();
        if r.blocks > 0 {
            eprintln!(
                "kvstore: restored {} keys from the disk log ({} changes in {} blocks, generation {}, {} ms); changes after its last flush were lost",
                map.len(),
                r.changes,
                r.blocks,
                r.generation,
                r.ms
            );
        }
        store.map = map;
        store.replayed = r.changes;
        store.log = Some(log);
    }
    let mut rx: Msg = [0; IPC_MSG_MAX];
    let mut tx: Msg = [0; IPC_MSG_MAX];
    // The reply to send with the next receive: (client, length).
    let mut reply: Option<(u32, usize)> = None;
    loop {
        let due = store.log.as_ref().and_then(Log::flush_deadline);
        let got = match reply.take() {
            // The reply and the next request are one system call, with the
            // flush's deadline. A client that went away gets no reply.
            Some((dst, len)) => {
                match ipc::reply_wait_retry(Some((dst, &tx[..len])), &mut rx, due, SEND_TRIES) {
                    // The message table stayed full: the reply is dropped.
                    Err(Errno::EAGAIN) => ipc::reply_wait(None, &mut rx, due),
                    r => r,
                }
            }
            None => ipc::reply_wait(None, &mut rx, due),
        };
        let (src, n) = match got {
            Ok(Some(m)) => m,
            // The flush is due (the kernel says so before it hands over
            // another request).
            Ok(None) => {
                if let Some(log) = &mut store.log {
                    log.flush();
                }
                continue;
            }
            Err(e) => {
                eprintln!("kvstore: recv: {e}");
                continue;
            }
        };
        let (status, flags, tag, len) = match decode_request(&rx[..n]) {
            Some(req) => {
                let (s, f, l) = store.handle(req.op, req.key, req.value, &mut tx);
                (s, f, req.tag, l)
            }
            None => (errno(Errno::EINVAL), 0, 0, 0),
        };
        reply = Some((src, encode_reply(&mut tx, status, flags, tag, len)));
    }
}
