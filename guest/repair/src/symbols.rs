//! Names the crashing function from the image's symbol table (kernel and
//! extension functions at the addresses they run at, written by the
//! hypervisor when the image was built).

use lazarus_abi::repair::*;

fn header() -> &'static RepairHeader {
    // SAFETY: the hypervisor writes the header at this fixed place in the
    // image, mapped at IMAGE_VA, before starting us.
    unsafe { &*((IMAGE_VA + MAILBOX_OFFSET) as *const RepairHeader) }
}

/// The table, if the header's description of it lies inside the image.
fn table() -> Option<(&'static [ImageSymbol], &'static [u8])> {
    let h = header();
    let len = (h.symbol_count as u64).checked_mul(size_of::<ImageSymbol>() as u64)?;
    let end = h.symbols_offset.checked_add(len)?;
    let names_end = h.names_offset.checked_add(h.names_len as u64)?;
    if h.symbols_offset < PRISTINE_OFFSET
        || end > SLOT_SIZE
        || !h.symbols_offset.is_multiple_of(8)
        || h.names_offset < PRISTINE_OFFSET
        || names_end > SLOT_SIZE
    {
        return None;
    }
    // SAFETY: both ranges are inside the image (checked above), which is
    // mapped at IMAGE_VA; the table is 8-aligned and every bit pattern is
    // a valid ImageSymbol.
    Some(unsafe {
        (
            core::slice::from_raw_parts(
                (IMAGE_VA + h.symbols_offset) as *const ImageSymbol,
                h.symbol_count as usize,
            ),
            core::slice::from_raw_parts(
                (IMAGE_VA + h.names_offset) as *const u8,
                h.names_len as usize,
            ),
        )
    })
}

/// Writes `function+0xoff` for `addr` into `out` (NUL-padded). Leaves it
/// empty when no function contains `addr`.
pub fn describe(addr: u64, out: &mut [u8]) {
    out.fill(0);
    let Some((syms, names)) = table() else {
        return;
    };
    let i = syms.partition_point(|s| s.addr <= addr);
    let Some(s) = i.checked_sub(1).and_then(|i| syms.get(i)) else {
        return;
    };
    let off = addr - s.addr;
    if s.size != 0 && off >= s.size as u64 {
        return;
    }
    let start = s.name_off as usize;
    let Some(name) = names.get(start..start.saturating_add(s.name_len as usize)) else {
        return;
    };
    let mut w = Writer { out, at: 0 };
    w.put(name);
    if off != 0 {
        w.put(b"+0x");
        w.hex(off);
    }
}

struct Writer<'a> {
    out: &'a mut [u8],
    at: usize,
}

impl Writer<'_> {
    fn put(&mut self, bytes: &[u8]) {
        for &b in bytes {
            // Keep the last byte for the NUL.
            if self.at + 1 >= self.out.len() {
                return;
            }
            self.out[self.at] = b;
            self.at += 1;
        }
    }

    fn hex(&mut self, v: u64) {
        let digits = (64 - v.leading_zeros()).div_ceil(4).max(1);
        for i in (0..digits).rev() {
            let d = ((v >> (i * 4)) & 0xf) as u8;
            self.put(&[if d < 10 { b'0' + d } else { b'a' + d - 10 }]);
        }
    }
}
