//! `kvload`: a kv store client that must never see an error, for tests of
//! crashes under load.
//!
//! - `kvload write PREFIX COUNT`: puts PREFIX0 .. PREFIX{COUNT-1}, each
//!   with `abi::dev::kv::load_value` of its key, one request at a time;
//! - `kvload read PREFIX COUNT SECONDS`: gets those keys round after round
//!   for SECONDS and checks every value.
//!
//! A failed request is counted and retried after 10 ms (up to 100 times),
//! so that a run shows every error a client saw and still finishes. Each
//! ends with `kvload: ok ...` when no request failed and every value was
//! right, else `kvload: FAIL ...` (exit status 1). Bad arguments exit 2.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::format;
use alloc::string::String;

use lazarus_ulib::abi::dev::kv::load_value;
use lazarus_ulib::kv::Client;
use lazarus_ulib::process::{sleep_ms, uptime_ms};
use lazarus_ulib::{Args, entry, println};

entry!(main);

const USAGE: &str = "usage: kvload write PREFIX COUNT | kvload read PREFIX COUNT SECONDS";
/// Tries of one request before the run gives up.
const TRIES: u32 = 100;

/// What a run saw.
#[derive(Default)]
struct Tally {
    requests: u64,
    errors: u64,
    wrong: u64,
    first_problem: Option<String>,
}

impl Tally {
    fn problem(&mut self, what: String) {
        if self.first_problem.is_none() {
            self.first_problem = Some(what);
        }
    }

    /// Runs `op` until it succeeds, counting every failure; `None` after
    /// [`TRIES`] failures.
    fn request<T>(
        &mut self,
        client: &mut Option<Client>,
        what: &str,
        mut op: impl FnMut(&mut Client) -> lazarus_ulib::Result<T>,
    ) -> Option<T> {
        for _ in 0..TRIES {
            self.requests += 1;
            let r = match client {
                Some(c) => op(c),
                None => Client::connect().and_then(|mut c| {
                    let r = op(&mut c);
                    *client = Some(c);
                    r
                }),
            };
            match r {
                Ok(v) => return Some(v),
                Err(e) => {
                    self.errors += 1;
                    self.problem(format!("{what}: {e}"));
                    *client = None;
                    sleep_ms(10);
                }
            }
        }
        None
    }
}

fn main(args: Args) -> i32 {
    let argv: alloc::vec::Vec<&str> = args.iter().skip(1).collect();
    let parsed = match argv.as_slice() {
        ["write", prefix, count] => count.parse().ok().map(|c| (true, *prefix, c, 0)),
        ["read", prefix, count, secs] => match (count.parse(), secs.parse::<u64>()) {
            (Ok(c), Ok(s)) => Some((false, *prefix, c, s)),
            _ => None,
        },
        _ => None,
    };
    let Some((writing, prefix, count, secs)) = parsed else {
        println!("{USAGE}");
        return 2;
    };
    let mut t = Tally::default();
    let mut client = None;
    let done = if writing {
        write(&mut t, &mut client, prefix, count)
    } else {
        read(&mut t, &mut client, prefix, count, secs)
    };
    let verdict = if t.errors == 0 && t.wrong == 0 && done {
        "ok"
    } else {
        "FAIL"
    };
    println!(
        "kvload: {verdict} {} {prefix} keys={count} requests={} errors={} wrong={}{}",
        if writing { "write" } else { "read" },
        t.requests,
        t.errors,
        t.wrong,
        t.first_problem
            .map(|p| format!(" first: {p}"))
            .unwrap_or_default()
    );
    i32::from(verdict != "ok")
}

fn write(t: &mut Tally, client: &mut Option<Client>, prefix: &str, count: u64) -> bool {
    for i in 0..count {
        let key = format!("{prefix}{i}");
        let value = load_value(key.as_bytes());
        if t.request(client, &key, |c| c.put(&key, &value)).is_none() {
            return false;
        }
    }
    true
}

fn read(t: &mut Tally, client: &mut Option<Client>, prefix: &str, count: u64, secs: u64) -> bool {
    let end = uptime_ms() + secs * 1000;
    while uptime_ms() < end {
        for i in 0..count {
            let key = format!("{prefix}{i}");
            match t.request(client, &key, |c| c.get(&key)) {
                None => return false,
                Some(Some(v)) if v == load_value(key.as_bytes()) => {}
                Some(other) => {
                    t.wrong += 1;
                    let what = if other.is_some() {
                        "wrong value"
                    } else {
                        "missing"
                    };
                    t.problem(format!("{key}: {what}"));
                }
            }
        }
    }
    true
}
