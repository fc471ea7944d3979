//! What the hypervisor's process and its guest hold in host memory, for
//! the control API's metrics and the campaigns' soak runs.

use vm_memory::GuestAddress;

use crate::memory::GuestRam;

/// Memory in use, for metrics and soak tests: the hypervisor process's
/// resident set and the guest RAM in it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryUsage {
    /// Resident set of this process in bytes (it includes the guest RAM
    /// the guest has touched); `None` where /proc is unreadable.
    pub host_rss_bytes: Option<u64>,
    /// Guest RAM pages resident in host memory, in bytes: the part of the
    /// resident set that is the guest's, not the hypervisor's.
    pub guest_ram_resident_bytes: Option<u64>,
}

impl MemoryUsage {
    /// Samples both now. Cheap (a `mincore` and one /proc read), so a soak
    /// can call it often while the guest runs.
    pub fn sample(mem: &GuestRam) -> MemoryUsage {
        MemoryUsage {
            host_rss_bytes: host_rss_bytes(),
            guest_ram_resident_bytes: guest_ram_resident_bytes(mem),
        }
    }

    /// The hypervisor's own resident memory: the resident set without the
    /// guest RAM in it, which grows as the guest touches its memory and
    /// says nothing about leaks in the hypervisor.
    pub fn vmm_own_bytes(&self) -> Option<u64> {
        Some(
            self.host_rss_bytes?
                .saturating_sub(self.guest_ram_resident_bytes?),
        )
    }
}

/// Resident guest RAM, by `mincore(2)` over its mapping (RAM is one
/// region at guest-physical 0, see [`crate::memory::create_guest_ram`]).
pub fn guest_ram_resident_bytes(mem: &GuestRam) -> Option<u64> {
    use vm_memory::GuestMemoryBackend;
    // SAFETY: sysconf has no preconditions.
    let page = u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
        .ok()
        .filter(|&p| p > 0)?;
    let len = crate::memory::ram_size(mem);
    if len == 0 {
        return Some(0);
    }
    let ptr = mem.get_host_address(GuestAddress(0)).ok()?;
    let mut vec = vec![0u8; usize::try_from(len.div_ceil(page)).ok()?];
    // SAFETY: `ptr..ptr+len` is the live, page-aligned mapping of all of
    // RAM, and `vec` has one byte per page of it.
    let rc = unsafe { libc::mincore(ptr.cast(), usize::try_from(len).ok()?, vec.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    Some(vec.iter().filter(|&&b| b & 1 != 0).count() as u64 * page)
}

/// Resident set size of this process, from /proc/self/statm.
pub fn host_rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let page = u64::try_from(page).ok().filter(|&p| p > 0)?;
    pages.checked_mul(page)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::create_guest_ram;

    #[test]
    fn host_rss_is_plausible() {
        let rss = host_rss_bytes().expect("statm");
        assert!(rss > 1 << 20, "{rss}");
    }

    #[test]
    fn resident_guest_ram_follows_what_was_touched() {
        let mem = create_guest_ram(16 << 20).expect("ram");
        let before = guest_ram_resident_bytes(&mem).expect("mincore");
        let buf = vec![0x5au8; 1 << 20];
        vm_memory::Bytes::write_slice(&mem, &buf, vm_memory::GuestAddress(4 << 20)).expect("write");
        let after = guest_ram_resident_bytes(&mem).expect("mincore");
        assert!(after >= before + (1 << 20), "{before} -> {after}");
        assert!(after <= 16 << 20, "{after}");
    }
}
