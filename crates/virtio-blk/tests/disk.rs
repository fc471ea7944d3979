//! Opening, creating and locking disk images.

use std::os::unix::fs::MetadataExt;

use lazarus_virtio_blk::{DEFAULT_DISK_SIZE, DiskError, DiskImage};

fn dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

#[test]
fn a_missing_image_is_created_sparse() {
    let d = dir();
    let path = d.path().join("new.img");
    let (disk, created) = DiskImage::open_or_create(&path, DEFAULT_DISK_SIZE).unwrap();
    assert!(created);
    assert_eq!(DEFAULT_DISK_SIZE, 64 << 20);
    assert_eq!(disk.capacity(), DEFAULT_DISK_SIZE);
    assert_eq!(disk.sectors(), DEFAULT_DISK_SIZE / 512);
    assert!(!disk.is_read_only());
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.len(), DEFAULT_DISK_SIZE);
    assert!(
        meta.blocks() * 512 < 1 << 20,
        "not sparse: {} blocks",
        meta.blocks()
    );
    drop(disk);
    // Opened again: kept as it is, whatever size is asked.
    let (disk, created) = DiskImage::open_or_create(&path, 1 << 20).unwrap();
    assert!(!created);
    assert_eq!(disk.capacity(), DEFAULT_DISK_SIZE);
}

#[test]
fn bad_sizes_are_refused() {
    let d = dir();
    let path = d.path().join("odd.img");
    std::fs::write(&path, vec![0u8; 1000]).unwrap();
    let err = DiskImage::open(&path, false).unwrap_err();
    assert!(
        matches!(err, DiskError::BadSize { size: 1000, .. }),
        "{err}"
    );
    let msg = err.to_string();
    assert!(msg.contains("odd.img") && msg.contains("512"), "{msg}");
    std::fs::write(&path, b"").unwrap();
    let err = DiskImage::open(&path, true).unwrap_err();
    assert!(matches!(err, DiskError::BadSize { size: 0, .. }), "{err}");
    // Creating at a bad size creates nothing.
    let new = d.path().join("new.img");
    for size in [0, 511, 513, (1 << 40) + 512] {
        let err = DiskImage::open_or_create(&new, size).unwrap_err();
        assert!(matches!(err, DiskError::BadSize { .. }), "{size}: {err}");
        assert!(!new.exists());
    }
}

#[test]
fn missing_and_odd_paths() {
    let d = dir();
    let missing = d.path().join("missing.img");
    let err = DiskImage::open(&missing, true).unwrap_err();
    assert!(matches!(err, DiskError::NotFound { .. }), "{err}");
    assert!(err.to_string().contains("missing.img"));
    let err = DiskImage::open(d.path(), true).unwrap_err();
    assert!(matches!(err, DiskError::NotAFile { .. }), "{err}");
    let err = DiskImage::open_or_create(&d.path().join("no/such/dir.img"), 1 << 20).unwrap_err();
    assert!(matches!(err, DiskError::Create { .. }), "{err}");
}

#[test]
fn a_writable_image_is_locked_exclusively() {
    let d = dir();
    let path = d.path().join("vm.img");
    let (first, _) = DiskImage::open_or_create(&path, 1 << 20).unwrap();
    // A second writer, a reader, a second creator: all refused, by name.
    for (read_only, err) in [
        (false, DiskImage::open(&path, false).unwrap_err()),
        (true, DiskImage::open(&path, true).unwrap_err()),
        (
            false,
            DiskImage::open_or_create(&path, 1 << 20).unwrap_err(),
        ),
    ] {
        match &err {
            DiskError::Locked {
                path: p,
                read_only: ro,
            } => {
                assert_eq!(p, &path);
                assert_eq!(*ro, read_only);
            }
            other => panic!("expected Locked, got {other}"),
        }
        let msg = err.to_string();
        assert!(
            msg.contains("vm.img") && msg.contains("in use by another VM"),
            "{msg}"
        );
    }
    // The lock goes with the image.
    drop(first);
    DiskImage::open(&path, false).unwrap();
}

#[test]
fn a_clone_shares_the_lock_until_the_last_handle_goes() {
    let d = dir();
    let path = d.path().join("vm.img");
    let (first, _) = DiskImage::open_or_create(&path, 1 << 20).unwrap();
    let mut second = first.try_clone().unwrap();
    drop(first);
    // The clone still holds the image: a reboot never lets it go.
    assert!(matches!(
        DiskImage::open(&path, false),
        Err(DiskError::Locked { .. })
    ));
    second.write_at(&[7u8; 512], 512).unwrap();
    drop(second);
    let mut again = DiskImage::open(&path, false).unwrap();
    let mut buf = [0u8; 512];
    again.read_at(&mut buf, 512).unwrap();
    assert_eq!(buf, [7u8; 512]);
}

#[test]
fn read_only_images_share() {
    let d = dir();
    let path = d.path().join("ro.img");
    std::fs::write(&path, vec![7u8; 4096]).unwrap();
    let a = DiskImage::open(&path, true).unwrap();
    let b = DiskImage::open(&path, true).unwrap();
    assert!(a.is_read_only() && b.is_read_only());
    // But no writer while they are open.
    let err = DiskImage::open(&path, false).unwrap_err();
    assert!(
        matches!(
            err,
            DiskError::Locked {
                read_only: false,
                ..
            }
        ),
        "{err}"
    );
    drop((a, b));
    DiskImage::open(&path, false).unwrap();
}

#[test]
fn reads_writes_and_flush_stay_inside() {
    let d = dir();
    let path = d.path().join("rw.img");
    let (mut disk, _) = DiskImage::open_or_create(&path, 4096).unwrap();
    disk.write_at(&[1; 512], 512).unwrap();
    let mut buf = [0u8; 1024];
    disk.read_at(&mut buf, 0).unwrap();
    assert_eq!(&buf[..512], &[0; 512]);
    assert_eq!(&buf[512..], &[1; 512]);
    disk.flush().unwrap();
    for (offset, len) in [(4096, 1), (4095, 2), (u64::MAX, 1), (u64::MAX - 10, 512)] {
        let err = disk.write_at(&vec![2; len], offset).unwrap_err();
        assert!(matches!(err, DiskError::OutOfRange { .. }), "{err}");
        let err = disk.read_at(&mut vec![0; len], offset).unwrap_err();
        assert!(matches!(err, DiskError::OutOfRange { .. }), "{err}");
    }
    let stats = disk.stats();
    assert_eq!((stats.reads, stats.writes, stats.flushes), (1, 1, 1));
    assert_eq!(stats.out_of_range, 8);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 4096);
    drop(disk);
    let mut ro = DiskImage::open(&path, true).unwrap();
    let err = ro.write_at(&[3; 512], 0).unwrap_err();
    assert!(matches!(err, DiskError::ReadOnly { .. }), "{err}");
    ro.flush().unwrap();
    assert_eq!(std::fs::read(&path).unwrap()[512..1024], [1; 512]);
}
