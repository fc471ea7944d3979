//! The two readers of an initramfs given with `--initramfs`: the boot
//! check (`lazarus_image::check_initramfs`, the guest kernel's rules for a
//! newc archive and its `/init`) and the symbol store's search for
//! extension modules (`lazarus_symbols::initramfs_modules`, on the `cpio`
//! crate). Both must return, with a typed error on anything malformed.

/// Runs one input.
pub fn run(data: &[u8]) {
    let checked = lazarus_image::check_initramfs(data);
    if let Err(e) = &checked {
        // Every error can be reported.
        let _ = e.to_string();
    }
    match lazarus_symbols::initramfs_modules(data) {
        Ok(modules) => {
            for m in modules {
                assert!(
                    m.elf.len() <= data.len(),
                    "a module larger than the archive"
                );
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}
