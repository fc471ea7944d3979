//! Opening the KVM device and checking what the VMM relies on.

use std::os::fd::{FromRawFd, IntoRawFd};
use std::path::Path;

use kvm_ioctls::{Cap, Kvm};

use crate::error::{Error, Result};

/// The KVM device path.
pub const DEFAULT_KVM_DEVICE: &str = "/dev/kvm";
/// The only stable KVM API version.
const KVM_API_VERSION: i32 = 12;

/// Opens the KVM device at `path` and checks the API version and the
/// capabilities the VMM needs.
pub fn open_kvm(path: &Path) -> Result<Kvm> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|source| Error::KvmUnavailable {
            path: path.to_path_buf(),
            source,
        })?;
    // SAFETY: the descriptor was just opened (with O_CLOEXEC, as std always
    // does) and ownership moves into `Kvm`, which closes it on drop.
    let kvm = unsafe { Kvm::from_raw_fd(file.into_raw_fd()) };
    let version = kvm.get_api_version();
    if version != KVM_API_VERSION {
        return Err(Error::KvmApiVersion(version));
    }
    for (cap, name) in [
        (Cap::UserMemory, "KVM_CAP_USER_MEMORY"),
        (Cap::Irqchip, "KVM_CAP_IRQCHIP"),
        (Cap::Irqfd, "KVM_CAP_IRQFD"),
        (Cap::ImmediateExit, "KVM_CAP_IMMEDIATE_EXIT"),
        (Cap::ExtCpuid, "KVM_CAP_EXT_CPUID"),
    ] {
        if !kvm.check_extension(cap) {
            return Err(Error::KvmCapability(name));
        }
    }
    Ok(kvm)
}

/// Makes deleting a memory slot discard only the shadow pages of that
/// slot instead of all of them (KVM's default, the `SLOT_ZAP_ALL` quirk).
/// Resurrection adds and removes the repair image's slot on every crash;
/// with the quirk the removal throws away every process's shadow page
/// tables, costing hundreds of microseconds plus their rebuild. Returns
/// whether the quirk could be turned off (older KVMs keep zapping all,
/// which is slower but correct).
pub fn zap_only_deleted_slots(vm_fd: &kvm_ioctls::VmFd) -> bool {
    use kvm_bindings::{KVM_CAP_DISABLE_QUIRKS2, KVM_X86_QUIRK_SLOT_ZAP_ALL, kvm_enable_cap};
    let supported = vm_fd.check_extension_raw(libc::c_ulong::from(KVM_CAP_DISABLE_QUIRKS2));
    if supported < 0 || (supported as u64) & u64::from(KVM_X86_QUIRK_SLOT_ZAP_ALL) == 0 {
        return false;
    }
    let cap = kvm_enable_cap {
        cap: KVM_CAP_DISABLE_QUIRKS2,
        args: [u64::from(KVM_X86_QUIRK_SLOT_ZAP_ALL), 0, 0, 0],
        ..Default::default()
    };
    vm_fd.enable_cap(&cap).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn missing_device_is_a_typed_error() {
        let err = open_kvm(Path::new("/nonexistent/kvm")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::KvmUnavailable);
        assert!(err.to_string().contains("/nonexistent/kvm"), "{err}");
    }

    #[test]
    fn a_non_kvm_file_is_rejected() {
        let err = open_kvm(Path::new("/dev/null")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::KvmUnavailable);
    }
}
