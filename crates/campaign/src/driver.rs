//! Drives a guest's shell from the host: commands go into the console
//! input queue, output is teed to a sink and kept for matching. Used by
//! campaigns, and by `lazarus demo` and `lazarus bench recovery`.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use lazarus_vmm::ConsoleInput;

/// The guest shell's prompt.
pub const PROMPT: &str = "lazarus> ";

/// How long [`Driver::resync`] waits for its marker and the prompt.
const RESYNC_TIMEOUT: Duration = Duration::from_secs(60);

/// Why the console did not answer as expected.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The guest did not print the expected text in time.
    #[error("the guest did not print {pattern:?} within {timeout:?}")]
    Timeout {
        /// The text waited for.
        pattern: String,
        /// How long it was waited for.
        timeout: Duration,
    },
    /// A thread panicked while holding the console text.
    #[error("console lock poisoned")]
    Poisoned,
}

#[derive(Default)]
struct Shared {
    text: Mutex<String>,
    grew: Condvar,
}

/// The console's output side: echoes to `sink` (if any) and records.
pub struct Tee {
    shared: Arc<Shared>,
    sink: Option<Box<dyn Write + Send>>,
}

impl Write for Tee {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(s) = self.sink.as_mut() {
            s.write_all(buf)?;
        }
        if let Ok(mut t) = self.shared.text.lock() {
            t.push_str(&String::from_utf8_lossy(buf));
        }
        self.shared.grew.notify_all();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.sink.as_mut().map_or(Ok(()), |s| s.flush())
    }
}

/// The host's end of the guest console: types lines, waits for output.
pub struct Driver {
    input: ConsoleInput,
    shared: Arc<Shared>,
    pos: usize,
    seq: u64,
    /// Start of the text `take_since_mark` returns.
    mark: usize,
}

impl Driver {
    /// A driver, and the console input and output writer to give the VM.
    pub fn new(sink: Option<Box<dyn Write + Send>>) -> (Driver, ConsoleInput, Tee) {
        let shared = Arc::new(Shared::default());
        let input = ConsoleInput::manual();
        let tee = Tee {
            shared: shared.clone(),
            sink,
        };
        (
            Driver {
                input: input.clone(),
                shared,
                pos: 0,
                seq: 0,
                mark: 0,
            },
            input,
            tee,
        )
    }

    /// Waits until `pat` appears after the read position; returns the text
    /// up to it and moves past it.
    pub fn expect(&mut self, pat: &str, timeout: Duration) -> Result<String, DriverError> {
        let deadline = Instant::now() + timeout;
        let mut text = self.shared.text.lock().map_err(|_| DriverError::Poisoned)?;
        loop {
            if let Some(i) = text[self.pos..].find(pat) {
                let end = self.pos + i + pat.len();
                let out = text[self.pos..end].to_string();
                self.pos = end;
                return Ok(out);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(DriverError::Timeout {
                    pattern: pat.to_string(),
                    timeout,
                });
            }
            text = self
                .shared
                .grew
                .wait_timeout(text, deadline - now)
                .map_err(|_| DriverError::Poisoned)?
                .0;
        }
    }

    /// Remembers the current end of the console text, and forgets what
    /// was already read: a campaign runs for hours, and the workload's
    /// output would otherwise pile up in memory.
    pub fn mark(&mut self) {
        if let Ok(mut text) = self.shared.text.lock() {
            let read = self.pos.min(text.len());
            text.drain(..read);
            self.pos -= read;
            self.mark = text.len();
        }
    }

    /// Everything printed since the last `mark` (all of it, not only
    /// what `expect` has consumed).
    pub fn take_since_mark(&self) -> String {
        self.shared
            .text
            .lock()
            .map(|t| t.get(self.mark..).unwrap_or_default().to_string())
            .unwrap_or_default()
    }

    /// Types `line` and Enter into the console without waiting.
    pub fn send(&self, line: &str) {
        self.input.push(format!("{line}\n").as_bytes());
    }

    /// Runs a shell command; returns its output.
    pub fn cmd(&mut self, line: &str, timeout: Duration) -> Result<String, DriverError> {
        self.send(line);
        Ok(self
            .expect(PROMPT, timeout)?
            .trim_end_matches(PROMPT)
            .to_string())
    }

    /// Skips asynchronous output (crash messages, background jobs).
    pub fn resync(&mut self) -> Result<(), DriverError> {
        self.seq += 1;
        let marker = format!("sync-{}", self.seq);
        self.send(&format!("echo {marker}"));
        self.expect(&format!("{marker}\n"), RESYNC_TIMEOUT)?;
        self.expect(PROMPT, RESYNC_TIMEOUT)?;
        Ok(())
    }
}

/// Parses `kv check: N intact, M lost` into `(N, M)`.
pub fn kv_check(out: &str) -> Option<(u64, u64)> {
    let line = out
        .lines()
        .find(|l| l.starts_with("kv check:") && l.contains("intact"))?;
    let nums: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|s| s.parse().ok())
        .collect();
    match nums[..] {
        [a, b] => Some((a, b)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_check_lines() {
        assert_eq!(kv_check("kv check: 16 intact, 0 lost\n"), Some((16, 0)));
        assert_eq!(
            kv_check("noise\nkv check: 3 intact, 13 lost\n"),
            Some((3, 13))
        );
        assert_eq!(kv_check("kv check: nothing"), None);
        assert_eq!(kv_check(""), None);
    }

    #[test]
    fn expect_marks_and_times_out() {
        let (mut d, _input, mut tee) = Driver::new(None);
        tee.write_all(b"boot\nlazarus> ").expect("tee");
        let out = d.expect(PROMPT, Duration::from_millis(10)).expect("prompt");
        assert_eq!(out, "boot\nlazarus> ");
        d.mark();
        tee.write_all(b"more").expect("tee");
        assert_eq!(d.take_since_mark(), "more");
        let e = d.expect(PROMPT, Duration::from_millis(10)).unwrap_err();
        assert!(e.to_string().contains("did not print \"lazarus> \""), "{e}");
    }
}
