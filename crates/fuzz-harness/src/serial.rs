//! The COM1 UART ([`SerialDevice`]) under any sequence of guest register
//! accesses (`in`/`out`, `rep insb`/`rep outsb`), host input and console
//! writes, checked against a model of what it must do with the bytes.
//!
//! The model follows the three registers that decide where a byte goes:
//! LCR's DLAB bit (offsets 0 and 1 become the divisor latch), MCR's
//! loopback bit (transmitted bytes come back into the receive FIFO), and
//! the 64-byte receive FIFO itself. Every byte the host enqueued must be
//! read back by the guest in order, and every byte the guest transmitted
//! must reach the console; nothing may be lost or invented.

use std::collections::VecDeque;

use arbitrary::{Arbitrary, Unstructured};
use lazarus_vmm::console::{CaptureBuffer, ConsoleOutput, ConsoleSink};
use lazarus_vmm::serial::SerialDevice;
use vmm_sys_util::eventfd::EventFd;

/// Receive FIFO size of the 16550A.
const FIFO: usize = 64;
const DATA: u8 = 0;
const LCR: u8 = 3;
const MCR: u8 = 4;
const LCR_DLAB: u8 = 0x80;
const MCR_LOOP: u8 = 0x10;

/// One access or event.
#[derive(Arbitrary, Debug)]
enum Op {
    /// `in` (or `rep insb` of `len` bytes) from register `offset`.
    Read { offset: u8, len: u8 },
    /// `out` (or `rep outsb`) to register `offset`.
    Write { offset: u8, data: Vec<u8> },
    /// Host input moved into the FIFO, as the feeder thread does.
    Input(Vec<u8>),
    /// Output that bypasses the UART (`HC_CONSOLE_WRITE`).
    Console(Vec<u8>),
    /// A whole-VM snapshot of the UART, put back.
    SaveRestore,
}

/// What the UART must have done so far.
#[derive(Default)]
struct Model {
    lcr: u8,
    mcr: u8,
    rx: VecDeque<u8>,
    out: Vec<u8>,
}

fn decode(data: &[u8]) -> Option<Vec<Op>> {
    Vec::<Op>::arbitrary_take_rest(Unstructured::new(data)).ok()
}

/// The operations an input stands for, to read a crashing input.
pub fn describe(data: &[u8]) -> String {
    format!("{:#?}", decode(data))
}

/// Runs one input.
pub fn run(data: &[u8]) {
    let Some(ops) = decode(data) else {
        return;
    };
    let irq = match EventFd::new(libc::EFD_NONBLOCK) {
        Ok(fd) => fd,
        Err(e) => panic!("eventfd: {e}"),
    };
    let capture = CaptureBuffer::new();
    let mut dev = SerialDevice::new(
        irq,
        ConsoleSink::new(ConsoleOutput::Capture(capture.clone())),
    );
    let mut m = Model::default();
    for op in &ops {
        let dlab = m.lcr & LCR_DLAB != 0;
        match op {
            Op::Read { offset, len } => {
                let mut buf = vec![0u8; usize::from(*len)];
                dev.read(*offset, &mut buf);
                if *offset == DATA && !dlab {
                    for (i, &got) in buf.iter().enumerate() {
                        let want = m.rx.pop_front().unwrap_or(0);
                        assert_eq!(got, want, "byte {i} of a read from the receive FIFO");
                    }
                }
            }
            Op::Write { offset, data } => {
                dev.write(*offset, data);
                for &b in data {
                    match *offset {
                        // Loopback: into the FIFO while it has room, else dropped
                        // (as a real UART overruns).
                        DATA if !dlab && m.mcr & MCR_LOOP != 0 && m.rx.len() < FIFO => {
                            m.rx.push_back(b)
                        }
                        DATA if !dlab && m.mcr & MCR_LOOP != 0 => {}
                        DATA if !dlab => m.out.push(b),
                        LCR => m.lcr = b,
                        MCR => m.mcr = b,
                        _ => {}
                    }
                }
            }
            Op::Input(bytes) => {
                let n = dev.enqueue_input(bytes);
                assert!(n <= bytes.len(), "took {n} of {} bytes", bytes.len());
                assert!(m.rx.len() + n <= FIFO, "overfilled the FIFO");
                m.rx.extend(&bytes[..n]);
            }
            Op::Console(bytes) => {
                if let Err(e) = dev.write_console(bytes) {
                    panic!("console write: {e}");
                }
                m.out.extend_from_slice(bytes);
            }
            Op::SaveRestore => {
                let state = dev.save_state();
                if let Err(e) = dev.restore_state(&state) {
                    panic!("restoring the UART's own state: {e}");
                }
            }
        }
        let state = dev.save_state();
        assert!(
            state.in_buffer.len() <= FIFO,
            "FIFO holds {}",
            state.in_buffer.len()
        );
        assert_eq!(state.in_buffer, Vec::from(m.rx.clone()), "receive FIFO");
    }
    assert!(
        capture.contents() == m.out,
        "console output differs from what was sent"
    );
}
