//! Faults in extension code: the Rio/Nooks "text" faults.
//!
//! Extension code is found through its slot in the state root
//! (`ExtSlot::text_start..text_end`, which the loader sets from the
//! module's executable PT_LOAD segments) and read through the kernel's
//! master page tables. It is decoded linearly with iced-x86, so every
//! target is a real instruction boundary, a real branch or a real register
//! operand. Padding (`int3`) and undecodable bytes are never targets, nor
//! is an instruction whose bytes straddle two physically non-contiguous
//! pages (it could not be written and reverted as one block).

use iced_x86::{
    Code, Decoder, DecoderOptions, EncodingKind, FlowControl, Formatter, Instruction,
    IntelFormatter, OpKind, Register,
};
use lazarus_abi::layout::{EXT_REGION, EXT_SLOT_SIZE, PAGE_SIZE};
use lazarus_abi::root::{EXT_FREE, EXT_LIVE, MAX_EXTS};
use lazarus_vmm::memory::read_bytes;
use rand::Rng;
use rand::seq::SliceRandom;

use crate::{FaultType, Guest, InjectError, Injection, cstr, hex};

/// The code of one extension, copied out of guest memory.
pub(crate) struct ExtCode {
    name: String,
    base: u64,
    text_start: u64,
    text: Vec<u8>,
    /// Guest-physical address of each page of the text, starting with the
    /// page that holds `text_start`.
    pages: Vec<u64>,
}

/// One decoded instruction: offset into [`ExtCode::text`] and the decode.
struct Insn {
    off: usize,
    instr: Instruction,
}

impl ExtCode {
    /// The slots to try, in order: the one called `name`, or every live
    /// extension in random order (the first that suits the fault is hit).
    pub(crate) fn slots(
        guest: &Guest<'_>,
        name: Option<&str>,
        rng: &mut impl Rng,
    ) -> Result<Vec<usize>, InjectError> {
        let exts = &guest.root.exts;
        match name {
            Some(name) => exts
                .iter()
                .position(|e| e.state != EXT_FREE && cstr(&e.name) == name)
                .map(|slot| vec![slot])
                .ok_or_else(|| InjectError::ExtNotLoaded(name.to_string())),
            None => {
                let mut live: Vec<usize> = (0..exts.len())
                    .filter(|&i| exts[i].state == EXT_LIVE)
                    .collect();
                if live.is_empty() {
                    return Err(InjectError::NoExtension);
                }
                live.shuffle(rng);
                Ok(live)
            }
        }
    }

    /// Validates slot `slot` (guest data) and copies its text.
    pub(crate) fn read(guest: &Guest<'_>, slot: usize) -> Result<Self, InjectError> {
        let e = guest.root.exts.get(slot).ok_or(InjectError::NoExtension)?;
        let name = cstr(&e.name);
        let bad = |reason: &str| InjectError::BadExtension {
            name: name.clone(),
            slot,
            reason: reason.to_string(),
        };
        if e.size == 0 || e.size > EXT_SLOT_SIZE {
            return Err(bad("image size is zero or larger than a slot"));
        }
        let end = e
            .base
            .checked_add(e.size)
            .ok_or_else(|| bad("image end overflows"))?;
        if e.base < EXT_REGION || end > EXT_REGION + MAX_EXTS as u64 * EXT_SLOT_SIZE {
            return Err(bad("image lies outside the extension region"));
        }
        if e.text_start < e.base || e.text_start >= e.text_end || e.text_end > end {
            return Err(bad("text range is empty or outside the image"));
        }
        let mut text = Vec::new();
        let mut pages = Vec::new();
        let mut page = e.text_start & !(PAGE_SIZE - 1);
        while page < e.text_end {
            let gpa = lazarus_guestmem::translate(guest.mem, guest.root.master_pml4, page)
                .map_err(|_| InjectError::Unmapped { va: page })?
                .pa;
            let from = page.max(e.text_start);
            // No overflow: the image lies in the extension region, far
            // below the top of the address space.
            let to = (page + PAGE_SIZE).min(e.text_end);
            let at = gpa + (from - page);
            let bytes = read_bytes(guest.mem, at, to - from).ok_or(InjectError::BadAddress {
                gpa: at,
                len: to - from,
            })?;
            text.extend_from_slice(&bytes);
            pages.push(gpa);
            page += PAGE_SIZE;
        }
        Ok(Self {
            name,
            base: e.base,
            text_start: e.text_start,
            text,
            pages,
        })
    }

    fn va(&self, off: usize) -> u64 {
        self.text_start + off as u64
    }

    fn gpa_of(&self, va: u64) -> Option<u64> {
        let first = self.text_start & !(PAGE_SIZE - 1);
        let index = usize::try_from(va.checked_sub(first)? / PAGE_SIZE).ok()?;
        Some(self.pages.get(index)? + (va & (PAGE_SIZE - 1)))
    }

    /// Guest-physical start of `[va, va + len)` if it is one contiguous
    /// block (instructions are at most 15 bytes, so at most two pages).
    fn gpa_range(&self, va: u64, len: usize) -> Option<u64> {
        let first = self.gpa_of(va)?;
        let last = self.gpa_of(va + len.checked_sub(1)? as u64)?;
        (last == first + (len as u64 - 1)).then_some(first)
    }

    /// Every instruction that can be a target, in address order.
    fn instructions(&self) -> Vec<Insn> {
        let mut decoder = Decoder::with_ip(64, &self.text, self.text_start, DecoderOptions::NONE);
        let mut out = Vec::new();
        let mut instr = Instruction::default();
        while decoder.can_decode() {
            let off = decoder.position();
            decoder.decode_out(&mut instr);
            if instr.is_invalid() || instr.code() == Code::Int3 {
                continue;
            }
            if self.gpa_range(self.va(off), instr.len()).is_some() {
                out.push(Insn { off, instr });
            }
        }
        out
    }

    /// Disassembly of `bytes` put in place of the instruction at `off`,
    /// decoding on into the original code that follows if the new bytes
    /// start an instruction longer than they are.
    fn disasm(&self, off: usize, bytes: &[u8]) -> String {
        let rest = off + bytes.len();
        let mut buf = bytes.to_vec();
        buf.extend_from_slice(&self.text[rest..(rest + 15).min(self.text.len())]);
        let mut decoder = Decoder::with_ip(64, &buf, self.va(off), DecoderOptions::NONE);
        let mut formatter = IntelFormatter::new();
        let mut parts = Vec::new();
        while decoder.can_decode() && decoder.position() < bytes.len() {
            let instr = decoder.decode();
            if instr.is_invalid() {
                parts.push("(bad)".to_string());
                break;
            }
            let mut s = String::new();
            formatter.format(&instr, &mut s);
            parts.push(s);
        }
        parts.join("; ")
    }

    /// The injection record for replacing the instruction `insn` by
    /// `after`.
    fn injection(
        &self,
        fault: FaultType,
        insn: &Insn,
        after: Vec<u8>,
        what: String,
    ) -> Result<Injection, InjectError> {
        let va = self.va(insn.off);
        let before = self.text[insn.off..insn.off + insn.instr.len()].to_vec();
        let gpa = self
            .gpa_range(va, before.len())
            .ok_or(InjectError::Unmapped { va })?;
        let detail = format!(
            "{what}: \"{}\" [{}] -> \"{}\" [{}]",
            self.disasm(insn.off, &before),
            hex(&before),
            self.disasm(insn.off, &after),
            hex(&after)
        );
        Ok(Injection {
            fault,
            target: format!("{}+{:#x}", self.name, va - self.base),
            va,
            gpa,
            before,
            after,
            detail,
        })
    }
}

/// Chooses the target instruction and the new bytes for a code fault.
pub(crate) fn plan(
    ext: &ExtCode,
    fault: FaultType,
    rng: &mut impl Rng,
) -> Result<Injection, InjectError> {
    let insns = ext.instructions();
    let none = || InjectError::NoSuitableInstruction {
        fault,
        ext: ext.name.clone(),
    };
    match fault {
        FaultType::BitFlip => {
            let insn = pick(rng, &insns).ok_or_else(none)?;
            let mut after = ext.text[insn.off..insn.off + insn.instr.len()].to_vec();
            let flips = rng.random_range(1..=2);
            let mut bits = rand::seq::index::sample(rng, after.len() * 8, flips).into_vec();
            bits.sort_unstable();
            for &bit in &bits {
                after[bit / 8] ^= 1 << (bit % 8);
            }
            let what = bits
                .iter()
                .map(|b| format!("byte {} bit {}", b / 8, b % 8))
                .collect::<Vec<_>>()
                .join(", ");
            ext.injection(fault, insn, after, format!("flipped {what}"))
        }
        FaultType::ReplaceInstruction => {
            let insn = pick(rng, &insns).ok_or_else(none)?;
            let before = &ext.text[insn.off..insn.off + insn.instr.len()];
            let mut after = vec![0u8; before.len()];
            rng.fill(&mut after[..]);
            if after == before {
                after[0] = !after[0];
            }
            ext.injection(fault, insn, after, "replaced with random bytes".into())
        }
        FaultType::DeleteBranch => {
            let branches: Vec<&Insn> = insns.iter().filter(|i| is_jump(&i.instr)).collect();
            let insn = *pick(rng, &branches).ok_or_else(none)?;
            let after = nops(insn.instr.len());
            ext.injection(fault, insn, after, "deleted branch".into())
        }
        FaultType::CorruptRegister => {
            let mut candidates: Vec<&Insn> = insns
                .iter()
                .filter(|i| {
                    i.instr.encoding() == EncodingKind::Legacy
                        && (0..i.instr.op_count()).any(|n| i.instr.op_kind(n) == OpKind::Register)
                })
                .collect();
            candidates.shuffle(rng);
            for insn in candidates {
                let before = &ext.text[insn.off..insn.off + insn.instr.len()];
                if let Some((after, what)) = corrupt_register(&insn.instr, before, rng) {
                    return ext.injection(fault, insn, after, what);
                }
            }
            Err(none())
        }
        _ => Err(none()),
    }
}

/// A uniformly chosen element (deterministic for a given RNG state).
pub(crate) fn pick<'a, T>(rng: &mut impl Rng, items: &'a [T]) -> Option<&'a T> {
    if items.is_empty() {
        None
    } else {
        items.get(rng.random_range(0..items.len()))
    }
}

/// Conditional and unconditional jumps (direct or indirect), the branches
/// the "delete branch" fault removes; calls and returns are not jumps.
pub(crate) fn is_jump(instr: &Instruction) -> bool {
    matches!(
        instr.flow_control(),
        FlowControl::ConditionalBranch
            | FlowControl::UnconditionalBranch
            | FlowControl::IndirectBranch
    )
}

/// `len` bytes of NOPs: the recommended multi-byte forms (Intel SDM, NOP),
/// except that two bytes are two plain `nop`s (`66 90` disassembles as
/// `xchg ax,ax`, which reads badly in a report).
pub(crate) fn nops(len: usize) -> Vec<u8> {
    const NOPS: [&[u8]; 9] = [
        &[0x90],
        &[0x90, 0x90],
        &[0x0f, 0x1f, 0x00],
        &[0x0f, 0x1f, 0x40, 0x00],
        &[0x0f, 0x1f, 0x44, 0x00, 0x00],
        &[0x66, 0x0f, 0x1f, 0x44, 0x00, 0x00],
        &[0x0f, 0x1f, 0x80, 0x00, 0x00, 0x00, 0x00],
        &[0x0f, 0x1f, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00],
        &[0x66, 0x0f, 0x1f, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00],
    ];
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        let n = (len - out.len()).min(NOPS.len());
        out.extend_from_slice(NOPS[n - 1]);
    }
    out
}

/// Offset of the ModRM byte of a legacy-encoded instruction, if it has
/// room for one: after the legacy prefixes, REX and the 1-3 opcode bytes.
/// Whether the byte really is a ModRM is settled by re-decoding (see
/// [`corrupt_register`]).
pub(crate) fn modrm_offset(bytes: &[u8]) -> Option<usize> {
    let mut i = 0;
    while matches!(
        bytes.get(i)?,
        0x66 | 0x67 | 0xf0 | 0xf2 | 0xf3 | 0x2e | 0x36 | 0x3e | 0x26 | 0x64 | 0x65
    ) {
        i += 1;
    }
    if bytes.get(i)? & 0xf0 == 0x40 {
        i += 1;
    }
    if *bytes.get(i)? == 0x0f {
        i += 1;
        if matches!(bytes.get(i)?, 0x38 | 0x3a) {
            i += 1;
        }
    }
    i += 1;
    (i < bytes.len()).then_some(i)
}

/// Rewrites the ModRM reg field, or the rm field when it names a register
/// (mod = 11), of `instr` so that exactly one register operand changes and
/// the instruction otherwise stays the same (same opcode, length and
/// operands). Fields and values are tried in random order.
fn corrupt_register(
    instr: &Instruction,
    bytes: &[u8],
    rng: &mut impl Rng,
) -> Option<(Vec<u8>, String)> {
    let at = modrm_offset(bytes)?;
    let modrm = bytes[at];
    let mut fields: Vec<(u8, &str)> = vec![(3, "ModRM.reg")];
    if modrm >> 6 == 0b11 {
        fields.push((0, "ModRM.rm"));
    }
    fields.shuffle(rng);
    for (shift, field) in fields {
        let old = (modrm >> shift) & 7;
        let mut values: Vec<u8> = (0..8).filter(|&v| v != old).collect();
        values.shuffle(rng);
        for value in values {
            let mut after = bytes.to_vec();
            after[at] = (modrm & !(7 << shift)) | (value << shift);
            if let Some((from, to)) = changed_register(instr, &after) {
                let what = format!(
                    "{field} {old} -> {value} (register {} -> {})",
                    reg_name(from),
                    reg_name(to)
                );
                return Some((after, what));
            }
        }
    }
    None
}

/// The one register operand that differs between `instr` and the decode
/// of `bytes`, if everything else (opcode, length, other operands) is the
/// same.
fn changed_register(instr: &Instruction, bytes: &[u8]) -> Option<(Register, Register)> {
    let mut decoder = Decoder::with_ip(64, bytes, instr.ip(), DecoderOptions::NONE);
    let new = decoder.decode();
    if new.is_invalid()
        || new.len() != instr.len()
        || new.code() != instr.code()
        || new.op_count() != instr.op_count()
    {
        return None;
    }
    let mut changed = None;
    for n in 0..instr.op_count() {
        let kind = instr.op_kind(n);
        if new.op_kind(n) != kind {
            return None;
        }
        match kind {
            OpKind::Register => {
                let (a, b) = (instr.op_register(n), new.op_register(n));
                if a != b {
                    if changed.is_some() {
                        return None;
                    }
                    changed = Some((a, b));
                }
            }
            OpKind::Memory
                if new.memory_base() != instr.memory_base()
                    || new.memory_index() != instr.memory_index()
                    || new.memory_index_scale() != instr.memory_index_scale()
                    || new.memory_displacement64() != instr.memory_displacement64() =>
            {
                return None;
            }
            _ => {}
        }
    }
    changed
}

fn reg_name(r: Register) -> String {
    format!("{r:?}").to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(bytes: &[u8]) -> Instruction {
        Decoder::with_ip(64, bytes, 0x1000, DecoderOptions::NONE).decode()
    }

    #[test]
    fn nops_decode_as_nops_of_the_right_length() {
        for len in 1..=20 {
            let bytes = nops(len);
            assert_eq!(bytes.len(), len);
            let mut decoder = Decoder::with_ip(64, &bytes, 0, DecoderOptions::NONE);
            let mut total = 0;
            while decoder.can_decode() {
                let i = decoder.decode();
                assert_eq!(i.mnemonic(), iced_x86::Mnemonic::Nop, "{len}: {bytes:02x?}");
                total += i.len();
            }
            assert_eq!(total, len);
        }
    }

    #[test]
    fn modrm_is_found_after_prefixes_and_opcode() {
        assert_eq!(modrm_offset(&[0x89, 0xf8]), Some(1)); // mov eax, edi
        assert_eq!(modrm_offset(&[0x48, 0x89, 0xe5]), Some(2)); // mov rbp, rsp
        assert_eq!(modrm_offset(&[0x66, 0x41, 0x89, 0xc0]), Some(3)); // mov r8w, ax
        assert_eq!(modrm_offset(&[0x0f, 0xaf, 0xc1]), Some(2)); // imul eax, ecx
        assert_eq!(modrm_offset(&[0x66, 0x0f, 0x38, 0x00, 0xc1]), Some(4));
        assert_eq!(modrm_offset(&[0xc3]), None); // ret
        assert_eq!(modrm_offset(&[]), None);
        assert_eq!(modrm_offset(&[0x66, 0x66]), None);
    }

    #[test]
    fn only_one_register_may_change() {
        let mov = decode(&[0x89, 0xf8]); // mov eax, edi
        assert_eq!(
            changed_register(&mov, &[0x89, 0xd8]),
            Some((Register::EDI, Register::EBX))
        );
        assert_eq!(changed_register(&mov, &[0x89, 0xf8]), None);
        // Both reg and rm changed.
        assert_eq!(changed_register(&mov, &[0x89, 0xd9]), None);
        // mod 11 -> 00 turns a register operand into memory.
        assert_eq!(changed_register(&mov, &[0x89, 0x38]), None);
        // 83 /7 (cmp) -> 83 /0 (add): a different opcode, not a register.
        let cmp = decode(&[0x83, 0xf8, 0x0a]);
        assert_eq!(changed_register(&cmp, &[0x83, 0xc0, 0x0a]), None);
        // push rbp has no ModRM: the register cannot be changed this way.
        let push = decode(&[0x55, 0x90]);
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(1);
        assert!(corrupt_register(&push, &[0x55], &mut rng).is_none());
    }

    #[test]
    fn jumps_are_branches_and_calls_are_not() {
        assert!(is_jump(&decode(&[0x7e, 0x05]))); // jle
        assert!(is_jump(&decode(&[0x0f, 0x85, 0, 0, 0, 0]))); // jne rel32
        assert!(is_jump(&decode(&[0xeb, 0x02]))); // jmp short
        assert!(is_jump(&decode(&[0xff, 0xe0]))); // jmp rax
        assert!(!is_jump(&decode(&[0xe8, 0, 0, 0, 0]))); // call
        assert!(!is_jump(&decode(&[0xc3]))); // ret
        assert!(!is_jump(&decode(&[0x01, 0xf0]))); // add
    }
}
