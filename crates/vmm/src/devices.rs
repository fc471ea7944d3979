//! Routing of port I/O and MMIO exits to the emulated devices.
//!
//! | port            | device                                         |
//! |-----------------|------------------------------------------------|
//! | 0x3f8..0x400    | COM1 16550 UART                                 |
//! | 0x505           | pvpanic: reads "panicked + crash loaded", writes = crash |
//! | 0x510           | hypercall port (4-byte `out` of a block GPA)   |
//! | anything else   | reads all-ones, writes ignored                 |
//!
//! MMIO in a virtio device's window goes to that device (`virtio.rs`);
//! any other MMIO outside RAM (LAPIC/IOAPIC are in-kernel and never get
//! here) reads all-ones and ignores writes.

use std::io::Write;
use std::sync::{Arc, Mutex};

use lazarus_abi::layout::{
    PORT_COM1, PORT_HYPERCALL, PORT_PVPANIC, PVPANIC_CRASH_LOADED, PVPANIC_PANICKED,
};
use tracing::trace;

use crate::console::lock;
use crate::hypercall::{HcAction, Hypercalls};
use crate::memory::GuestRam;
use crate::serial::{SERIAL_PORTS, SerialDevice};
use crate::stats::{ExitKind, ExitStats};
use crate::virtio::VirtioBus;

/// What the vCPU must do after a port write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PioAction {
    /// Resume the guest.
    Continue,
    /// The guest wrote this value to the pvpanic port.
    Panic(u8),
    /// A hypercall asked for something beyond "continue".
    Hypercall(HcAction),
}

/// The devices every vCPU shares.
pub struct Devices {
    /// Guest RAM (hypercall blocks and buffers are read from it).
    pub mem: Arc<GuestRam>,
    /// COM1.
    pub serial: Arc<Mutex<SerialDevice>>,
    /// The hypercall port and what it keeps.
    pub hypercalls: Arc<Hypercalls>,
    /// Exit counters.
    pub stats: Arc<ExitStats>,
    /// The virtio devices.
    pub virtio: Arc<VirtioBus>,
}

/// Console output from hypercalls, locking the UART only while writing.
struct SerialConsole<'a>(&'a Mutex<SerialDevice>);

impl Write for SerialConsole<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        lock(self.0).write_console(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        lock(self.0).console().flush_now();
        Ok(())
    }
}

fn serial_offset(port: u16) -> Option<u8> {
    port.checked_sub(PORT_COM1)
        .filter(|&off| off < SERIAL_PORTS)
        .map(|off| off as u8)
}

impl Devices {
    /// A guest `out` (or `outs`) of `data` to `port`.
    pub fn pio_out(&self, port: u16, data: &[u8]) -> PioAction {
        if let Some(offset) = serial_offset(port) {
            self.stats.record(ExitKind::PioSerial);
            lock(&self.serial).write(offset, data);
            return PioAction::Continue;
        }
        match port {
            PORT_HYPERCALL => {
                self.stats.record(ExitKind::PioHypercall);
                let mut console = SerialConsole(&self.serial);
                match self
                    .hypercalls
                    .handle_port_write(&self.mem, data, &mut console, &self.stats)
                {
                    HcAction::Continue => PioAction::Continue,
                    other => PioAction::Hypercall(other),
                }
            }
            PORT_PVPANIC => {
                self.stats.record(ExitKind::PioPvpanic);
                PioAction::Panic(data.first().copied().unwrap_or(0))
            }
            _ => {
                self.stats.record(ExitKind::PioOther);
                trace!(
                    port = format_args!("{port:#x}"),
                    ?data,
                    "ignored port write"
                );
                PioAction::Continue
            }
        }
    }

    /// A guest `in` (or `ins`) from `port`; fills `data`.
    pub fn pio_in(&self, port: u16, data: &mut [u8]) {
        if let Some(offset) = serial_offset(port) {
            self.stats.record(ExitKind::PioSerial);
            lock(&self.serial).read(offset, data);
            return;
        }
        match port {
            PORT_PVPANIC => {
                self.stats.record(ExitKind::PioPvpanic);
                data.fill(0);
                if let Some(first) = data.first_mut() {
                    *first = PVPANIC_PANICKED | PVPANIC_CRASH_LOADED;
                }
            }
            _ => {
                let kind = if port == PORT_HYPERCALL {
                    ExitKind::PioHypercall
                } else {
                    ExitKind::PioOther
                };
                self.stats.record(kind);
                trace!(
                    port = format_args!("{port:#x}"),
                    "port read returns all-ones"
                );
                data.fill(0xff);
            }
        }
    }

    /// An MMIO read outside RAM: a virtio register, else all-ones.
    pub fn mmio_read(&self, addr: u64, data: &mut [u8]) {
        if self.virtio.read(addr, data) {
            self.stats.record(ExitKind::MmioVirtio);
            return;
        }
        self.stats.record(ExitKind::Mmio);
        trace!(
            addr = format_args!("{addr:#x}"),
            "MMIO read returns all-ones"
        );
        data.fill(0xff);
    }

    /// An MMIO write outside RAM: to a virtio register, else ignored.
    pub fn mmio_write(&self, addr: u64, data: &[u8]) {
        if self.virtio.write(addr, data) {
            self.stats.record(ExitKind::MmioVirtio);
            return;
        }
        self.stats.record(ExitKind::Mmio);
        trace!(
            addr = format_args!("{addr:#x}"),
            ?data,
            "MMIO write ignored"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::console::{CaptureBuffer, ConsoleOutput, ConsoleSink};
    use crate::memory::{create_guest_ram, write_obj};
    use lazarus_abi::hypercall::{HC_CONSOLE_WRITE, HC_POWEROFF, Hypercall};
    use vm_memory::{Bytes, GuestAddress};
    use vmm_sys_util::eventfd::EventFd;

    fn devices() -> (Devices, CaptureBuffer) {
        let cap = CaptureBuffer::new();
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let serial = SerialDevice::new(irq, ConsoleSink::new(ConsoleOutput::Capture(cap.clone())));
        let devs = Devices {
            mem: Arc::new(create_guest_ram(16 << 20).unwrap()),
            serial: Arc::new(Mutex::new(serial)),
            hypercalls: Arc::new(Hypercalls::new()),
            stats: Arc::new(ExitStats::default()),
            virtio: Arc::new(VirtioBus::default()),
        };
        (devs, cap)
    }

    #[test]
    fn routes_ports() {
        let (d, cap) = devices();
        assert_eq!(d.pio_out(PORT_COM1, b"ok\n"), PioAction::Continue);
        assert_eq!(cap.text(), "ok\n");

        let mut buf = [0u8; 2];
        d.pio_in(PORT_PVPANIC, &mut buf);
        assert_eq!(buf, [3, 0]);
        assert_eq!(d.pio_out(PORT_PVPANIC, &[1]), PioAction::Panic(1));

        let mut buf = [0u8; 4];
        d.pio_in(0x80, &mut buf);
        assert_eq!(buf, [0xff; 4]);
        assert_eq!(d.pio_out(0x80, &[1]), PioAction::Continue);
        d.mmio_read(0xd000_0000, &mut buf);
        assert_eq!(buf, [0xff; 4]);
        d.mmio_write(0xd000_0000, &buf);

        // Hypercalls: console write, then power-off.
        d.mem.write_slice(b"via hc", GuestAddress(0x9000)).unwrap();
        let block = Hypercall {
            nr: HC_CONSOLE_WRITE,
            args: [0x9000, 6, 0, 0, 0],
            ret: 0,
        };
        write_obj(&d.mem, 0x8000, &block).unwrap();
        assert_eq!(
            d.pio_out(PORT_HYPERCALL, &0x8000u32.to_le_bytes()),
            PioAction::Continue
        );
        assert_eq!(cap.text(), "ok\nvia hc");
        let block = Hypercall {
            nr: HC_POWEROFF,
            args: [0; 5],
            ret: 0,
        };
        write_obj(&d.mem, 0x8000, &block).unwrap();
        assert_eq!(
            d.pio_out(PORT_HYPERCALL, &0x8000u32.to_le_bytes()),
            PioAction::Hypercall(HcAction::PowerOff(0))
        );
        let counts = d.stats.snapshot();
        assert_eq!(counts.get(ExitKind::PioSerial), 1);
        assert_eq!(counts.get(ExitKind::PioHypercall), 2);
        assert_eq!(counts.get(ExitKind::PioPvpanic), 2);
        assert_eq!(counts.get(ExitKind::Mmio), 2);
    }
}
