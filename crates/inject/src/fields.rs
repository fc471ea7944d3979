//! Where each field of [`KernelRoot`] lies, so that a wild write can be
//! reported as `root.locks[3]+0x8` rather than as a bare offset.

use core::mem::offset_of;
use lazarus_abi::root::KernelRoot;

/// One field of the root: byte offset, size and, for arrays, element size.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Field {
    pub name: &'static str,
    pub offset: usize,
    pub size: usize,
    /// Element size for arrays, 0 for everything else.
    pub elem: usize,
}

/// `size_of` of what the (never called) accessor returns, so the table
/// below cannot disagree with the field types.
fn size_of_ret<T>(_: fn(&KernelRoot) -> &T) -> usize {
    size_of::<T>()
}

macro_rules! field {
    ($outer:ident . $inner:ident) => {
        Field {
            name: concat!(stringify!($outer), ".", stringify!($inner)),
            offset: offset_of!(KernelRoot, $outer.$inner),
            size: size_of_ret(|r| &r.$outer.$inner),
            elem: 0,
        }
    };
    ($name:ident) => {
        Field {
            name: stringify!($name),
            offset: offset_of!(KernelRoot, $name),
            size: size_of_ret(|r| &r.$name),
            elem: 0,
        }
    };
    ($name:ident[]) => {
        Field {
            name: stringify!($name),
            offset: offset_of!(KernelRoot, $name),
            size: size_of_ret(|r| &r.$name),
            elem: size_of_ret(|r| &r.$name[0]),
        }
    };
}

/// Every field of the root, in memory order.
pub(crate) fn root_fields() -> [Field; 37] {
    [
        field!(header.magic),
        field!(header.abi_version),
        field!(header.root_size),
        field!(header.heartbeat),
        field!(header.cpu_heartbeat),
        field!(mem_size),
        field!(master_pml4),
        field!(kernel_text_start),
        field!(kernel_text_end),
        field!(recovery_entry),
        field!(recovery_stack),
        field!(trap_return),
        field!(idt),
        field!(isr_table),
        field!(next_pid),
        field!(runq_head),
        field!(runq_len),
        field!(_pad0),
        field!(runq[]),
        field!(cpus[]),
        field!(bkl),
        field!(procs[]),
        field!(locks[]),
        field!(exts[]),
        field!(timers[]),
        field!(irqs[]),
        field!(services[]),
        field!(msg_seq),
        field!(msgs[]),
        field!(pipes[]),
        field!(files[]),
        field!(console_in),
        field!(ext_list),
        field!(mem),
        field!(heap),
        field!(crash),
        field!(recovery),
    ]
}

/// Names byte `offset` of the root: `root.procs[3]+0x18`, `root.header.heartbeat`.
pub(crate) fn describe_root_offset(offset: usize) -> String {
    let Some(f) = root_fields()
        .into_iter()
        .find(|f| offset >= f.offset && offset < f.offset + f.size)
    else {
        return format!("root+{offset:#x}");
    };
    let inner = offset - f.offset;
    let index = inner.checked_div(f.elem);
    let inner = inner.checked_rem(f.elem).unwrap_or(inner);
    let mut s = format!("root.{}", f.name);
    if let Some(i) = index {
        s.push_str(&format!("[{i}]"));
    }
    if inner != 0 {
        s.push_str(&format!("+{inner:#x}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table is in order, does not overlap and covers the whole root
    /// but for alignment padding; a field added to the ABI without being
    /// added here shows up as a gap.
    #[test]
    fn table_covers_the_root() {
        let fields = root_fields();
        let mut end = 0;
        for f in fields {
            assert!(f.offset >= end, "{} overlaps", f.name);
            assert!(f.offset - end < 8, "gap before {}", f.name);
            if f.elem > 0 {
                assert_eq!(f.size % f.elem, 0, "{}", f.name);
            }
            end = f.offset + f.size;
        }
        assert!(size_of::<KernelRoot>() - end < 8);
    }

    #[test]
    fn offsets_are_named() {
        let locks = offset_of!(KernelRoot, locks);
        let lock = size_of_ret(|r| &r.locks[0]);
        assert_eq!(describe_root_offset(locks + 3 * lock), "root.locks[3]");
        assert_eq!(
            describe_root_offset(locks + 3 * lock + 8),
            "root.locks[3]+0x8"
        );
        assert_eq!(
            describe_root_offset(offset_of!(KernelRoot, header.heartbeat)),
            "root.header.heartbeat"
        );
        assert_eq!(
            describe_root_offset(size_of::<KernelRoot>()),
            format!("root+{:#x}", size_of::<KernelRoot>())
        );
    }
}
