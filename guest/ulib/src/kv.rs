//! The kvstore protocol (`lazarus_abi::dev::kv`): message codec, used by
//! both the service and its clients, and a client.

use alloc::string::String;
use alloc::vec::Vec;

use lazarus_abi::dev::kv::{
    FLAG_MORE, HEADER_LEN, KEY_MAX, OP_COUNT, OP_DEL, OP_GET, OP_LIST, OP_PUT, OP_STATS, OP_SYNC,
    SERVICE, STATS_FIELDS, VALUE_MAX,
};
use lazarus_abi::syscall::IPC_MSG_MAX;

use crate::ipc;
use crate::syscall::{Errno, Result};

/// A message buffer.
pub type Msg = [u8; IPC_MSG_MAX];

/// A decoded request.
#[derive(Debug)]
pub struct Request<'a> {
    /// An `OP_*` of `lazarus_abi::dev::kv`.
    pub op: u8,
    /// Chosen by the client; the reply echoes it.
    pub tag: u32,
    /// At most `KEY_MAX` bytes (a cursor for `OP_LIST`).
    pub key: &'a [u8],
    /// At most `VALUE_MAX` bytes; empty except for `OP_PUT`.
    pub value: &'a [u8],
}

/// A decoded reply.
#[derive(Debug)]
pub struct Reply<'a> {
    /// 0 or a positive errno.
    pub status: u8,
    /// `FLAG_MORE` for a partial `OP_LIST`.
    pub flags: u8,
    /// The request's tag.
    pub tag: u32,
    /// The op's answer (see `lazarus_abi::dev::kv`).
    pub payload: &'a [u8],
}

/// Encodes a request into `buf`; returns its length.
pub fn encode_request(buf: &mut Msg, op: u8, tag: u32, key: &[u8], value: &[u8]) -> Result<usize> {
    if key.len() > KEY_MAX || value.len() > VALUE_MAX {
        return Err(Errno::E2BIG);
    }
    buf[0] = op;
    buf[1] = key.len() as u8;
    buf[2..4].copy_from_slice(&(value.len() as u16).to_le_bytes());
    buf[4..8].copy_from_slice(&tag.to_le_bytes());
    let k = HEADER_LEN + key.len();
    buf[HEADER_LEN..k].copy_from_slice(key);
    buf[k..k + value.len()].copy_from_slice(value);
    Ok(k + value.len())
}

/// Decodes a request; `None` if it is malformed (lengths out of range or
/// not matching the message).
pub fn decode_request(msg: &[u8]) -> Option<Request<'_>> {
    let header = msg.get(..HEADER_LEN)?;
    let klen = usize::from(header[1]);
    let vlen = usize::from(u16::from_le_bytes([header[2], header[3]]));
    if klen > KEY_MAX || vlen > VALUE_MAX || msg.len() != HEADER_LEN + klen + vlen {
        return None;
    }
    Some(Request {
        op: header[0],
        tag: u32::from_le_bytes([header[4], header[5], header[6], header[7]]),
        key: &msg[HEADER_LEN..HEADER_LEN + klen],
        value: &msg[HEADER_LEN + klen..],
    })
}

/// Encodes a reply header in front of a payload already placed at
/// `buf[HEADER_LEN..HEADER_LEN + len]`; returns the message length.
pub fn encode_reply(buf: &mut Msg, status: u8, flags: u8, tag: u32, len: usize) -> usize {
    let len = len.min(IPC_MSG_MAX - HEADER_LEN);
    buf[0] = status;
    buf[1] = flags;
    buf[2..4].copy_from_slice(&(len as u16).to_le_bytes());
    buf[4..8].copy_from_slice(&tag.to_le_bytes());
    HEADER_LEN + len
}

/// Decodes a reply; `None` if it is shorter than its header says.
pub fn decode_reply(msg: &[u8]) -> Option<Reply<'_>> {
    let header = msg.get(..HEADER_LEN)?;
    let len = usize::from(u16::from_le_bytes([header[2], header[3]]));
    Some(Reply {
        status: header[0],
        flags: header[1],
        tag: u32::from_le_bytes([header[4], header[5], header[6], header[7]]),
        payload: msg.get(HEADER_LEN..HEADER_LEN + len)?,
    })
}

/// How often a request is retried while the kernel's message table is
/// full.
const SEND_TRIES: u32 = 1000;
/// How long [`Client::connect`] waits for the service to appear.
pub const CONNECT_WAIT_MS: u64 = 2000;
const CONNECT_POLL_MS: u64 = 50;

/// The service's pid, polling while it is not registered.
fn lookup() -> Result<u32> {
    let mut waited = 0;
    loop {
        match ipc::lookup(SERVICE) {
            Err(Errno::ENOENT) if waited < CONNECT_WAIT_MS => {
                crate::process::sleep_ms(CONNECT_POLL_MS);
                waited += CONNECT_POLL_MS;
            }
            r => return r,
        }
    }
}

/// A connection to the kvstore service. One request is in flight at a
/// time; replies are matched by sender and tag, anything else received
/// meanwhile is dropped.
pub struct Client {
    server: u32,
    tag: u32,
    tx: Msg,
    rx: Msg,
}

impl Client {
    /// Looks the service up, waiting up to [`CONNECT_WAIT_MS`] for it to
    /// register (init may be restarting it).
    pub fn connect() -> Result<Client> {
        Ok(Client {
            server: lookup()?,
            tag: 0,
            tx: [0; IPC_MSG_MAX],
            rx: [0; IPC_MSG_MAX],
        })
    }

    /// Sends one request and waits for its reply; returns (status, flags,
    /// payload length); the payload is in `self.rx[HEADER_LEN..]`.
    fn call(&mut self, op: u8, key: &[u8], value: &[u8]) -> Result<(u8, u8, usize)> {
        self.tag = self.tag.wrapping_add(1);
        let len = encode_request(&mut self.tx, op, self.tag, key, value)?;
        // Request and reply in one system call.
        let mut got =
            match ipc::sendrecv_retry(self.server, &self.tx[..len], &mut self.rx, SEND_TRIES) {
                Ok(m) => m,
                Err(e) => {
                    // Nothing was sent; the service may have been restarted
                    // under a new pid.
                    let server = lookup().map_err(|_| e)?;
                    if server == self.server {
                        return Err(e);
                    }
                    self.server = server;
                    ipc::sendrecv_retry(self.server, &self.tx[..len], &mut self.rx, SEND_TRIES)?
                }
            };
        loop {
            let (src, n) = got;
            if src == self.server
                && let Some(r) = decode_reply(&self.rx[..n])
                && r.tag == self.tag
            {
                return Ok((r.status, r.flags, r.payload.len()));
            }
            got = ipc::recv(&mut self.rx)?;
        }
    }

    fn payload(&self, len: usize) -> &[u8] {
        &self.rx[HEADER_LEN..HEADER_LEN + len]
    }

    fn ok(status: u8) -> Result<()> {
        match status {
            0 => Ok(()),
            e => Err(Errno(i64::from(e))),
        }
    }

    /// Stores `value` under `key`.
    pub fn put(&mut self, key: &str, value: &[u8]) -> Result<()> {
        let (status, _, _) = self.call(OP_PUT, key.as_bytes(), value)?;
        Self::ok(status)
    }

    /// The value of `key`, `None` if absent.
    pub fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>> {
        let (status, _, len) = self.call(OP_GET, key.as_bytes(), &[])?;
        if status == Errno::ENOENT.0 as u8 {
            return Ok(None);
        }
        Self::ok(status)?;
        Ok(Some(self.payload(len).to_vec()))
    }

    /// Deletes `key`; false if it was absent.
    pub fn del(&mut self, key: &str) -> Result<bool> {
        let (status, _, _) = self.call(OP_DEL, key.as_bytes(), &[])?;
        if status == Errno::ENOENT.0 as u8 {
            return Ok(false);
        }
        Self::ok(status).map(|()| true)
    }

    /// Number of keys stored.
    pub fn count(&mut self) -> Result<u64> {
        let (status, _, len) = self.call(OP_COUNT, &[], &[])?;
        Self::ok(status)?;
        let p = self.payload(len);
        Ok(p.get(..8)
            .map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8]))))
    }

    /// Every key, in order, fetched a page at a time.
    pub fn keys(&mut self) -> Result<Vec<String>> {
        let mut keys: Vec<String> = Vec::new();
        let mut cursor: Vec<u8> = Vec::new();
        loop {
            let (status, flags, len) = self.call(OP_LIST, &cursor, &[])?;
            Self::ok(status)?;
            let mut p = self.payload(len);
            while let Some((&n, rest)) = p.split_first() {
                let n = usize::from(n).min(rest.len());
                cursor.clear();
                cursor.extend_from_slice(&rest[..n]);
                keys.push(String::from_utf8_lossy(&rest[..n]).into_owned());
                p = &rest[n..];
            }
            if flags & FLAG_MORE == 0 || cursor.is_empty() {
                return Ok(keys);
            }
        }
    }

    /// Makes the service write and flush its disk log now.
    pub fn sync(&mut self) -> Result<()> {
        let (status, _, _) = self.call(OP_SYNC, &[], &[])?;
        Self::ok(status)
    }

    /// Service statistics, named by `STATS_FIELDS`.
    pub fn stats(&mut self) -> Result<[u64; STATS_FIELDS.len()]> {
        let (status, _, len) = self.call(OP_STATS, &[], &[])?;
        Self::ok(status)?;
        let mut out = [0u64; STATS_FIELDS.len()];
        for (o, b) in out.iter_mut().zip(self.payload(len).chunks_exact(8)) {
            *o = u64::from_le_bytes(b.try_into().unwrap_or([0; 8]));
        }
        Ok(out)
    }
}
