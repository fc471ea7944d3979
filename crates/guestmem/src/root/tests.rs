use std::string::ToString;
use std::vec;
use std::vec::Vec;

use lazarus_abi::root::CRASH_OOPS;

use super::*;

const RAM: u64 = 4 << 20;
const GPA: u64 = 0x10_0000;

fn put<T: IntoBytes + zerocopy::Immutable>(ram: &mut [u8], at: u64, v: T) {
    let b = v.as_bytes();
    ram[at as usize..at as usize + b.len()].copy_from_slice(b);
}

/// RAM with a valid root header at `gpa`.
fn plant(ram: &mut [u8], gpa: u64) {
    put(ram, gpa, ROOT_MAGIC);
    put(ram, gpa + 8, ABI_VERSION);
    put(ram, gpa + 12, ROOT_SIZE as u32);
    put(
        ram,
        gpa + offset_of!(KernelRoot, header.heartbeat) as u64,
        42u64,
    );
    let crash = gpa + offset_of!(KernelRoot, crash) as u64;
    put(
        ram,
        crash + offset_of!(CrashRecord, kind) as u64,
        CRASH_OOPS,
    );
}

/// A heap-backed root to read into (it is too big for a test's stack).
fn root_buf() -> Vec<u64> {
    vec![0u64; (ROOT_SIZE as usize).div_ceil(8)]
}

#[test]
fn header_checks() {
    let mut ram = vec![0u8; RAM as usize];
    let v = u64::from(ABI_VERSION);
    plant(&mut ram, GPA);
    let mem = &ram[..];
    assert_eq!(check_root_header(mem, GPA), Ok(()));
    assert_eq!(validate_root(mem, GPA, ROOT_SIZE, v), Ok(()));
    assert!(matches!(
        validate_root(mem, GPA, ROOT_SIZE + 8, v),
        Err(RootError::WrongSize { .. })
    ));
    assert!(matches!(
        validate_root(mem, GPA, ROOT_SIZE, v + 1),
        Err(RootError::WrongVersion { .. })
    ));
    assert_eq!(check_root_header(mem, 0), Err(RootError::NotRegistered));
    assert_eq!(
        check_root_header(mem, GPA + 4),
        Err(RootError::Unaligned(GPA + 4))
    );
    assert_eq!(
        validate_root(mem, GPA + 4, ROOT_SIZE, v),
        Err(RootError::Unaligned(GPA + 4))
    );
    for gpa in [
        RAM - 8,
        RAM,
        RAM - ROOT_SIZE + 8,
        u64::MAX - 7,
        (u64::MAX - ROOT_SIZE) & !7,
    ] {
        assert_eq!(
            check_root_header(mem, gpa),
            Err(RootError::OutsideRam {
                gpa,
                size: ROOT_SIZE
            }),
            "{gpa:#x}"
        );
    }
    // No root written here: magic is zero.
    assert_eq!(
        check_root_header(mem, 0x20_0000),
        Err(RootError::BadMagic(0))
    );
    assert!(RootError::BadMagic(0).to_string().contains("bad magic"));
}

#[test]
fn embedded_version_and_size_are_checked() {
    let mut ram = vec![0u8; RAM as usize];
    plant(&mut ram, GPA);
    put(&mut ram, GPA + 8, ABI_VERSION + 1);
    assert_eq!(
        check_root_header(&ram[..], GPA),
        Err(RootError::WrongVersion {
            got: u64::from(ABI_VERSION + 1),
            expected: ABI_VERSION
        })
    );
    put(&mut ram, GPA + 8, ABI_VERSION);
    put(&mut ram, GPA + 12, 7u32);
    assert_eq!(
        check_root_header(&ram[..], GPA),
        Err(RootError::WrongSize {
            got: 7,
            expected: ROOT_SIZE
        })
    );
    put(&mut ram, GPA + 12, ROOT_SIZE as u32);
    put(&mut ram, GPA, ROOT_MAGIC ^ 1);
    assert_eq!(
        check_root_header(&ram[..], GPA),
        Err(RootError::BadMagic(ROOT_MAGIC ^ 1))
    );
}

#[test]
fn reads_the_root_and_its_fields() {
    let mut ram = vec![0u8; RAM as usize];
    plant(&mut ram, GPA);
    let mem = &ram[..];
    let mut buf = root_buf();
    let root = KernelRoot::mut_from_bytes(&mut buf.as_mut_bytes()[..ROOT_SIZE as usize]).unwrap();
    assert_eq!(read_root_into(mem, GPA, root), Ok(()));
    assert_eq!(root.header.heartbeat, 42);
    let hb: u64 = read_root_field(mem, GPA, offset_of!(KernelRoot, header.heartbeat)).unwrap();
    assert_eq!(hb, 42);
    assert_eq!(read_crash_record(mem, GPA).unwrap().kind, CRASH_OOPS);
    // Fields must lie inside the root.
    assert_eq!(
        read_root_field::<u64, _>(mem, GPA, ROOT_SIZE as usize - 4),
        Err(RootError::NotAField {
            offset: ROOT_SIZE - 4,
            size: 8
        })
    );
    assert!(read_root_field::<u64, _>(mem, GPA, usize::MAX).is_err());
    // And every read checks the header first.
    assert_eq!(
        read_crash_record(mem, GPA + 8).err(),
        Some(RootError::BadMagic(
            u64::from(ABI_VERSION) | ROOT_SIZE << 32
        ))
    );
    assert_eq!(read_root_into(mem, 0, root), Err(RootError::NotRegistered));
}

#[cfg(feature = "alloc")]
#[test]
fn reads_a_boxed_root() {
    let mut ram = vec![0u8; RAM as usize];
    plant(&mut ram, GPA);
    assert_eq!(read_root(&ram[..], GPA).unwrap().header.heartbeat, 42);
    assert!(matches!(
        read_root(&ram[..], 0x20_0000),
        Err(RootError::BadMagic(0))
    ));
}

#[cfg(feature = "vm-memory")]
#[test]
fn reads_from_guest_memory_mmap() {
    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
    let mut ram = vec![0u8; RAM as usize];
    plant(&mut ram, GPA);
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), RAM as usize)]).unwrap();
    mem.write_slice(&ram, GuestAddress(0)).unwrap();
    assert_eq!(
        validate_root(&mem, GPA, ROOT_SIZE, u64::from(ABI_VERSION)),
        Ok(())
    );
    assert_eq!(read_crash_record(&mem, GPA).unwrap().kind, CRASH_OOPS);
    assert!(matches!(
        check_root_header(&mem, RAM - 8),
        Err(RootError::OutsideRam { .. })
    ));
}
