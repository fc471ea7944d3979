//! The 16550 console: output through `rep outsb`, input by interrupt.

use super::cpu::{inb, outb, outsb};
use lazarus_abi::layout::PORT_COM1;

const IER: u16 = PORT_COM1 + 1;
const MCR: u16 = PORT_COM1 + 4;
const LSR: u16 = PORT_COM1 + 5;
const LSR_DATA_READY: u8 = 1;

pub fn init() {
    outb(IER, 0x01); // interrupt on received data
    outb(MCR, 0x08); // OUT2 gates the interrupt line
}

pub fn write(buf: &[u8]) {
    outsb(PORT_COM1, buf);
}

/// Moves up to `max` received bytes into `sink`. What is left stays in
/// the UART's FIFO, and the hypervisor holds the rest of its input until
/// the FIFO drains: flow control, so nothing is ever dropped.
pub fn drain(max: usize, mut sink: impl FnMut(u8)) {
    for _ in 0..max {
        if inb(LSR) & LSR_DATA_READY == 0 {
            break;
        }
        sink(inb(PORT_COM1));
    }
}
