//! Where the guest console goes to and comes from.
//!
//! [`ConsoleOutput`] chooses the sink for guest output (serial bytes and
//! `HC_CONSOLE_WRITE`); [`ConsoleInput`] is a queue of bytes for the guest,
//! filled by a reader thread (stdin) or by the caller, and drained into the
//! UART by the VM. The queue outlives a VM, so input that was not consumed
//! yet survives a reboot into a new VM.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use tracing::{debug, warn};

/// Where guest console output goes.
pub enum ConsoleOutput {
    /// The host's standard output (flushed after every guest exit).
    Stdout,
    /// Discarded (benchmarks).
    Null,
    /// Collected in memory (tests).
    Capture(CaptureBuffer),
    /// Any writer.
    Writer(Box<dyn Write + Send>),
}

impl std::fmt::Debug for ConsoleOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ConsoleOutput::Stdout => "Stdout",
            ConsoleOutput::Null => "Null",
            ConsoleOutput::Capture(_) => "Capture",
            ConsoleOutput::Writer(_) => "Writer",
        })
    }
}

/// A shared, growable byte buffer that captures console output.
#[derive(Clone, Debug, Default)]
pub struct CaptureBuffer(Arc<Mutex<Vec<u8>>>);

impl CaptureBuffer {
    /// An empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Everything captured so far.
    pub fn contents(&self) -> Vec<u8> {
        lock(&self.0).clone()
    }

    /// Everything captured so far, lossily decoded as UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&lock(&self.0)).into_owned()
    }
}

impl Write for CaptureBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        lock(&self.0).extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Locks a mutex, recovering the data if another thread panicked with it.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The console sink as the devices see it.
///
/// The UART flushes after every byte; for a `rep outsb` of hundreds of
/// bytes that would be hundreds of syscalls, so `flush` here is deferred
/// and the VMM calls [`ConsoleSink::flush_now`] once per exit.
pub struct ConsoleSink {
    out: Box<dyn Write + Send>,
    failed: bool,
}

impl ConsoleSink {
    /// A sink writing to `output`.
    pub fn new(output: ConsoleOutput) -> Self {
        let out: Box<dyn Write + Send> = match output {
            ConsoleOutput::Stdout => Box::new(std::io::stdout()),
            ConsoleOutput::Null => Box::new(std::io::sink()),
            ConsoleOutput::Capture(buf) => Box::new(buf),
            ConsoleOutput::Writer(w) => w,
        };
        Self { out, failed: false }
    }

    /// Really flushes the underlying writer.
    pub fn flush_now(&mut self) {
        if let Err(e) = self.out.flush() {
            self.report(&e);
        }
    }

    fn report(&mut self, e: &std::io::Error) {
        if !self.failed {
            warn!("console output failed, further output may be lost: {e}");
            self.failed = true;
        }
    }
}

impl Write for ConsoleSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.out.write(buf) {
            Ok(n) => Ok(n),
            Err(e) => {
                self.report(&e);
                // Swallow the error: a closed console must not stop the guest.
                Ok(buf.len())
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Bytes waiting for the guest, and whether more can come.
#[derive(Debug, Default)]
struct InputState {
    buf: VecDeque<u8>,
    eof: bool,
}

#[derive(Debug, Default)]
struct InputQueue {
    state: Mutex<InputState>,
    changed: Condvar,
}

/// Input for the guest console.
#[derive(Clone, Debug, Default)]
pub struct ConsoleInput {
    queue: Arc<InputQueue>,
}

/// What [`ConsoleInput::wait_take`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Take {
    Data(Vec<u8>),
    /// Nothing yet.
    Empty,
    /// Nothing, and nothing more will come.
    Eof,
}

/// The reader thread pauses while this much input is queued.
const MAX_QUEUED: usize = 1 << 20;

impl ConsoleInput {
    /// No input at all.
    pub fn none() -> Self {
        let input = Self::default();
        input.close();
        input
    }

    /// Input the caller pushes with [`ConsoleInput::push`].
    pub fn manual() -> Self {
        Self::default()
    }

    /// A fixed byte string, then end of input.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        let input = Self::default();
        input.push(bytes);
        input.close();
        input
    }

    /// The host's standard input, read by a background thread.
    pub fn stdin() -> Self {
        Self::from_reader(std::io::stdin())
    }

    /// Any reader, read by a background thread until end of file.
    ///
    /// The thread is detached: a read that blocks forever (a terminal)
    /// does not keep the VM from finishing.
    pub fn from_reader<R: Read + Send + 'static>(reader: R) -> Self {
        let input = Self::default();
        let feeder = input.clone();
        let spawned = std::thread::Builder::new()
            .name("console-in".into())
            .spawn(move || feeder.read_all(reader));
        if let Err(e) = spawned {
            warn!("cannot start the console input thread, input disabled: {e}");
            input.close();
        }
        input
    }

    fn read_all<R: Read>(&self, mut reader: R) {
        let mut chunk = [0u8; 4096];
        loop {
            {
                let mut st = lock(&self.queue.state);
                while st.buf.len() >= MAX_QUEUED && !st.eof {
                    st = self
                        .queue
                        .changed
                        .wait(st)
                        .unwrap_or_else(|p| p.into_inner());
                }
                if st.eof {
                    return;
                }
            }
            match reader.read(&mut chunk) {
                Ok(0) => {
                    debug!("console input reached end of file");
                    break;
                }
                Ok(n) => self.push(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    warn!("console input failed, no more input: {e}");
                    break;
                }
            }
        }
        self.close();
    }

    /// Queues bytes for the guest.
    pub fn push(&self, bytes: &[u8]) {
        let mut st = lock(&self.queue.state);
        st.buf.extend(bytes);
        self.queue.changed.notify_all();
    }

    /// Marks the end of input; queued bytes are still delivered.
    pub fn close(&self) {
        lock(&self.queue.state).eof = true;
        self.queue.changed.notify_all();
    }

    /// Bytes queued and not yet handed to a UART.
    pub fn pending(&self) -> usize {
        lock(&self.queue.state).buf.len()
    }

    /// Takes up to `max` bytes, waiting up to `timeout` for some to arrive.
    pub(crate) fn wait_take(&self, max: usize, timeout: Duration) -> Take {
        let mut st = lock(&self.queue.state);
        if st.buf.is_empty() && !st.eof {
            st = self
                .queue
                .changed
                .wait_timeout(st, timeout)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        if st.buf.is_empty() {
            return if st.eof { Take::Eof } else { Take::Empty };
        }
        let n = max.min(st.buf.len());
        let data: Vec<u8> = st.buf.drain(..n).collect();
        self.queue.changed.notify_all();
        Take::Data(data)
    }

    /// Puts bytes that were taken but not delivered back at the front.
    pub(crate) fn unget(&self, bytes: &[u8]) {
        let mut st = lock(&self.queue.state);
        for &b in bytes.iter().rev() {
            st.buf.push_front(b);
        }
        self.queue.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_take_unget_eof() {
        let input = ConsoleInput::manual();
        assert_eq!(input.wait_take(4, Duration::from_millis(1)), Take::Empty);
        input.push(b"hello");
        assert_eq!(
            input.wait_take(3, Duration::ZERO),
            Take::Data(b"hel".to_vec())
        );
        input.unget(b"el");
        input.close();
        assert_eq!(
            input.wait_take(10, Duration::ZERO),
            Take::Data(b"ello".to_vec())
        );
        assert_eq!(input.wait_take(10, Duration::ZERO), Take::Eof);
        assert_eq!(ConsoleInput::none().wait_take(1, Duration::ZERO), Take::Eof);
    }

    #[test]
    fn reader_thread_delivers_everything() {
        let input = ConsoleInput::from_reader(std::io::Cursor::new(b"ps\npoweroff\n".to_vec()));
        let mut got = Vec::new();
        loop {
            match input.wait_take(5, Duration::from_millis(100)) {
                Take::Data(d) => got.extend(d),
                Take::Empty => {}
                Take::Eof => break,
            }
        }
        assert_eq!(got, b"ps\npoweroff\n");
    }

    #[test]
    fn sink_defers_flush_and_survives_errors() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Err(std::io::ErrorKind::BrokenPipe.into())
            }
        }
        let mut sink = ConsoleSink::new(ConsoleOutput::Writer(Box::new(Broken)));
        assert_eq!(sink.write(b"abc").unwrap(), 3);
        sink.flush_now();
        let cap = CaptureBuffer::new();
        let mut sink = ConsoleSink::new(ConsoleOutput::Capture(cap.clone()));
        sink.write_all(b"hi").unwrap();
        assert_eq!(cap.text(), "hi");
    }
}
