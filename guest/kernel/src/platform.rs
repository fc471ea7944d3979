//! The platform devices the hypervisor names on the kernel command line,
//! as Linux reads them: `virtio_mmio.device=<size>@<base>:<irq>` (size
//! and base in decimal or `0x` hex, size with an optional `K`/`M`
//! suffix). Extensions find them through `ExtApi::device_info`. A word
//! that does not parse is reported and ignored.

use lazarus_abi::ext::{DEVICE_VIRTIO_MMIO, DeviceInfo};
use lazarus_abi::layout::MAX_VIRTIO_DEVICES;

/// I/O APIC pins (KVM's I/O APIC has 24).
const IOAPIC_PINS: u32 = 24;

static mut DEVICES: [DeviceInfo; MAX_VIRTIO_DEVICES] = [DeviceInfo {
    kind: 0,
    gsi: 0,
    base: 0,
    size: 0,
}; MAX_VIRTIO_DEVICES];
static mut COUNT: usize = 0;

/// Reads the device words of the NUL-padded command line (at boot, on the
/// boot CPU, before anything else runs).
pub fn init(cmdline: &[u8]) {
    let len = cmdline
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(cmdline.len());
    for word in cmdline[..len].split(|&b| b == b' ') {
        let Some(spec) = word.strip_prefix(b"virtio_mmio.device=") else {
            continue;
        };
        match parse(spec) {
            // SAFETY: single-threaded boot; nothing reads the table yet.
            Some(d) if unsafe { COUNT } < MAX_VIRTIO_DEVICES => unsafe {
                DEVICES[COUNT] = d;
                COUNT += 1;
            },
            Some(_) => crate::klog::kprintln!("[kernel] too many virtio devices; one ignored"),
            None => crate::klog::kprintln!("[kernel] ignoring a malformed virtio_mmio.device"),
        }
    }
}

fn parse(spec: &[u8]) -> Option<DeviceInfo> {
    let at = spec.iter().position(|&b| b == b'@')?;
    let colon = spec.iter().rposition(|&b| b == b':')?;
    if colon < at {
        return None;
    }
    let size = size(&spec[..at])?;
    let base = number(&spec[at + 1..colon])?;
    let gsi = u32::try_from(number(&spec[colon + 1..])?).ok()?;
    if size == 0 || gsi >= IOAPIC_PINS || base.checked_add(size).is_none() {
        return None;
    }
    Some(DeviceInfo {
        kind: DEVICE_VIRTIO_MMIO,
        gsi,
        base,
        size,
    })
}

fn size(s: &[u8]) -> Option<u64> {
    let (digits, shift) = match s.last()? {
        b'K' | b'k' => (&s[..s.len() - 1], 10),
        b'M' | b'm' => (&s[..s.len() - 1], 20),
        _ => (s, 0),
    };
    number(digits)?.checked_mul(1 << shift)
}

fn number(s: &[u8]) -> Option<u64> {
    let (digits, radix) = match s.strip_prefix(b"0x") {
        Some(hex) => (hex, 16),
        None => (s, 10),
    };
    if digits.is_empty() {
        return None;
    }
    let mut v: u64 = 0;
    for &c in digits {
        let d = (c as char).to_digit(radix)?;
        v = v.checked_mul(u64::from(radix))?.checked_add(u64::from(d))?;
    }
    Some(v)
}

/// Platform device `index`, if there is one.
pub fn device(index: usize) -> Option<DeviceInfo> {
    // SAFETY: written only during boot, before any extension runs.
    unsafe {
        if index < COUNT {
            Some(DEVICES[index])
        } else {
            None
        }
    }
}

/// Whether `gsi` is a platform device's pin.
pub fn is_device_pin(gsi: u32) -> bool {
    (0..MAX_VIRTIO_DEVICES).any(|i| device(i).is_some_and(|d| d.gsi == gsi))
}
