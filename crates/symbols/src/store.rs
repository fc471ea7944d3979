//! The on-disk store: `DIR/<build-id>.elf`, plus `DIR/<build-id>.name`
//! holding the module's name.

use std::io::Read;
use std::path::{Path, PathBuf};

use object::{Object, ObjectKind};

use crate::error::SymbolError;
use crate::symbolizer::Symbolizer;

/// Longest build id we accept (SHA-1 ids are 40 hex digits; leave room
/// for other linkers' choices).
const MAX_BUILD_ID_HEX: usize = 128;

/// Whether `id` looks like a build id: lowercase hex, bounded length. Ids
/// come from dump files, so this also keeps them from naming other paths.
pub fn is_build_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_BUILD_ID_HEX
        && id
            .bytes()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
}

/// The GNU build id of an ELF file, as lowercase hex.
pub fn build_id_of(elf: &[u8]) -> Option<String> {
    let file = object::File::parse(elf).ok()?;
    let id = file.build_id().ok()??;
    if id.is_empty() {
        return None;
    }
    Some(id.iter().map(|b| format!("{b:02x}")).collect())
}

/// The build id of an ELF image as the guest loaded it: segments at
/// `p_vaddr` from the load base, the ELF and program headers included in
/// the first one (as the kernel's extension loader places a module).
/// `read(offset, buf)` reads image bytes relative to the load base and
/// returns false where it cannot. Everything read is bounds-checked: the
/// image comes from a crashed guest.
pub fn build_id_of_loaded(mut read: impl FnMut(u64, &mut [u8]) -> bool) -> Option<String> {
    use object::elf::{FileHeader64, NT_GNU_BUILD_ID, PT_NOTE};
    use object::read::elf::{FileHeader as _, NoteIterator, ProgramHeader as _};
    const MAX_HEADERS: u64 = 16 * 1024;
    const MAX_NOTE: u64 = 4096;
    let e = object::LittleEndian;
    let mut ehdr = [0u8; 64];
    if !read(0, &mut ehdr) {
        return None;
    }
    let header = FileHeader64::<object::LittleEndian>::parse(&ehdr[..]).ok()?;
    let need = header
        .e_phoff(e)
        .checked_add(u64::from(header.e_phnum(e)) * u64::from(header.e_phentsize(e)))?;
    if need > MAX_HEADERS {
        return None;
    }
    let mut head = vec![0u8; need as usize];
    if !read(0, &mut head) {
        return None;
    }
    let header = FileHeader64::<object::LittleEndian>::parse(&*head).ok()?;
    for ph in header.program_headers(e, &*head).ok()? {
        if ph.p_type(e) != PT_NOTE || ph.p_filesz(e) > MAX_NOTE {
            continue;
        }
        let mut notes = vec![0u8; ph.p_filesz(e) as usize];
        if !read(ph.p_vaddr(e), &mut notes) {
            continue;
        }
        let Ok(mut iter) =
            NoteIterator::<FileHeader64<object::LittleEndian>>::new(e, ph.p_align(e), &notes)
        else {
            continue;
        };
        while let Ok(Some(note)) = iter.next() {
            if note.name() == b"GNU" && note.n_type(e) == NT_GNU_BUILD_ID && !note.desc().is_empty()
            {
                return Some(note.desc().iter().map(|b| format!("{b:02x}")).collect());
            }
        }
    }
    None
}

/// A kernel extension found in an initramfs.
#[derive(Clone, Debug)]
pub struct Module {
    /// `NAME` of `ext/NAME.ko`, as the kernel loads it.
    pub name: String,
    /// Its GNU build id (lowercase hex), if it has one.
    pub build_id: Option<String>,
    /// The ELF file's bytes.
    pub elf: Vec<u8>,
}

/// The extensions (`ext/NAME.ko`) packed in a cpio (newc) initramfs.
pub fn initramfs_modules(cpio: &[u8]) -> Result<Vec<Module>, SymbolError> {
    let mut out = Vec::new();
    let mut rest = cpio;
    loop {
        let mut reader = cpio::NewcReader::new(rest).map_err(SymbolError::Initramfs)?;
        if reader.entry().is_trailer() {
            break;
        }
        let path = reader
            .entry()
            .name()
            .trim_start_matches("./")
            .trim_start_matches('/');
        let name = path
            .strip_prefix("ext/")
            .and_then(|n| n.strip_suffix(".ko"))
            .filter(|n| !n.is_empty() && !n.contains('/'))
            .map(str::to_string);
        if let Some(name) = name {
            let mut elf = Vec::new();
            reader
                .read_to_end(&mut elf)
                .map_err(SymbolError::Initramfs)?;
            out.push(Module {
                name,
                build_id: build_id_of(&elf),
                elf,
            });
        }
        rest = reader.finish().map_err(SymbolError::Initramfs)?;
    }
    Ok(out)
}

/// How much an ELF file says about its code, compared lexicographically:
/// DWARF first (file, line, inlined functions), then the functions in its
/// symbol table, then the size of its debug info.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Richness {
    /// It has DWARF debug info.
    pub debug_info: bool,
    /// Symbols in its symbol table.
    pub symbols: usize,
    /// Bytes of `.debug_info`.
    pub debug_bytes: u64,
}

impl Richness {
    /// Of the ELF file `elf`; `None` if it does not parse.
    pub fn of(elf: &[u8]) -> Option<Richness> {
        object::File::parse(elf).ok().map(|f| Self::of_file(&f))
    }

    fn of_file(file: &object::File<'_>) -> Richness {
        use object::ObjectSection;
        let debug_bytes = file.section_by_name(".debug_info").map_or(0, |s| s.size());
        Richness {
            debug_info: debug_bytes > 0,
            symbols: file.symbols().count(),
            debug_bytes,
        }
    }
}

/// ELF files by build id in one directory.
#[derive(Clone, Debug)]
pub struct SymbolStore {
    dir: PathBuf,
}

impl SymbolStore {
    /// A store in `dir` (created on the first [`SymbolStore::add`]).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        SymbolStore { dir: dir.into() }
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, build_id: &str, ext: &str) -> Option<PathBuf> {
        let id = build_id.to_ascii_lowercase();
        is_build_id(&id).then(|| self.dir.join(format!("{id}.{ext}")))
    }

    /// Stores an ELF file under its build id and returns the id. The same
    /// id means the same code, but not the same symbols: `strip` keeps the
    /// build id. So a file replaces the one stored under its id only when
    /// it has more to say ([`Richness`]): a stripped or symbol-less copy
    /// never replaces a richer one, and a full copy heals a store that got
    /// the stripped one first. Files appear atomically (write, then
    /// rename).
    pub fn add(&self, elf: &[u8], name: &str) -> Result<String, SymbolError> {
        let file = object::File::parse(elf).map_err(|e| SymbolError::NotElf(e.to_string()))?;
        if file.kind() == ObjectKind::Unknown {
            return Err(SymbolError::NotElf("unknown object kind".into()));
        }
        let id = build_id_of(elf).ok_or(SymbolError::NoBuildId)?;
        let (Some(elf_path), Some(name_path)) = (self.path(&id, "elf"), self.path(&id, "name"))
        else {
            return Err(SymbolError::NoBuildId);
        };
        if elf_path.is_file() {
            // An unreadable or unparsable stored file is replaced.
            let stored = std::fs::read(&elf_path)
                .ok()
                .and_then(|old| Richness::of(&old));
            if stored.is_some_and(|old| Richness::of_file(&file) <= old) {
                return Ok(id);
            }
        }
        std::fs::create_dir_all(&self.dir).map_err(SymbolError::io(&self.dir))?;
        write_atomic(&name_path, format!("{name}\n").as_bytes())?;
        write_atomic(&elf_path, elf)?;
        Ok(id)
    }

    /// Adds every extension of an initramfs; returns what it found.
    pub fn add_initramfs(&self, cpio: &[u8]) -> Result<Vec<Module>, SymbolError> {
        let modules = initramfs_modules(cpio)?;
        for m in &modules {
            if m.build_id.is_some() {
                self.add(&m.elf, &m.name)?;
            }
        }
        Ok(modules)
    }

    /// The stored ELF file of `build_id`, if present.
    pub fn find(&self, build_id: &str) -> Option<PathBuf> {
        self.path(build_id, "elf").filter(|p| p.is_file())
    }

    /// The module name stored with `build_id`.
    pub fn name(&self, build_id: &str) -> Option<String> {
        let text = std::fs::read_to_string(self.path(build_id, "name")?).ok()?;
        Some(text.trim().to_string()).filter(|n| !n.is_empty())
    }

    /// A symbolizer for `build_id`: `Ok(None)` when the store lacks it.
    pub fn symbolizer(&self, build_id: &str) -> Result<Option<Symbolizer>, SymbolError> {
        match self.find(build_id) {
            Some(path) => Symbolizer::open(&path).map(Some),
            None => Ok(None),
        }
    }
}

fn write_atomic(path: &Path, data: &[u8]) -> Result<(), SymbolError> {
    let mut tmp = path.as_os_str().to_os_string();
    tmp.push(format!(".tmp{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, data).map_err(SymbolError::io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        SymbolError::io(path)(e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_id_validation() {
        assert!(is_build_id("0123456789abcdef"));
        for bad in ["", "ABC", "../etc/passwd", "12 34", &"a".repeat(200)] {
            assert!(!is_build_id(bad), "{bad}");
        }
    }

    #[test]
    fn stores_the_kernel_and_extensions_by_build_id() {
        let dir = tempfile::tempdir().unwrap();
        let store = SymbolStore::new(dir.path().join("symbols"));
        let kernel = lazarus_image::KERNEL_ELF;
        let id = build_id_of(kernel).expect("the kernel has a build id");
        assert_eq!(id.len(), 40, "sha1 build id: {id}");
        assert!(store.find(&id).is_none());
        assert_eq!(store.add(kernel, "kernel").unwrap(), id);
        assert_eq!(store.add(kernel, "kernel").unwrap(), id);
        assert!(
            std::fs::read(store.find(&id).unwrap()).unwrap() == kernel,
            "the stored file is not `kernel`"
        );
        assert_eq!(store.find(&id.to_uppercase()), store.find(&id));
        assert_eq!(store.name(&id).as_deref(), Some("kernel"));
        assert!(store.find("../../x").is_none());

        let modules = store.add_initramfs(lazarus_image::INITRAMFS).unwrap();
        let names: Vec<&str> = modules.iter().map(|m| m.name.as_str()).collect();
        for want in ["rand", "ramdisk", "crashtest"] {
            assert!(names.contains(&want), "{names:?}");
        }
        for m in &modules {
            let id = m.build_id.as_deref().expect("extension build id");
            assert_eq!(store.name(id).as_deref(), Some(m.name.as_str()));
        }
        // Only the stored files, no temporaries left behind.
        let files = std::fs::read_dir(store.dir()).unwrap().count();
        assert_eq!(files, 2 * (1 + modules.len()));
    }

    #[test]
    fn build_id_of_a_loaded_image() {
        let modules = initramfs_modules(lazarus_image::INITRAMFS).unwrap();
        let m = modules.iter().find(|m| m.name == "crashtest").unwrap();
        // Lay the module out as the kernel's loader does.
        let file = object::File::parse(&*m.elf).unwrap();
        let mut image = vec![0u8; 1 << 20];
        for seg in object::Object::segments(&file) {
            use object::ObjectSegment;
            let data = seg.data().unwrap();
            let at = seg.address() as usize;
            image[at..at + data.len()].copy_from_slice(data);
        }
        let read = |off: u64, buf: &mut [u8]| {
            let at = off as usize;
            match image.get(at..at + buf.len()) {
                Some(src) => {
                    buf.copy_from_slice(src);
                    true
                }
                None => false,
            }
        };
        assert_eq!(build_id_of_loaded(read), m.build_id);
        assert_eq!(build_id_of_loaded(|_, _| false), None);
        assert_eq!(
            build_id_of_loaded(|_, b| {
                b.fill(0xff);
                true
            }),
            None
        );
    }

    /// The real kernel run through binutils (`strip`, `objcopy`): the
    /// build id survives, the symbols do not.
    fn binutils(tool: &str, args: &[&str], dir: &Path) -> Vec<u8> {
        let input = dir.join("kernel.elf");
        std::fs::write(&input, lazarus_image::KERNEL_ELF).unwrap();
        let output = dir.join(format!("kernel-{tool}.elf"));
        // `strip [-o OUT] IN`, `objcopy IN OUT`.
        let mut cmd = std::process::Command::new(tool);
        cmd.args(args);
        if tool == "strip" {
            cmd.arg("-o").arg(&output).arg(&input);
        } else {
            cmd.arg(&input).arg(&output);
        }
        let status = cmd.status().unwrap_or_else(|e| {
            panic!("cannot run {tool} ({e}): install binutils (scripts/setup.sh does)")
        });
        assert!(status.success(), "{tool} {args:?} failed");
        std::fs::read(&output).unwrap()
    }

    #[test]
    fn a_stripped_kernel_never_replaces_the_full_one() {
        let dir = tempfile::tempdir().unwrap();
        let full = lazarus_image::KERNEL_ELF;
        let stripped = binutils("strip", &[], dir.path());
        let no_debug = binutils("objcopy", &["--strip-debug"], dir.path());
        let id = build_id_of(full).unwrap();
        // What makes the poisoning possible: the build id survives.
        assert_eq!(build_id_of(&stripped).as_deref(), Some(id.as_str()));
        assert_eq!(build_id_of(&no_debug).as_deref(), Some(id.as_str()));
        assert!(stripped.len() < full.len() / 2);
        let full_r = Richness::of(full).unwrap();
        assert!(Richness::of(&no_debug).unwrap() < full_r);
        assert!(Richness::of(&stripped).unwrap() < Richness::of(&no_debug).unwrap());

        let trap_dispatch = |store: &SymbolStore| {
            let file = object::File::parse(full).unwrap();
            let sym = object::Object::symbols(&file)
                .find(|s| object::ObjectSymbol::name(s) == Ok("trap_dispatch"))
                .unwrap();
            store
                .symbolizer(&id)
                .unwrap()
                .unwrap()
                .lookup(object::ObjectSymbol::address(&sym) + 4)
        };

        // The full kernel first: neither lesser copy replaces it.
        let store = SymbolStore::new(dir.path().join("a"));
        store.add(full, "kernel").unwrap();
        assert_eq!(store.add(&stripped, "kernel").unwrap(), id);
        assert_eq!(store.add(&no_debug, "kernel").unwrap(), id);
        assert!(
            std::fs::read(store.find(&id).unwrap()).unwrap() == full,
            "the stored file is not `full`"
        );
        let hit = trap_dispatch(&store).expect("symbolized");
        assert_eq!(hit.function, "trap_dispatch");
        assert!(hit.line.is_some());

        // The stripped kernel first (a poisoned store): a richer copy
        // replaces it, the full one replaces that.
        let store = SymbolStore::new(dir.path().join("b"));
        store.add(&stripped, "kernel").unwrap();
        assert!(
            trap_dispatch(&store).is_none(),
            "a stripped kernel names nothing"
        );
        store.add(&no_debug, "kernel").unwrap();
        assert!(
            std::fs::read(store.find(&id).unwrap()).unwrap() == no_debug,
            "the stored file is not `no_debug`"
        );
        assert_eq!(trap_dispatch(&store).unwrap().function, "trap_dispatch");
        store.add(full, "kernel").unwrap();
        assert!(
            std::fs::read(store.find(&id).unwrap()).unwrap() == full,
            "the stored file is not `full`"
        );
        assert!(trap_dispatch(&store).unwrap().line.is_some());
        // Only the stored files, no temporaries left behind.
        assert_eq!(std::fs::read_dir(store.dir()).unwrap().count(), 2);

        // A damaged stored file is replaced by any good copy.
        let store = SymbolStore::new(dir.path().join("c"));
        store.add(full, "kernel").unwrap();
        std::fs::write(store.find(&id).unwrap(), b"damaged").unwrap();
        store.add(&stripped, "kernel").unwrap();
        assert!(
            std::fs::read(store.find(&id).unwrap()).unwrap() == stripped,
            "the stored file is not `stripped`"
        );
    }

    #[test]
    fn rejects_what_is_not_an_elf_with_a_build_id() {
        let dir = tempfile::tempdir().unwrap();
        let store = SymbolStore::new(dir.path());
        assert!(matches!(
            store.add(b"hello", "x"),
            Err(SymbolError::NotElf(_))
        ));
        assert!(build_id_of(b"\x7fELF").is_none());
        assert!(matches!(
            initramfs_modules(b"070701garbage"),
            Err(SymbolError::Initramfs(_))
        ));
        assert!(initramfs_modules(b"").is_err());
    }
}
