//! The COM1 16550 UART (vm-superio) and the thread that feeds it input.
//!
//! Output bytes go to the [`ConsoleSink`]; the UART's interrupt is an
//! `EventFd` that KVM injects on GSI 4 (irqfd). Input is moved from a
//! [`ConsoleInput`] queue into the UART's 64-byte FIFO only as space frees
//! up, so no byte is ever dropped.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing::{trace, warn};
use vm_superio::serial::{SerialEvents, SerialState};
use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

use crate::console::{ConsoleInput, ConsoleSink, Take, lock};
use crate::error::{Error, Result};

/// Number of I/O ports the UART decodes.
pub const SERIAL_PORTS: u16 = 8;
/// IER bit: received-data-available interrupt enabled.
const IER_RDA: u8 = 1;
/// How long the feeder sleeps between checks when nothing happens.
const FEED_POLL: Duration = Duration::from_millis(20);

/// Raises the UART interrupt by signalling the irqfd.
#[derive(Debug)]
pub struct IrqTrigger(EventFd);

impl Trigger for IrqTrigger {
    type E = std::io::Error;

    fn trigger(&self) -> std::io::Result<()> {
        self.0.write(1)
    }
}

/// Counts FIFO drains, so the feeder can wait for space.
#[derive(Debug, Default)]
pub struct RxDrained {
    generation: Mutex<u64>,
    cond: Condvar,
}

impl RxDrained {
    fn generation(&self) -> u64 {
        *lock(&self.generation)
    }

    /// Waits until the FIFO drained after `seen`, or `timeout` passed.
    fn wait_past(&self, seen: u64, timeout: Duration) {
        let guard = lock(&self.generation);
        let _ = self.cond.wait_timeout_while(guard, timeout, |g| *g == seen);
    }
}

/// UART events the VMM reacts to.
#[derive(Debug, Clone)]
pub struct UartEvents(Arc<RxDrained>);

impl SerialEvents for UartEvents {
    fn buffer_read(&self) {}
    fn out_byte(&self) {}
    fn tx_lost_byte(&self) {}
    fn in_buffer_empty(&self) {
        *lock(&self.0.generation) += 1;
        self.0.cond.notify_all();
    }
}

/// The COM1 device.
pub struct SerialDevice {
    uart: Serial<IrqTrigger, UartEvents, ConsoleSink>,
    drained: Arc<RxDrained>,
}

impl SerialDevice {
    /// A UART that interrupts through `irq` and writes to `sink`.
    pub fn new(irq: EventFd, sink: ConsoleSink) -> Self {
        let drained = Arc::new(RxDrained::default());
        let uart = Serial::with_events(IrqTrigger(irq), UartEvents(drained.clone()), sink);
        Self { uart, drained }
    }

    /// A guest `in` (possibly `rep insb`) from register `offset`.
    pub fn read(&mut self, offset: u8, data: &mut [u8]) {
        for byte in data.iter_mut() {
            *byte = self.uart.read(offset);
        }
    }

    /// A guest `out` (possibly `rep outsb`, many bytes) to register `offset`.
    pub fn write(&mut self, offset: u8, data: &[u8]) {
        for &byte in data {
            if let Err(e) = self.uart.write(offset, byte) {
                // Output errors are already swallowed by the sink; this is
                // an interrupt that could not be raised.
                warn!("serial: {e}");
            }
        }
        self.uart.writer_mut().flush_now();
    }

    /// The console sink, for output that bypasses the UART registers.
    pub fn console(&mut self) -> &mut ConsoleSink {
        self.uart.writer_mut()
    }

    /// Writes guest bytes to the console sink and flushes it.
    pub fn write_console(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let sink = self.uart.writer_mut();
        sink.write_all(bytes)?;
        sink.flush_now();
        Ok(())
    }

    /// Whether the guest driver is ready for input (RX interrupt enabled).
    pub fn rx_enabled(&self) -> bool {
        self.uart.state().interrupt_enable & IER_RDA != 0
    }

    /// The UART's registers and receive FIFO, for whole-VM snapshots.
    pub fn save_state(&self) -> SerialState {
        self.uart.state()
    }

    /// Puts the UART back into `state`, keeping the console sink and the
    /// interrupt line. An interrupt that is pending and enabled in `state`
    /// is raised again, as a real UART's level-triggered line would be.
    pub fn restore_state(&mut self, state: &SerialState) -> Result<()> {
        let irq = self
            .uart
            .interrupt_evt()
            .0
            .try_clone()
            .map_err(Error::io("eventfd clone"))?;
        let events = self.uart.events().clone();
        // Built with a placeholder sink first, so that a failure leaves the
        // device (and its sink) untouched.
        let mut uart = Serial::from_state(
            state,
            IrqTrigger(irq),
            events,
            ConsoleSink::new(crate::console::ConsoleOutput::Null),
        )
        .map_err(|e| Error::SnapshotMismatch(format!("serial state: {e}")))?;
        std::mem::swap(uart.writer_mut(), self.uart.writer_mut());
        self.uart = uart;
        // The feeder may be waiting for the FIFO to drain.
        if state.in_buffer.is_empty() {
            self.uart.events().in_buffer_empty();
        }
        Ok(())
    }

    /// Moves as many bytes as fit into the receive FIFO; returns how many.
    /// None fit while the guest holds the UART in loopback mode (its FIFO
    /// then only receives what the guest itself transmits): the caller
    /// keeps them until the guest leaves it.
    pub fn enqueue_input(&mut self, bytes: &[u8]) -> usize {
        let free = self.uart.fifo_capacity();
        if free == 0 || bytes.is_empty() {
            return 0;
        }
        let n = free.min(bytes.len());
        if let Err(e) = self.uart.enqueue_raw_bytes(&bytes[..n]) {
            // The bytes are queued even when raising the interrupt failed.
            warn!("serial: enqueueing input: {e:?}");
        }
        // What the FIFO really took (vm-superio drops input in loopback).
        free - self.uart.fifo_capacity()
    }
}

/// Feeds console input into the UART until `stop` is set or input ends.
///
/// Input starts flowing once the guest has enabled the receive interrupt or
/// `ready` is set (the guest reached a milestone), so that bytes typed (or
/// piped) before the guest's driver is up are not lost to a FIFO reset.
pub fn spawn_feeder(
    serial: Arc<Mutex<SerialDevice>>,
    input: ConsoleInput,
    stop: Arc<AtomicBool>,
    ready: Arc<AtomicBool>,
) -> Result<JoinHandle<()>> {
    let drained = lock(&serial).drained.clone();
    std::thread::Builder::new()
        .name("serial-in".into())
        .spawn(move || {
            let mut pending: Vec<u8> = Vec::new();
            while !stop.load(Ordering::Acquire) {
                if pending.is_empty() {
                    match input.wait_take(64, FEED_POLL) {
                        Take::Data(d) => pending = d,
                        Take::Empty => continue,
                        Take::Eof => break,
                    }
                }
                let seen = {
                    let mut dev = lock(&serial);
                    if dev.rx_enabled() || ready.load(Ordering::Acquire) {
                        let n = dev.enqueue_input(&pending);
                        trace!(bytes = n, "serial input delivered");
                        pending.drain(..n);
                    }
                    drained.generation()
                };
                if !pending.is_empty() {
                    drained.wait_past(seen, FEED_POLL);
                }
            }
            // Whatever was not delivered stays queued for a later VM.
            input.unget(&pending);
        })
        .map_err(Error::io("spawning the serial input thread"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::console::{CaptureBuffer, ConsoleOutput};

    fn device() -> (SerialDevice, CaptureBuffer, EventFd) {
        let cap = CaptureBuffer::new();
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let dev = SerialDevice::new(
            irq.try_clone().unwrap(),
            ConsoleSink::new(ConsoleOutput::Capture(cap.clone())),
        );
        (dev, cap, irq)
    }

    #[test]
    fn rep_outsb_bytes_all_reach_the_sink() {
        let (mut dev, cap, _) = device();
        dev.write(0, b"lazarus boot banner\n");
        assert_eq!(cap.text(), "lazarus boot banner\n");
        dev.write_console(b"more").unwrap();
        assert_eq!(cap.text(), "lazarus boot banner\nmore");
    }

    #[test]
    fn input_waits_for_the_driver_and_respects_the_fifo() {
        let (dev, _, irq) = device();
        let serial = Arc::new(Mutex::new(dev));
        let input = ConsoleInput::manual();
        let long: Vec<u8> = (0..200u8).collect();
        input.push(&long);
        let stop = Arc::new(AtomicBool::new(false));
        let ready = Arc::new(AtomicBool::new(false));
        let feeder = spawn_feeder(serial.clone(), input.clone(), stop.clone(), ready).unwrap();

        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(lock(&serial).uart.fifo_capacity(), 64, "driver not ready");
        // The driver enables the RX interrupt.
        lock(&serial).write(1, &[IER_RDA]);

        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while got.len() < long.len() && std::time::Instant::now() < deadline {
            let mut dev = lock(&serial);
            // LSR bit 0: data ready.
            let mut lsr = [0u8];
            dev.read(5, &mut lsr);
            if lsr[0] & 1 != 0 {
                let mut b = [0u8];
                dev.read(0, &mut b);
                got.push(b[0]);
            } else {
                drop(dev);
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        assert_eq!(got, long);
        assert!(irq.read().unwrap() > 0, "RX interrupt raised");
        stop.store(true, Ordering::Release);
        feeder.join().unwrap();
        assert_eq!(input.pending(), 0);
    }

    #[test]
    fn input_waits_while_the_guest_loops_back() {
        let (mut dev, _, _) = device();
        // MCR bit 4: loopback, as a driver's self-test sets it.
        dev.write(4, &[0x10]);
        assert_eq!(dev.enqueue_input(b"abc"), 0, "nothing taken in loopback");
        dev.write(4, &[0]);
        assert_eq!(dev.enqueue_input(b"abc"), 3);
        let mut got = [0u8; 3];
        dev.read(0, &mut got);
        assert_eq!(&got, b"abc");
    }

    #[test]
    fn undelivered_input_is_kept() {
        let (dev, _, _) = device();
        let serial = Arc::new(Mutex::new(dev));
        let input = ConsoleInput::manual();
        input.push(b"abc");
        let stop = Arc::new(AtomicBool::new(false));
        let ready = Arc::new(AtomicBool::new(false));
        let feeder = spawn_feeder(serial, input.clone(), stop.clone(), ready).unwrap();
        std::thread::sleep(Duration::from_millis(30));
        stop.store(true, Ordering::Release);
        feeder.join().unwrap();
        assert_eq!(input.pending(), 3);
    }
}
