//! Counting guest exits, in total and by kind.
//!
//! Counters are lock-free atomics shared by all vCPU threads; callers read a
//! consistent-enough [`ExitCounts`] snapshot at any time.

use std::sync::atomic::{AtomicU64, Ordering};

/// Why KVM_RUN returned to the VMM.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ExitKind {
    /// Port I/O to the COM1 UART.
    PioSerial,
    /// Port I/O to the hypercall port.
    PioHypercall,
    /// Port I/O to the pvpanic port.
    PioPvpanic,
    /// Port I/O to any other port.
    PioOther,
    /// An MMIO access outside RAM and outside every device.
    Mmio,
    /// An MMIO access to a virtio device's window.
    MmioVirtio,
    /// `hlt` handled in userspace (should not happen with the irqchip).
    Hlt,
    /// Triple fault.
    Shutdown,
    /// KVM could not emulate an instruction.
    InternalError,
    /// VM entry failed.
    FailEntry,
    /// KVM_EXIT_SYSTEM_EVENT.
    SystemEvent,
    /// Anything else.
    Other,
    /// KVM_RUN interrupted by a signal (a kick); not a guest exit.
    Interrupted,
}

impl ExitKind {
    /// Every kind, in report order.
    pub const ALL: [ExitKind; 13] = [
        ExitKind::PioSerial,
        ExitKind::PioHypercall,
        ExitKind::PioPvpanic,
        ExitKind::PioOther,
        ExitKind::Mmio,
        ExitKind::MmioVirtio,
        ExitKind::Hlt,
        ExitKind::Shutdown,
        ExitKind::InternalError,
        ExitKind::FailEntry,
        ExitKind::SystemEvent,
        ExitKind::Other,
        ExitKind::Interrupted,
    ];

    /// A stable, short name for reports.
    pub const fn name(self) -> &'static str {
        match self {
            ExitKind::PioSerial => "pio-serial",
            ExitKind::PioHypercall => "pio-hypercall",
            ExitKind::PioPvpanic => "pio-pvpanic",
            ExitKind::PioOther => "pio-other",
            ExitKind::Mmio => "mmio",
            ExitKind::MmioVirtio => "mmio-virtio",
            ExitKind::Hlt => "hlt",
            ExitKind::Shutdown => "shutdown",
            ExitKind::InternalError => "internal-error",
            ExitKind::FailEntry => "fail-entry",
            ExitKind::SystemEvent => "system-event",
            ExitKind::Other => "other",
            ExitKind::Interrupted => "interrupted",
        }
    }

    /// Whether this counts as a guest exit (signal kicks do not).
    pub const fn is_guest_exit(self) -> bool {
        !matches!(self, ExitKind::Interrupted)
    }

    const fn index(self) -> usize {
        self as usize
    }
}

/// Shared exit counters.
#[derive(Debug, Default)]
pub struct ExitStats {
    counts: [AtomicU64; ExitKind::ALL.len()],
}

impl ExitStats {
    /// Counts one exit (lock-free: every exit calls it).
    pub fn record(&self, kind: ExitKind) {
        self.counts[kind.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// The counts now.
    pub fn snapshot(&self) -> ExitCounts {
        let mut by_kind = [0u64; ExitKind::ALL.len()];
        for (slot, counter) in by_kind.iter_mut().zip(&self.counts) {
            *slot = counter.load(Ordering::Relaxed);
        }
        ExitCounts { by_kind }
    }
}

/// A snapshot of the exit counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExitCounts {
    by_kind: [u64; ExitKind::ALL.len()],
}

impl ExitCounts {
    /// Guest exits of every kind (excluding signal kicks).
    pub fn total(&self) -> u64 {
        ExitKind::ALL
            .iter()
            .filter(|k| k.is_guest_exit())
            .map(|&k| self.get(k))
            .sum()
    }

    /// Exits of one kind.
    pub fn get(&self, kind: ExitKind) -> u64 {
        self.by_kind[kind.index()]
    }

    /// Nonzero counters as (kind, count), in [`ExitKind::ALL`] order.
    pub fn nonzero(&self) -> impl Iterator<Item = (ExitKind, u64)> + '_ {
        ExitKind::ALL
            .iter()
            .map(|&k| (k, self.get(k)))
            .filter(|&(_, n)| n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_kind() {
        let s = ExitStats::default();
        s.record(ExitKind::PioSerial);
        s.record(ExitKind::PioSerial);
        s.record(ExitKind::PioHypercall);
        s.record(ExitKind::Interrupted);
        let c = s.snapshot();
        assert_eq!(c.total(), 3);
        assert_eq!(c.get(ExitKind::PioSerial), 2);
        assert_eq!(c.nonzero().count(), 3);
        for (i, k) in ExitKind::ALL.iter().enumerate() {
            assert_eq!(k.index(), i);
        }
    }
}
