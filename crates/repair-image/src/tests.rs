use super::*;

/// Walks the image's page tables like the MMU.
fn translate(img: &RepairImage, va: u64) -> Option<u64> {
    let bytes = img.bytes();
    let mut table = img.cr3();
    for level in (0..4).rev() {
        let off = (table - SLOT_GPA) as usize + ((va >> (12 + 9 * level)) & 0x1ff) as usize * 8;
        let e = u64::from_le_bytes(bytes[off..off + 8].try_into().ok()?);
        if e & 1 == 0 || e & 4 == 0 {
            return None;
        }
        let addr = e & 0x000f_ffff_ffff_f000;
        if level == 0 {
            return Some(addr + (va & 0xfff));
        }
        if e & 0x80 != 0 {
            let size = 1u64 << (12 + 9 * level);
            return Some((addr & !(size - 1)) + (va & (size - 1)));
        }
        table = addr;
    }
    None
}

/// The real repair program, built by lazarus-image.
const PROGRAM: &[u8] = lazarus_image::REPAIR_ELF;

fn image() -> RepairImage {
    RepairImage::new(PROGRAM, 128 << 20).expect("image")
}

#[test]
fn page_tables_map_image_doorbell_and_ram() {
    let img = image();
    assert_eq!(translate(&img, IMAGE_VA), Some(SLOT_GPA));
    assert_eq!(
        translate(&img, IMAGE_VA + SLOT_SIZE - 1),
        Some(SLOT_GPA + SLOT_SIZE - 1)
    );
    assert_eq!(translate(&img, DOORBELL_VA), Some(DOORBELL_GPA));
    assert_eq!(translate(&img, RAM_VA), Some(0));
    assert_eq!(
        translate(&img, RAM_VA + (128 << 20) - 8),
        Some((128 << 20) - 8)
    );
    assert_eq!(
        translate(&img, RAM_VA + (128 << 20)),
        None,
        "nothing past RAM"
    );
    assert_eq!(translate(&img, 0), None, "no null page");
    let (entry, stack) = img.entry();
    assert!(translate(&img, entry).is_some() && translate(&img, stack - 8).is_some());
}

#[test]
fn pristine_copies_are_laid_out_with_checksums() {
    let mut img = image();
    let kernel = PristineSource::kernel(0xffff_ffff_8010_0000, vec![0x90; 10_000]);
    let ext = PristineSource {
        ext_slot: 2,
        va: 0xffff_ffff_c200_0000,
        code_len: 100,
        bytes: vec![7; 300],
        symbols: Vec::new(),
    };
    img.set_pristine(&[kernel, ext]).expect("fits");
    img.prepare(RepairInput::default());
    let input = RepairInput::read_from_bytes(
        &img.bytes()[INPUT_OFFSET as usize..][..core::mem::size_of::<RepairInput>()],
    )
    .expect("input");
    let k = input.pristine[0];
    assert!(k.kernel() && k.len == 10_000 && k.code_len == 10_000);
    assert_eq!(k.checksum, fnv1a(&[0x90; 10_000]));
    assert_eq!(&img.bytes()[k.image_offset as usize..][..4], &[0x90; 4]);
    let e = input.pristine[1];
    assert_eq!(
        (e.ext_slot, e.code_len, e.checksum),
        (2, 100, fnv1a(&[7; 100]))
    );
    assert!(img.size().total <= 2 << 20, "{:?}", img.size());
    assert_eq!(img.generation(), 1);
}

#[test]
fn too_much_pristine_code_is_an_error() {
    let mut img = image();
    let huge = PristineSource::kernel(0, vec![0; SLOT_SIZE as usize]);
    assert!(matches!(
        img.set_pristine(&[huge]),
        Err(ImageError::NoRoom { .. })
    ));
}

#[test]
fn bad_inputs_are_errors() {
    assert!(RepairImage::new(b"not an elf", 128 << 20).is_err());
    assert!(
        RepairImage::new(PROGRAM, 3 << 20).is_err(),
        "not 2 MiB aligned"
    );
    assert!(RepairImage::new(PROGRAM, 8 << 30).is_err(), "too big");
}

#[test]
fn symbols_are_sorted_bounded_and_named() {
    let mut img = image();
    let mut kernel = PristineSource::kernel(0xffff_ffff_8010_0000, vec![0x90; 0x1000]);
    kernel.symbols = vec![
        SymbolSource {
            addr: 0xffff_ffff_8010_0200,
            size: 0x40,
            name: "lazarus_kernel::b".into(),
        },
        SymbolSource {
            addr: 0xffff_ffff_8010_0100,
            size: 0x80,
            name: "lazarus_kernel::a".into(),
        },
        // Outside the copy's code: dropped.
        SymbolSource {
            addr: 0xffff_ffff_8020_0000,
            size: 8,
            name: "elsewhere".into(),
        },
    ];
    let ext = PristineSource {
        ext_slot: 0,
        va: 0xffff_ffff_c000_0000,
        code_len: 0x100,
        bytes: vec![0xcc; 0x1000],
        symbols: vec![SymbolSource {
            addr: 0xffff_ffff_c000_0010,
            size: 0x20,
            name: format!("crashtest::{}", "x".repeat(200)),
        }],
    };
    img.set_pristine(&[kernel, ext]).expect("fits");
    let h = RepairHeader::read_from_bytes(
        &img.bytes()[MAILBOX_OFFSET as usize..][..core::mem::size_of::<RepairHeader>()],
    )
    .expect("header");
    assert_eq!(h.symbol_count, 3);
    assert_eq!(img.size().symbol_count, 3);
    let syms: Vec<ImageSymbol> = (0..3)
        .map(|i| {
            let off = h.symbols_offset as usize + i * core::mem::size_of::<ImageSymbol>();
            ImageSymbol::read_from_bytes(&img.bytes()[off..][..core::mem::size_of::<ImageSymbol>()])
                .expect("symbol")
        })
        .collect();
    let name = |s: &ImageSymbol| {
        let off = h.names_offset as usize + s.name_off as usize;
        String::from_utf8(img.bytes()[off..][..s.name_len as usize].to_vec()).expect("utf-8")
    };
    assert!(syms.windows(2).all(|w| w[0].addr < w[1].addr), "{syms:?}");
    assert_eq!(name(&syms[0]), "lazarus_kernel::a");
    assert_eq!(name(&syms[1]), "lazarus_kernel::b");
    assert_eq!(syms[2].addr, 0xffff_ffff_c000_0010);
    assert_eq!(name(&syms[2]).len(), SYMBOL_NAME_MAX);
    assert!(h.names_offset + u64::from(h.names_len) <= SLOT_SIZE);
}
