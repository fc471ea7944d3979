//! The kernel ELF loader (`KernelImage::parse`, then `check_fits` and
//! `load` into guest RAM) on any file given as `--kernel`.
//!
//! A parsed image must be consistent (its entry point inside its
//! segments, every segment past the boot area) and must load into RAM
//! that just holds it; that RAM is only made for images that end below
//! [`MAX_LOAD`], to keep each run cheap.

use lazarus_abi::layout::{BOOT_RESERVED_END, kernel_virt_to_phys};
use lazarus_vmm::loader::{KernelImage, initramfs_placement};
use lazarus_vmm::memory::GuestRam;
use vm_memory::GuestAddress;

/// Largest physical end of an image the harness loads into RAM.
const MAX_LOAD: u64 = 2 << 20;

/// Runs one input.
pub fn run(data: &[u8]) {
    let image = match KernelImage::parse(data) {
        Ok(image) => image,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    assert!(image.phys_start >= BOOT_RESERVED_END, "{image:?}");
    assert!(image.phys_start < image.phys_end, "{image:?}");
    let entry = kernel_virt_to_phys(image.entry);
    assert!(
        entry.is_some_and(|p| (image.phys_start..image.phys_end).contains(&p)),
        "entry outside the image: {image:?}"
    );
    assert!(image.check_fits(image.phys_end).is_ok());
    assert!(image.check_fits(image.phys_end - 1).is_err());
    // The initramfs goes after the kernel, or nowhere.
    let _ = initramfs_placement(image.phys_end, data.len() as u64, u64::MAX);
    let _ = initramfs_placement(image.phys_end, u64::MAX, u64::MAX);

    if image.phys_end > MAX_LOAD {
        return;
    }
    let size = image.phys_end.next_multiple_of(4096);
    let Ok(len) = usize::try_from(size) else {
        return;
    };
    let mem = match GuestRam::from_ranges(&[(GuestAddress(0), len)]) {
        Ok(mem) => mem,
        Err(e) => panic!("cannot allocate {len} bytes of guest RAM: {e}"),
    };
    if let Err(e) = image.load(&mem) {
        panic!("an image that fits does not load: {e}");
    }
}
