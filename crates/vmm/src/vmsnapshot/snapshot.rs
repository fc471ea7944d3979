//! What a [`VmSnapshot`] holds, and what callers may ask of it.

use std::fmt;
use std::time::Instant;

use kvm_bindings::{kvm_irqchip, kvm_pit_state2};
use vm_superio::serial::SerialState;

use super::msr::msr_entries;
use super::ram::RamImage;
use super::vcpu_state::VcpuState;
use crate::hypercall::HypercallState;

/// A copy of a whole stopped VM, taken by [`Vm::snapshot`](crate::Vm::snapshot)
/// and put back by [`Vm::restore`](crate::Vm::restore).
pub struct VmSnapshot {
    pub(super) taken_at: Instant,
    pub(super) ram: RamImage,
    pub(super) vcpus: Vec<VcpuState>,
    /// PIC master, PIC slave, IOAPIC.
    pub(super) irqchips: [kvm_irqchip; 3],
    pub(super) pit: Option<kvm_pit_state2>,
    pub(super) serial: SerialState,
    pub(super) hypercalls: HypercallState,
    pub(super) guest_ready: bool,
}

impl fmt::Debug for VmSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VmSnapshot")
            .field("ram_bytes", &self.ram_bytes())
            .field("populated_bytes", &self.populated_bytes())
            .field("vcpus", &self.vcpus.len())
            .field(
                "msrs",
                &self
                    .vcpus
                    .first()
                    .map_or(0, |v| msr_entries(&v.msrs).count()),
            )
            .field("pit", &self.pit.is_some())
            .field("root_gpa", &self.hypercalls.root_gpa)
            .finish_non_exhaustive()
    }
}

impl VmSnapshot {
    /// Size of the guest RAM image this snapshot holds (the guest's RAM
    /// size; see [`VmSnapshot::populated_bytes`] for what was copied).
    pub fn ram_bytes(&self) -> usize {
        self.ram.len
    }

    /// Bytes of guest RAM that held data and were copied (the rest of
    /// RAM had never been touched and reads as zero).
    pub fn populated_bytes(&self) -> usize {
        self.ram.populated_bytes()
    }

    /// When the snapshot was taken (the capture started).
    pub fn taken_at(&self) -> Instant {
        self.taken_at
    }

    /// Number of vCPUs captured.
    pub fn vcpu_count(&self) -> usize {
        self.vcpus.len()
    }

    /// The registered kernel state root at the time of the snapshot.
    pub fn root_gpa(&self) -> Option<u64> {
        self.hypercalls.root_gpa
    }
}
