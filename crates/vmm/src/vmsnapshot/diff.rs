//! What differs between two snapshots, for tests and debugging.

use kvm_bindings::{
    KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE, kvm_irqchip, kvm_msr_entry,
};

use super::msr::msr_entries;
use super::pagemap::PAGE;
use super::ram::RamImage;
use super::snapshot::VmSnapshot;
use super::vcpu_state::VcpuState;
use crate::cpu::MSR_IA32_TSC;

impl VmSnapshot {
    /// What differs between two snapshots, one line per difference (empty:
    /// identical). For tests and debugging: a restore followed by a new
    /// snapshot differs only in what time changes (TSC, the APIC timer's
    /// current count).
    pub fn differences(&self, other: &VmSnapshot) -> Vec<String> {
        let mut out = Vec::new();
        diff_ram(&self.ram, &other.ram, &mut out);
        if self.vcpus.len() != other.vcpus.len() {
            out.push(format!(
                "vCPU count {} vs {}",
                self.vcpus.len(),
                other.vcpus.len()
            ));
        }
        for (a, b) in self.vcpus.iter().zip(&other.vcpus) {
            diff_vcpu(a, b, &mut out);
        }
        for (a, b) in self.irqchips.iter().zip(&other.irqchips) {
            if !irqchip_eq(a, b) {
                out.push(format!("irqchip {}", a.chip_id));
            }
        }
        if self.pit != other.pit {
            out.push("PIT".into());
        }
        if self.serial != other.serial {
            out.push(format!("serial {:?} vs {:?}", self.serial, other.serial));
        }
        let (h, g) = (&self.hypercalls, &other.hypercalls);
        if h.root_gpa != g.root_gpa
            || h.ext_events != g.ext_events
            || h.last_ext_event != g.last_ext_event
            || !h.milestones.keys().eq(g.milestones.keys())
            || !h
                .milestones
                .values()
                .map(|m| m.count)
                .eq(g.milestones.values().map(|m| m.count))
        {
            out.push("hypercall state".into());
        }
        if self.guest_ready != other.guest_ready {
            out.push("guest-ready flag".into());
        }
        out
    }
}

pub(super) fn diff_ram(a: &RamImage, b: &RamImage, out: &mut Vec<String>) {
    if a.len != b.len {
        out.push(format!("RAM size {} vs {}", a.len, b.len));
        return;
    }
    let differing: Vec<usize> = (0..a.len / PAGE)
        .filter(|&i| page_of(a, i) != page_of(b, i))
        .collect();
    if !differing.is_empty() {
        let first: Vec<String> = differing
            .iter()
            .take(8)
            .map(|i| format!("{:#x}", i * PAGE))
            .collect();
        out.push(format!(
            "RAM: {} pages differ (first at {})",
            differing.len(),
            first.join(", ")
        ));
    }
}

/// One page of a RAM image (a page that was empty reads as zeros).
fn page_of(r: &RamImage, i: usize) -> &[u8] {
    static ZERO: [u8; PAGE] = [0; PAGE];
    if r.populated.get(i).copied().unwrap_or(false) {
        r.image().get(i * PAGE..(i + 1) * PAGE).unwrap_or(&ZERO)
    } else {
        &ZERO
    }
}

fn diff_vcpu(a: &VcpuState, b: &VcpuState, out: &mut Vec<String>) {
    let id = a.id;
    let mut field = |name: &str, same: bool| {
        if !same {
            out.push(format!("vCPU {id}: {name}"));
        }
    };
    field("id", a.id == b.id);
    field("mp_state", a.mp_state == b.mp_state);
    field("regs", a.regs == b.regs);
    field("sregs", a.sregs == b.sregs);
    field("fpu", a.fpu == b.fpu);
    field("xsave", a.xsave == b.xsave);
    field("xcrs", a.xcrs == b.xcrs);
    field("debugregs", a.debugregs == b.debugregs);
    field("vcpu_events", a.events == b.events);
    // The APIC timer's current count (TMCCT, offset 0x390) runs with time.
    let mut la = a.lapic;
    let mut lb = b.lapic;
    for l in [&mut la, &mut lb] {
        l.regs[0x390..0x394].fill(0);
    }
    field("lapic", la == lb);
    if a.lapic.regs[0x390..0x394] != b.lapic.regs[0x390..0x394] {
        out.push(format!("vCPU {id}: lapic timer current count (time)"));
    }
    let ma: Vec<&kvm_msr_entry> = msr_entries(&a.msrs).collect();
    let mb: Vec<&kvm_msr_entry> = msr_entries(&b.msrs).collect();
    if ma.len() != mb.len() || ma.iter().zip(&mb).any(|(x, y)| x.index != y.index) {
        out.push(format!("vCPU {id}: MSR lists differ"));
        return;
    }
    for (x, y) in ma.iter().zip(&mb) {
        if x.data != y.data {
            let what = if x.index == MSR_IA32_TSC {
                " (time)"
            } else {
                ""
            };
            out.push(format!(
                "vCPU {id}: MSR {:#x}{what}: {:#x} vs {:#x}",
                x.index, x.data, y.data
            ));
        }
    }
}

fn irqchip_eq(a: &kvm_irqchip, b: &kvm_irqchip) -> bool {
    if a.chip_id != b.chip_id {
        return false;
    }
    match a.chip_id {
        // SAFETY: KVM fills the union member that `chip_id` names; both
        // members are plain integers, valid for any bit pattern.
        KVM_IRQCHIP_PIC_MASTER | KVM_IRQCHIP_PIC_SLAVE => unsafe { a.chip.pic == b.chip.pic },
        KVM_IRQCHIP_IOAPIC => {
            // SAFETY: as above, the IOAPIC member for the IOAPIC chip.
            let (x, y) = unsafe { (a.chip.ioapic, b.chip.ioapic) };
            x.base_address == y.base_address
                && x.ioregsel == y.ioregsel
                && x.id == y.id
                && x.irr == y.irr
                && x.redirtbl.iter().zip(&y.redirtbl).all(|(p, q)| {
                    // SAFETY: a redirection entry is one u64 (`bits`) or
                    // its bit fields; every bit pattern is valid.
                    unsafe { p.bits == q.bits }
                })
        }
        _ => false,
    }
}
