//! Reading the boot initramfs on the host (to find the extensions whose
//! symbols a dump may need).

use std::io::Read;

/// Every `ext/NAME.ko` in a cpio (newc) archive, as (NAME, ELF bytes).
/// A malformed archive yields what could be read before the damage.
pub fn extensions(archive: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut rest: &[u8] = archive;
    loop {
        let Ok(mut entry) = cpio::NewcReader::new(rest) else {
            break;
        };
        if entry.entry().is_trailer() {
            break;
        }
        let name = entry.entry().name().to_string();
        let mut data = Vec::new();
        if entry.read_to_end(&mut data).is_err() {
            break;
        }
        if let Some(ext) = name
            .strip_prefix("ext/")
            .and_then(|n| n.strip_suffix(".ko"))
        {
            out.push((ext.to_string(), data));
        }
        match entry.finish() {
            Ok(r) => rest = r,
            Err(_) => break,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_the_builtin_extensions() {
        let exts = super::extensions(lazarus_image::INITRAMFS);
        let names: Vec<&str> = exts.iter().map(|(n, _)| n.as_str()).collect();
        for want in ["rand", "ramdisk", "crashtest"] {
            assert!(names.contains(&want), "{names:?}");
        }
        assert!(exts.iter().all(|(_, d)| d.starts_with(b"\x7fELF")));
    }

    #[test]
    fn garbage_is_not_an_archive() {
        assert!(super::extensions(b"not a cpio archive at all").is_empty());
        assert!(super::extensions(&lazarus_image::INITRAMFS[..200]).is_empty());
    }
}
