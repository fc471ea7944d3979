//! Writes the hand-made seed inputs into `fuzz/corpus/TARGET/seed-*`:
//! `cargo run -p lazarus-fuzz-harness --example seeds`.
//!
//! The fuzzer grows the corpus from these: without a valid kernel ELF,
//! initramfs, dump or request to start from, it spends its time finding
//! magic numbers. The structured targets, hypercall and serial, need no
//! real seeds (any bytes decode into operations): they get an empty input,
//! a VM that does nothing. Each seed is checked to run cleanly before it is
//! written.

use std::path::{Path, PathBuf};

use lazarus_abi::layout::{
    BOOT_PML4_GPA, EXT_REGION, KERNEL_PHYS_BASE, KERNEL_VIRT_BASE, KSTACK_REGION, KSTACK_SIZE,
    KSTACK_STRIDE, USER_IMAGE_BASE,
};
use lazarus_dump::{CrashNote, DumpInput, FORMAT_VERSION, GuestRecord, Memory, Regs, VcpuState};
use lazarus_guestmem::test_util::TableBuilder;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
    let mut seeds: Vec<(&str, String, Vec<u8>)> = Vec::new();
    for (name, req) in requests() {
        seeds.push(("api", name.to_string(), req));
    }
    // Seeds that are meant to be valid are, so the fuzzer starts past
    // every check.
    for (name, data) in kernels() {
        if let Err(e) = lazarus_vmm::loader::KernelImage::parse(&data) {
            panic!("kernel seed {name}: {e}");
        }
        seeds.push(("elf", name.to_string(), data));
    }
    for (name, data) in archives() {
        let checked = lazarus_image::check_initramfs(&data);
        assert!(checked.is_ok() || name == "no-init", "{name}: {checked:?}");
        let modules = lazarus_symbols::initramfs_modules(&data).expect("modules");
        assert_eq!(modules.len(), 1, "{name}");
        seeds.push(("cpio", name.to_string(), data));
    }
    for (name, data) in dumps() {
        if let Err(e) = lazarus_dump::Dump::from_bytes(data.clone()) {
            panic!("dump seed {name}: {e}");
        }
        seeds.push(("dump", name.to_string(), data));
    }
    for target in ["hypercall", "serial"] {
        seeds.push((target, "empty".to_string(), Vec::new()));
    }
    for (target, name, data) in seeds {
        let run = lazarus_fuzz_harness::TARGETS
            .iter()
            .find(|t| t.name == target)
            .expect("a target")
            .run;
        run(&data);
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).expect("corpus directory");
        let path: PathBuf = dir.join(format!("seed-{name}"));
        std::fs::write(&path, &data).expect("write seed");
        println!("{} ({} bytes)", path.display(), data.len());
    }
}

/// API requests: a read size of 0 (all at once) or 1, the default limits,
/// then the request.
fn requests() -> Vec<(&'static str, Vec<u8>)> {
    let reqs: &[(&str, u8, &str)] = &[
        ("get-root", 0, "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"),
        ("get-vm", 1, "GET /vm?x=1 HTTP/1.1\r\n\r\n"),
        ("get-recoveries", 0, "GET /recoveries HTTP/1.0\r\n\r\n"),
        ("get-crashes", 0, "GET /crashes HTTP/1.1\r\n\r\n"),
        ("get-metrics", 0, "GET /metrics HTTP/1.1\r\n\r\n"),
        (
            "pause",
            0,
            "PATCH /vm HTTP/1.1\r\nContent-Length: 18\r\n\r\n{\"state\":\"Paused\"}",
        ),
        (
            "resume",
            3,
            "PATCH /vm HTTP/1.1\r\nContent-Length: 19\r\n\r\n{\"state\":\"Resumed\"}",
        ),
        (
            "inject",
            0,
            "PUT /inject HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 48\r\n\r\n{\"fault\":\"bit-flip\",\"ext\":\"crashtest\",\"seed\":7}",
        ),
        (
            "inject-struct",
            0,
            "PUT /inject HTTP/1.1\r\nContent-Length: 57\r\n\r\n{\"fault\":\"wild-write-struct\",\"structure\":\"x\",\"kind\":\"y\"}",
        ),
        (
            "dump-continue",
            0,
            "PUT /dump HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 16\r\n\r\n{\"reason\":\"why\"}",
        ),
        ("dump-empty", 0, "PUT /dump HTTP/1.1\r\n\r\n"),
        ("delete", 0, "DELETE /vm HTTP/1.1\r\n\r\n"),
        ("not-found", 0, "GET /nope HTTP/1.1\r\n\r\n"),
        (
            "chunked",
            0,
            "PUT /inject HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ),
        (
            "two-lengths",
            0,
            "PUT /dump HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        ),
    ];
    reqs.iter()
        .map(|(name, chunk, text)| {
            let mut data = vec![*chunk, 0];
            data.extend_from_slice(text.as_bytes());
            (*name, data)
        })
        .collect()
}

/// An x86-64 `ET_EXEC` ELF with `PT_LOAD` segments of (`vaddr`, `paddr`,
/// contents, `memsz`), entry at `entry`.
fn elf(entry: u64, segments: &[(u64, u64, &[u8], u64)]) -> Vec<u8> {
    let phoff = 64usize;
    let mut data_off = phoff + 56 * segments.len();
    let mut out = vec![0u8; data_off];
    out[..4].copy_from_slice(b"\x7fELF");
    out[4] = 2;
    out[5] = 1;
    out[6] = 1;
    out[16..18].copy_from_slice(&2u16.to_le_bytes());
    out[18..20].copy_from_slice(&62u16.to_le_bytes());
    out[20..24].copy_from_slice(&1u32.to_le_bytes());
    out[24..32].copy_from_slice(&entry.to_le_bytes());
    out[32..40].copy_from_slice(&(phoff as u64).to_le_bytes());
    out[52..54].copy_from_slice(&64u16.to_le_bytes());
    out[54..56].copy_from_slice(&56u16.to_le_bytes());
    out[56..58].copy_from_slice(&(segments.len() as u16).to_le_bytes());
    let mut contents = Vec::new();
    for (i, (vaddr, paddr, bytes, memsz)) in segments.iter().enumerate() {
        let ph = phoff + 56 * i;
        let fields: [u64; 6] = [
            data_off as u64,
            *vaddr,
            *paddr,
            bytes.len() as u64,
            *memsz,
            0x1000,
        ];
        out[ph..ph + 4].copy_from_slice(&1u32.to_le_bytes());
        out[ph + 4..ph + 8].copy_from_slice(&7u32.to_le_bytes());
        for (j, v) in fields.iter().enumerate() {
            out[ph + 8 + 8 * j..ph + 16 + 8 * j].copy_from_slice(&v.to_le_bytes());
        }
        contents.extend_from_slice(bytes);
        data_off += bytes.len();
    }
    out.extend(contents);
    out
}

fn kernels() -> Vec<(&'static str, Vec<u8>)> {
    let p = KERNEL_PHYS_BASE;
    let v = KERNEL_VIRT_BASE + p;
    let code: &[u8] = &[0xfa, 0xf4, 0xeb, 0xfd];
    vec![
        ("kernel-one-segment", elf(v, &[(v, p, code, 0x2000)])),
        (
            "kernel-two-segments",
            elf(
                v + 0x1000,
                &[
                    (v, p, code, 0x1000),
                    (v + 0x1000, p + 0x1000, b"data", 0x3000),
                ],
            ),
        ),
    ]
}

/// One newc entry.
fn entry(name: &str, data: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
        1,
        0o100755,
        0,
        0,
        1,
        0,
        data.len(),
        0,
        0,
        0,
        0,
        name.len() + 1,
        0
    )
    .into_bytes();
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    out.resize(out.len().next_multiple_of(4), 0);
    out.extend_from_slice(data);
    out.resize(out.len().next_multiple_of(4), 0);
    out
}

fn archives() -> Vec<(&'static str, Vec<u8>)> {
    let init = elf(
        USER_IMAGE_BASE,
        &[(USER_IMAGE_BASE, USER_IMAGE_BASE, &[0xeb, 0xfe], 0x1000)],
    );
    let module = elf(0, &[(0, 0, b"\x90\xc3", 0x1000)]);
    let mut whole = entry("init", &init);
    whole.extend(entry("bin/sh", b"#!"));
    whole.extend(entry("ext/rand.ko", &module));
    whole.extend(entry("TRAILER!!!", b""));
    let mut no_init = entry("ext/x.ko", &module);
    no_init.extend(entry("TRAILER!!!", b""));
    vec![("initramfs", whole), ("no-init", no_init)]
}

fn dumps() -> Vec<(&'static str, Vec<u8>)> {
    // 16 KiB of RAM, the page tables at BOOT_PML4_GPA mapping one page
    // (the last table itself) at the extension region and in user space,
    // through tables they share: small, and a walk worth mutating.
    let mut ram = vec![0u8; 16 << 10];
    {
        let mut b = TableBuilder {
            ram: &mut ram,
            next: 0,
        };
        let (pdpt, pd, pt) = (0x0, 0x1000, 0x3000);
        let index = |va: u64, level: u32| (va >> (12 + 9 * level)) & 0x1ff;
        for va in [EXT_REGION, USER_IMAGE_BASE] {
            b.set(BOOT_PML4_GPA + index(va, 3) * 8, pdpt | 7);
            b.set(pdpt + index(va, 2) * 8, pd | 7);
            b.set(pd + index(va, 1) * 8, pt | 7);
            b.set(pt + index(va, 0) * 8, pt | 7);
        }
    }
    let stack_va = KSTACK_REGION + KSTACK_STRIDE - KSTACK_SIZE;
    let regs = Regs {
        rip: EXT_REGION + 0x10,
        rsp: stack_va + 0x800,
        cr3: BOOT_PML4_GPA,
        ..Regs::default()
    };
    let note = CrashNote {
        format_version: FORMAT_VERSION,
        lazarus_version: "0.1.0".into(),
        time_unix_ms: 1,
        boot_id: "b".into(),
        detector: "pvpanic".into(),
        detail: "oops".into(),
        crashed_vcpu: 0,
        root_gpa: Some(0x3800),
        kernel_build_id: None,
        extensions: Vec::new(),
        guest_record: Some(GuestRecord {
            seq: 1,
            kind: 1,
            vector: 14,
            error_code: 2,
            cr2: 0,
            pid: 1,
            ext: 0,
            in_irq: 0,
            message: "page fault".into(),
            frame: regs.clone(),
        }),
        vcpus: vec![
            VcpuState {
                id: 0,
                regs: regs.clone(),
            },
            VcpuState { id: 1, regs },
        ],
    };
    let tables = write_dump(&ram, note.clone());
    // Only some ranges captured (as a crash snapshot is): the tables, and
    // half of the boot page.
    let captured = write_dump_of(
        Memory::Captured {
            ram_size: ram.len() as u64,
            ranges: vec![(0, &ram[..0x1000]), (0x3000, &ram[0x3000..])],
        },
        note.clone(),
    );
    let bare = write_dump(
        &[0u8; 4096],
        CrashNote {
            guest_record: None,
            vcpus: Vec::new(),
            root_gpa: None,
            ..note
        },
    );
    vec![("tables", tables), ("captured", captured), ("bare", bare)]
}

fn write_dump(ram: &[u8], note: CrashNote) -> Vec<u8> {
    write_dump_of(Memory::Ram(ram), note)
}

fn write_dump_of(memory: Memory, note: CrashNote) -> Vec<u8> {
    let dir = std::env::temp_dir().join(format!("lazarus-seeds-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("seed.core");
    let input = DumpInput { memory, note };
    lazarus_dump::write_core(&path, &input).expect("write_core");
    let data = std::fs::read(&path).expect("read dump");
    let _ = std::fs::remove_dir_all(&dir);
    data
}
