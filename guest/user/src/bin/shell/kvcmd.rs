//! `kv`: the shell as the kvstore's writer.
//!
//! The ledger maps every key this shell stored to the FNV-1a checksum of
//! the value it wrote; `kv check` compares it with what the store returns,
//! so a recovery that lost or corrupted data is caught.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;

use lazarus_ulib::abi::dev::kv::{KEY_MAX, STATS_FIELDS, VALUE_MAX};
use lazarus_ulib::checksum::{XorShift, fnv1a64};
use lazarus_ulib::kv::Client;
use lazarus_ulib::{Result, print, println};

/// How many lost keys `kv check` names before its summary.
const CHECK_REPORT_MAX: usize = 5;
const FILL_DEFAULT_PREFIX: &str = "k";
/// Characters of `kv fill` values.
const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_";

#[derive(Default)]
pub struct Kv {
    client: Option<Client>,
    /// key -> checksum of the value this shell last wrote.
    ledger: BTreeMap<String, u64>,
}

/// The deterministic value `kv fill` writes for `key`.
pub fn fill_value(key: &str) -> Vec<u8> {
    let mut rng = XorShift::new(fnv1a64(key.as_bytes()));
    let len = 16 + rng.below(97) as usize;
    (0..len)
        .map(|_| ALPHABET[rng.below(ALPHABET.len() as u64) as usize])
        .collect()
}

impl Kv {
    /// The connection, (re)connecting if needed.
    fn client(&mut self) -> Result<&mut Client> {
        if self.client.is_none() {
            self.client = Some(Client::connect()?);
        }
        Ok(self.client.as_mut().expect("connected above"))
    }

    /// Runs `f` with the client; a failure drops the connection so that
    /// the next command looks the service up again.
    fn with<T>(&mut self, f: impl FnOnce(&mut Client) -> Result<T>) -> Result<T> {
        let r = self.client().and_then(f);
        if r.is_err() {
            self.client = None;
        }
        r
    }

    /// Before a poweroff: the kvstore's unflushed changes go to its disk
    /// log (nothing to do if it is not running or has no disk).
    pub fn sync_quietly(&mut self) {
        let _ = self.with(|c| c.sync());
    }

    pub fn command(&mut self, args: &[&str]) {
        let r = match args {
            ["put", key, value @ ..] if !value.is_empty() => self.put(key, &value.join(" ")),
            ["get", key] => self.get(key),
            ["del", key] => self.del(key),
            ["list"] => self.list(),
            ["count"] => self.with(|c| c.count()).map(|n| println!("kv: {n} keys")),
            ["stats"] => self.stats(),
            ["sync"] => self.with(|c| c.sync()).map(|()| println!("kv: synced")),
            ["fill", n] => self.fill(n, FILL_DEFAULT_PREFIX),
            ["fill", n, prefix] => self.fill(n, prefix),
            ["check"] => {
                self.check();
                Ok(())
            }
            _ => {
                super::usage("kv");
                Ok(())
            }
        };
        if let Err(e) = r {
            println!("kv: {e}");
        }
    }

    fn put(&mut self, key: &str, value: &str) -> Result<()> {
        if key.len() > KEY_MAX || value.len() > VALUE_MAX {
            println!("kv: key at most {KEY_MAX} bytes, value at most {VALUE_MAX}");
            return Ok(());
        }
        self.with(|c| c.put(key, value.as_bytes()))?;
        self.ledger
            .insert(String::from(key), fnv1a64(value.as_bytes()));
        Ok(())
    }

    fn get(&mut self, key: &str) -> Result<()> {
        match self.with(|c| c.get(key))? {
            Some(v) => println!("{}", String::from_utf8_lossy(&v)),
            None => println!("kv: {key}: not found"),
        }
        Ok(())
    }

    fn del(&mut self, key: &str) -> Result<()> {
        let found = self.with(|c| c.del(key))?;
        self.ledger.remove(key);
        if !found {
            println!("kv: {key}: not found");
        }
        Ok(())
    }

    fn list(&mut self) -> Result<()> {
        let keys = self.with(|c| c.keys())?;
        let mut out = String::new();
        for k in &keys {
            let _ = writeln!(out, "{k}");
        }
        let _ = writeln!(out, "kv list: {} keys", keys.len());
        print!("{out}");
        Ok(())
    }

    fn stats(&mut self) -> Result<()> {
        let stats = self.with(|c| c.stats())?;
        let mut out = String::from("kv stats:");
        for (name, v) in STATS_FIELDS.iter().zip(stats) {
            let _ = write!(out, " {name}={v}");
        }
        let _ = write!(out, " ledger={}", self.ledger.len());
        println!("{out}");
        Ok(())
    }

    fn fill(&mut self, n: &str, prefix: &str) -> Result<()> {
        let Ok(n) = n.parse::<u64>() else {
            super::usage("kv");
            return Ok(());
        };
        if prefix.len() + format!("{n}").len() > KEY_MAX {
            println!("kv: prefix too long");
            return Ok(());
        }
        for i in 0..n {
            let key = format!("{prefix}{i}");
            let value = fill_value(&key);
            if let Err(e) = self.with(|c| c.put(&key, &value)) {
                println!("kv fill: stopped after {i} keys");
                return Err(e);
            }
            self.ledger.insert(key, fnv1a64(&value));
        }
        println!("kv fill: {n} keys written");
        Ok(())
    }

    fn check(&mut self) {
        let keys: Vec<(String, u64)> = self.ledger.iter().map(|(k, v)| (k.clone(), *v)).collect();
        let mut intact = 0usize;
        let mut lost = 0usize;
        let mut out = String::new();
        // Once the service is unreachable, every remaining key is lost for
        // the same reason; asking again per key would only add delay.
        let mut unreachable = None;
        for (key, sum) in keys {
            let why = match unreachable {
                Some(e) => format!("{e}"),
                None => match self.with(|c| c.get(&key)) {
                    Ok(Some(v)) if fnv1a64(&v) == sum => {
                        intact += 1;
                        continue;
                    }
                    Ok(Some(_)) => String::from("checksum mismatch"),
                    Ok(None) => String::from("missing"),
                    Err(e) => {
                        unreachable = Some(e);
                        format!("{e}")
                    }
                },
            };
            lost += 1;
            if lost <= CHECK_REPORT_MAX {
                let _ = writeln!(out, "kv check: FAIL {key}: {why}");
            }
        }
        let _ = writeln!(out, "kv check: {intact} intact, {lost} lost");
        if lost > 0 && unreachable.is_none() {
            let _ = writeln!(out, "kv check: {}", self.why_lost(lost));
        }
        print!("{out}");
    }

    /// Why keys are gone, as far as the service's statistics tell: a
    /// restart replayed its disk log without the last interval's changes,
    /// or it has no disk.
    fn why_lost(&mut self, lost: usize) -> String {
        let field = |name: &str| STATS_FIELDS.iter().position(|f| *f == name);
        let stats = self.with(|c| c.stats()).ok();
        let get = |name: &str| stats.zip(field(name)).map(|(s, i)| s[i]);
        match (get("persistent"), get("replayed")) {
            (Some(1), Some(r)) if r > 0 => format!(
                "the kvstore restarted and replayed its disk log; the {lost} lost keys were written after the log's last flush (every {} ms)",
                lazarus_ulib::abi::dev::kvlog::FLUSH_INTERVAL_MS
            ),
            (Some(0), _) => String::from(
                "the kvstore keeps its data in memory only (no disk): each restart loses every key",
            ),
            _ => String::from("the kvstore lost them"),
        }
    }
}
