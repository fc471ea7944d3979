//! The host file behind the device: a raw image, locked while open.

use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::SECTOR_SIZE;

/// Size of a disk image created without a size given: 64 MiB (sparse).
pub const DEFAULT_DISK_SIZE: u64 = 64 << 20;

/// Largest disk image: 1 TiB.
pub const MAX_DISK_SIZE: u64 = 1 << 40;

/// Why a disk image cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// The image does not exist (and was not to be created).
    #[error("disk image {}: does not exist", path.display())]
    NotFound {
        /// The image.
        path: PathBuf,
    },
    /// It cannot be opened.
    #[error("disk image {}: cannot open: {source}", path.display())]
    Open {
        /// The image.
        path: PathBuf,
        /// The system's error.
        source: io::Error,
    },
    /// It cannot be created.
    #[error("disk image {}: cannot create: {source}", path.display())]
    Create {
        /// The image.
        path: PathBuf,
        /// The system's error.
        source: io::Error,
    },
    /// Another process (another VM) holds the image's lock.
    #[error(
        "disk image {} is in use by another VM (locked); {}",
        path.display(),
        if *read_only {
            "a read-only disk cannot be shared with a VM that writes it"
        } else {
            "two VMs never share a writable disk"
        }
    )]
    Locked {
        /// The image.
        path: PathBuf,
        /// Whether this open was read-only (a shared lock).
        read_only: bool,
    },
    /// Locking failed for another reason.
    #[error("disk image {}: cannot lock: {source}", path.display())]
    Lock {
        /// The image.
        path: PathBuf,
        /// The system's error.
        source: io::Error,
    },
    /// It is a directory, a device or something else than a file.
    #[error("disk image {}: not a regular file", path.display())]
    NotAFile {
        /// The image.
        path: PathBuf,
    },
    /// Its size is not a whole number of sectors, or out of bounds.
    #[error("disk image {}: size {size} bytes is invalid: {reason}", path.display())]
    BadSize {
        /// The image.
        path: PathBuf,
        /// Its size in bytes.
        size: u64,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An access past the end of the image (never issued for a guest
    /// request: those are checked before; this is the last line).
    #[error(
        "disk image {}: access of {len} bytes at {offset} is outside its {capacity} bytes",
        path.display()
    )]
    OutOfRange {
        /// The image.
        path: PathBuf,
        /// Byte offset.
        offset: u64,
        /// Length.
        len: u64,
        /// The image's size.
        capacity: u64,
    },
    /// A write to a read-only disk.
    #[error("disk image {} is read-only", path.display())]
    ReadOnly {
        /// The image.
        path: PathBuf,
    },
    /// A read, write or flush failed.
    #[error("disk image {}: I/O error: {source}", path.display())]
    Io {
        /// The image.
        path: PathBuf,
        /// The system's error.
        source: io::Error,
    },
}

/// Counters of the I/O done on an image.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskStats {
    /// Reads.
    pub reads: u64,
    /// Bytes read.
    pub bytes_read: u64,
    /// Writes.
    pub writes: u64,
    /// Bytes written.
    pub bytes_written: u64,
    /// Flushes (`fdatasync`).
    pub flushes: u64,
    /// Accesses refused for lying outside the image. The request parser
    /// checks every range first, so this stays 0; a test checks it.
    pub out_of_range: u64,
}

/// An open raw disk image: a whole number of 512-byte sectors, locked
/// (`flock`) for as long as it is open: exclusively when writable, shared
/// when read-only. Two VMs therefore never share a writable image, and a
/// read-only VM never reads an image a writer has open. The lock goes with
/// the file descriptor, so it is released when the image is dropped or the
/// process dies.
#[derive(Debug)]
pub struct DiskImage {
    file: File,
    path: PathBuf,
    capacity: u64,
    read_only: bool,
    stats: DiskStats,
}

impl DiskImage {
    /// Opens the existing image at `path`, read-only or writable, and
    /// locks it.
    pub fn open(path: &Path, read_only: bool) -> Result<Self, DiskError> {
        let file = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(path)
            .map_err(|source| match source.kind() {
                io::ErrorKind::NotFound => DiskError::NotFound {
                    path: path.to_path_buf(),
                },
                _ => DiskError::Open {
                    path: path.to_path_buf(),
                    source,
                },
            })?;
        Self::from_file(file, path, read_only)
    }

    /// Opens the image at `path` writable, creating it (sparse, `size`
    /// bytes) if it does not exist. Returns whether it was created. An
    /// existing image keeps its size.
    pub fn open_or_create(path: &Path, size: u64) -> Result<(Self, bool), DiskError> {
        check_size(path, size)?;
        match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
        {
            Ok(file) => {
                // Lock before sizing, so that a second creator racing with
                // this one finds the file locked rather than half made.
                let image = Self::lock(file, path, false).and_then(|file| {
                    file.set_len(size).map_err(|source| DiskError::Create {
                        path: path.to_path_buf(),
                        source,
                    })?;
                    Self::from_file(file, path, false)
                });
                if image.is_err() {
                    let _ = std::fs::remove_file(path);
                }
                image.map(|image| (image, true))
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                Self::open(path, false).map(|image| (image, false))
            }
            Err(source) => Err(DiskError::Create {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    fn lock(file: File, path: &Path, read_only: bool) -> Result<File, DiskError> {
        let locked = if read_only {
            file.try_lock_shared()
        } else {
            file.try_lock()
        };
        match locked {
            Ok(()) => Ok(file),
            Err(TryLockError::WouldBlock) => Err(DiskError::Locked {
                path: path.to_path_buf(),
                read_only,
            }),
            Err(TryLockError::Error(source)) => Err(DiskError::Lock {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    fn from_file(file: File, path: &Path, read_only: bool) -> Result<Self, DiskError> {
        let meta = file.metadata().map_err(|source| DiskError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        if !meta.is_file() {
            return Err(DiskError::NotAFile {
                path: path.to_path_buf(),
            });
        }
        let file = Self::lock(file, path, read_only)?;
        // The size is read under the lock: nobody else resizes it now.
        let capacity = file
            .metadata()
            .map_err(|source| DiskError::Open {
                path: path.to_path_buf(),
                source,
            })?
            .len();
        check_size(path, capacity)?;
        Ok(Self {
            file,
            path: path.to_path_buf(),
            capacity,
            read_only,
            stats: DiskStats::default(),
        })
    }

    /// Another handle on the same open image, sharing its lock (an
    /// `flock` belongs to the open file, not the descriptor): a VM rebuilt
    /// after a reboot gets the disk without ever letting go of it.
    pub fn try_clone(&self) -> Result<Self, DiskError> {
        let file = self.file.try_clone().map_err(|source| DiskError::Open {
            path: self.path.clone(),
            source,
        })?;
        Ok(Self {
            file,
            path: self.path.clone(),
            capacity: self.capacity,
            read_only: self.read_only,
            stats: DiskStats::default(),
        })
    }

    /// The image's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Size in bytes.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Size in 512-byte sectors.
    pub fn sectors(&self) -> u64 {
        self.capacity / SECTOR_SIZE
    }

    /// Whether it was opened read-only.
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// What was done on it.
    pub fn stats(&self) -> DiskStats {
        self.stats
    }

    fn check_range(&mut self, offset: u64, len: usize) -> Result<(), DiskError> {
        let len = len as u64;
        if offset
            .checked_add(len)
            .is_none_or(|end| end > self.capacity)
        {
            self.stats.out_of_range += 1;
            return Err(DiskError::OutOfRange {
                path: self.path.clone(),
                offset,
                len,
                capacity: self.capacity,
            });
        }
        Ok(())
    }

    fn io_error(&self, source: io::Error) -> DiskError {
        DiskError::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// Fills `buf` from byte `offset`; the whole range must lie inside.
    pub fn read_at(&mut self, buf: &mut [u8], offset: u64) -> Result<(), DiskError> {
        self.check_range(offset, buf.len())?;
        self.file
            .read_exact_at(buf, offset)
            .map_err(|e| self.io_error(e))?;
        self.stats.reads += 1;
        self.stats.bytes_read += buf.len() as u64;
        Ok(())
    }

    /// Writes `buf` at byte `offset`; the whole range must lie inside and
    /// the image be writable.
    pub fn write_at(&mut self, buf: &[u8], offset: u64) -> Result<(), DiskError> {
        if self.read_only {
            return Err(DiskError::ReadOnly {
                path: self.path.clone(),
            });
        }
        self.check_range(offset, buf.len())?;
        self.file
            .write_all_at(buf, offset)
            .map_err(|e| self.io_error(e))?;
        self.stats.writes += 1;
        self.stats.bytes_written += buf.len() as u64;
        Ok(())
    }

    /// Makes every completed write durable (`fdatasync`). Nothing to do
    /// on a read-only image.
    pub fn flush(&mut self) -> Result<(), DiskError> {
        if !self.read_only {
            self.file.sync_data().map_err(|e| self.io_error(e))?;
        }
        self.stats.flushes += 1;
        Ok(())
    }
}

fn check_size(path: &Path, size: u64) -> Result<(), DiskError> {
    let reason = if size == 0 {
        "an image holds at least one 512-byte sector"
    } else if !size.is_multiple_of(SECTOR_SIZE) {
        "not a multiple of the 512-byte sector"
    } else if size > MAX_DISK_SIZE {
        "larger than the 1 TiB supported"
    } else {
        return Ok(());
    };
    Err(DiskError::BadSize {
        path: path.to_path_buf(),
        size,
        reason,
    })
}
