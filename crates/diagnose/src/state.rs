//! The kernel's state root, read out of the dump, and questions about it.

use lazarus_abi::root::{
    KernelRoot, LOCK_HELD, MAX_EXTS, NONE, PS_FREE, PS_ZOMBIE, Proc, proc_state_name,
};
use lazarus_abi::{layout::MAX_MEMORY, name_str};
use lazarus_dump::{Dump, ExtLoad};

use crate::report::{LockInfo, LockWait, ProcessInfo};

/// Reads and validates the root at `gpa` in the dumped RAM: the same
/// address and header checks (alignment, inside RAM, magic, ABI version,
/// size) as the hypervisor's, then a plausible memory size.
pub fn read_root(dump: &Dump, gpa: u64) -> Result<Box<KernelRoot>, String> {
    let root = lazarus_guestmem::read_root(dump, gpa).map_err(|e| e.to_string())?;
    if root.mem_size > MAX_MEMORY {
        return Err(format!("implausible memory size {:#x}", root.mem_size));
    }
    Ok(root)
}

/// A validated root, with lookups that tolerate garbage in the tables.
pub struct Kernel<'a> {
    pub root: &'a KernelRoot,
}

fn opt(v: u32) -> Option<u32> {
    (v != NONE).then_some(v)
}

impl Kernel<'_> {
    /// The live (allocated) process `pid`.
    pub fn proc(&self, pid: u32) -> Option<&Proc> {
        if pid == 0 {
            return None;
        }
        let p = &self.root.procs[KernelRoot::slot_of(pid)];
        (p.pid == pid && p.state != PS_FREE).then_some(p)
    }

    pub fn process_info(&self, pid: u32) -> Option<ProcessInfo> {
        let p = self.proc(pid)?;
        Some(ProcessInfo {
            pid,
            name: name_str(&p.name).to_string(),
            state: proc_state_name(p.state).to_string(),
            cur_ext: opt(p.cur_ext),
            syscall: (p.syscall_nr != u64::MAX).then_some(p.syscall_nr),
            spinning_on: opt(p.spinning_on),
        })
    }

    /// Name of extension slot `slot` in the root's table.
    pub fn ext_name(&self, slot: u32) -> Option<String> {
        let e = self.root.exts.get(slot as usize)?;
        let n = name_str(&e.name);
        (!n.is_empty()).then(|| n.to_string())
    }

    fn lock_info(&self, id: usize, ext_name: &dyn Fn(u32) -> Option<String>) -> Option<LockInfo> {
        let l = self.root.locks.get(id)?;
        Some(LockInfo {
            id: id as u32,
            name: name_str(&l.name).to_string(),
            owner: l.owner,
            extension: opt(l.ext).map(|e| ext_name(e).unwrap_or_else(|| format!("slot {e}"))),
        })
    }

    /// Locks held by `pid`.
    pub fn locks_held(&self, pid: u32, ext_name: &dyn Fn(u32) -> Option<String>) -> Vec<LockInfo> {
        (0..self.root.locks.len())
            .filter(|&i| {
                let l = &self.root.locks[i];
                l.state == LOCK_HELD && l.owner == pid && pid != 0
            })
            .filter_map(|i| self.lock_info(i, ext_name))
            .collect()
    }

    /// The lock `pid` spins on, if another live process (or `pid` itself,
    /// a recursive AA deadlock) holds it: the deadlock condition.
    pub fn deadlock(&self, pid: u32, ext_name: &dyn Fn(u32) -> Option<String>) -> Option<LockWait> {
        let p = self.proc(pid)?;
        let id = opt(p.spinning_on)? as usize;
        let l = self.root.locks.get(id)?;
        if l.state != LOCK_HELD || l.owner == 0 {
            return None;
        }
        let owner = self.proc(l.owner).filter(|o| o.state != PS_ZOMBIE)?;
        Some(LockWait {
            lock: self.lock_info(id, ext_name)?,
            owner_pid: l.owner,
            owner_name: Some(name_str(&owner.name).to_string()),
            recursive: l.owner == pid,
        })
    }

    /// Pid running on `cpu` (0 = idle).
    pub fn current(&self, cpu: u32) -> u32 {
        self.root.cpus.get(cpu as usize).map_or(0, |c| c.current)
    }

    /// The kernel's text range, if plausible.
    pub fn kernel_text(&self) -> Option<std::ops::Range<u64>> {
        let (s, e) = (self.root.kernel_text_start, self.root.kernel_text_end);
        (s < e && e - s < 1 << 30).then_some(s..e)
    }

    /// Live extension slots, as the hypervisor would have listed them
    /// (without build ids).
    pub fn live_exts(&self) -> Vec<ExtLoad> {
        (0..MAX_EXTS)
            .filter(|&i| self.root.exts[i].state == lazarus_abi::root::EXT_LIVE)
            .map(|i| {
                let e = &self.root.exts[i];
                ExtLoad {
                    slot: i as u32,
                    name: name_str(&e.name).to_string(),
                    base: e.base,
                    size: e.size,
                    text_start: e.text_start,
                    text_end: e.text_end,
                    build_id: None,
                }
            })
            .collect()
    }
}
