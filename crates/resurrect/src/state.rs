//! Reading the kernel's state root from guest RAM.

use lazarus_abi::root::{CrashRecord, KernelRoot};
use lazarus_vmm::memory::GuestRam;
use vm_memory::{Bytes, GuestAddress};
use zerocopy::{FromZeros, IntoBytes};

/// Size of the root as this crate was built.
pub const ROOT_SIZE: u64 = size_of::<KernelRoot>() as u64;

/// Copies the whole root out of guest memory, checking its header (magic,
/// ABI version, the size this build expects, bounds) first.
pub fn read_root(mem: &GuestRam, gpa: u64) -> Result<Box<KernelRoot>, String> {
    let header = lazarus_vmm::root::read_header(mem, gpa, ROOT_SIZE).map_err(|e| e.to_string())?;
    if u64::from(header.root_size) != ROOT_SIZE {
        return Err(format!(
            "root size {} is not this build's {ROOT_SIZE}",
            header.root_size
        ));
    }
    let mut root = KernelRoot::new_box_zeroed().map_err(|_| "out of memory".to_string())?;
    mem.read_slice(root.as_mut_bytes(), GuestAddress(gpa))
        .map_err(|e| e.to_string())?;
    Ok(root)
}

/// The kernel's crash record, read straight from the registered root.
pub fn read_crash_record(mem: &GuestRam, gpa: u64) -> Option<CrashRecord> {
    read_root(mem, gpa).ok().map(|r| r.crash)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use lazarus_abi::root::{ABI_VERSION, ROOT_MAGIC};
    use lazarus_vmm::memory::write_obj;

    /// Writes a valid root header at `gpa`.
    pub(crate) fn plant_root(mem: &GuestRam, gpa: u64) {
        let mut root = KernelRoot::new_box_zeroed().unwrap();
        root.header.magic = ROOT_MAGIC;
        root.header.abi_version = ABI_VERSION;
        root.header.root_size = ROOT_SIZE as u32;
        root.header.heartbeat = 42;
        write_obj(mem, gpa, &*root).unwrap();
    }
}
