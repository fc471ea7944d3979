//! Just enough ELF64 for user programs (static `ET_EXEC`) and extensions
//! (`ET_DYN` with `R_X86_64_RELATIVE` relocations).
//!
//! Hand-written rather than using `object`: this runs as emulated ring-0
//! code, and we read a dozen fields with bounds checks, nothing more.

pub const ET_EXEC: u16 = 2;
pub const ET_DYN: u16 = 3;
pub const PT_LOAD: u32 = 1;
pub const PT_DYNAMIC: u32 = 2;
pub const PF_X: u32 = 1;
pub const PF_W: u32 = 2;
const DT_NULL: u64 = 0;
const DT_RELA: u64 = 7;
const DT_RELASZ: u64 = 8;
pub const R_X86_64_RELATIVE: u32 = 8;

#[derive(Clone, Copy)]
pub struct Elf<'a> {
    pub data: &'a [u8],
    pub kind: u16,
    pub entry: u64,
    phoff: usize,
    phnum: usize,
}

#[derive(Clone, Copy, Debug)]
pub struct Segment {
    pub kind: u32,
    pub flags: u32,
    pub offset: u64,
    pub vaddr: u64,
    pub filesz: u64,
    pub memsz: u64,
}

fn u16_at(d: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_le_bytes(d.get(o..o + 2)?.try_into().ok()?))
}
fn u32_at(d: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_le_bytes(d.get(o..o + 4)?.try_into().ok()?))
}
pub fn u64_at(d: &[u8], o: usize) -> Option<u64> {
    Some(u64::from_le_bytes(d.get(o..o + 8)?.try_into().ok()?))
}

impl<'a> Elf<'a> {
    pub fn parse(data: &'a [u8]) -> Option<Self> {
        if data.get(..4)? != b"\x7fELF" || data[4] != 2 || data[5] != 1 {
            return None;
        }
        if u16_at(data, 18)? != 62 {
            return None; // not x86-64
        }
        let phentsize = u16_at(data, 54)? as usize;
        if phentsize != 56 {
            return None;
        }
        let e = Elf {
            data,
            kind: u16_at(data, 16)?,
            entry: u64_at(data, 24)?,
            phoff: u64_at(data, 32)? as usize,
            phnum: u16_at(data, 56)? as usize,
        };
        e.phoff
            .checked_add(e.phnum.checked_mul(56)?)
            .filter(|&end| end <= data.len())?;
        Some(e)
    }

    pub fn segment(&self, i: usize) -> Option<Segment> {
        if i >= self.phnum {
            return None;
        }
        let o = self.phoff + i * 56;
        let d = self.data;
        let s = Segment {
            kind: u32_at(d, o)?,
            flags: u32_at(d, o + 4)?,
            offset: u64_at(d, o + 8)?,
            vaddr: u64_at(d, o + 16)?,
            filesz: u64_at(d, o + 32)?,
            memsz: u64_at(d, o + 40)?,
        };
        if s.filesz > s.memsz || s.offset.checked_add(s.filesz)? > d.len() as u64 {
            return None;
        }
        s.vaddr.checked_add(s.memsz)?;
        Some(s)
    }

    pub fn segments(&self) -> impl Iterator<Item = Option<Segment>> + '_ {
        (0..self.phnum).map(|i| self.segment(i))
    }

    /// File bytes of a segment.
    pub fn bytes(&self, s: &Segment) -> &'a [u8] {
        &self.data[s.offset as usize..(s.offset + s.filesz) as usize]
    }

    /// (offset, count) of the RELA table from PT_DYNAMIC, translated to a
    /// file offset via the containing PT_LOAD.
    pub fn rela(&self) -> Option<Option<(usize, usize)>> {
        let dynseg = self.segments().flatten().find(|s| s.kind == PT_DYNAMIC);
        let Some(dynseg) = dynseg else {
            return Some(None);
        };
        let mut rela = None;
        let mut relasz = 0u64;
        let mut o = dynseg.offset as usize;
        let end = o + dynseg.filesz as usize;
        while o + 16 <= end {
            let tag = u64_at(self.data, o)?;
            let val = u64_at(self.data, o + 8)?;
            match tag {
                DT_NULL => break,
                DT_RELA => rela = Some(val),
                DT_RELASZ => relasz = val,
                _ => {}
            }
            o += 16;
        }
        let Some(rela_va) = rela else {
            return Some(None);
        };
        let seg = self.segments().flatten().find(|s| {
            s.kind == PT_LOAD && rela_va >= s.vaddr && rela_va + relasz <= s.vaddr + s.filesz
        })?;
        let off = (seg.offset + rela_va - seg.vaddr) as usize;
        Some(Some((off, (relasz / 24) as usize)))
    }
}
