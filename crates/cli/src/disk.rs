//! The guest's disk: which image `--disk` names, opening and locking it
//! once for the whole session, and a virtio block device on it per boot.

use std::path::{Path, PathBuf};

use lazarus_crashdb::DataDir;
use lazarus_virtio_blk::{Block, DiskError, DiskImage};
use lazarus_vmm::BoxedDevice;

use crate::cli::DiskArgs;
use crate::exit::{BAD_INPUT, DISK_LOCKED, INTERNAL, failure};

/// The image's name in the data directory when `--disk` is not given.
pub const DEFAULT_DISK_NAME: &str = "disk.img";

/// The session's disk, held (and locked) until lazarus exits, so that no
/// other VM takes it between two boots of this one.
#[derive(Debug)]
pub struct Disk {
    image: DiskImage,
    created: bool,
}

/// Which image the arguments name: `None` for `--disk none`.
pub fn image_path(args: &DiskArgs, data: &DataDir) -> Option<PathBuf> {
    match &args.disk {
        Some(p) if p.as_os_str() == "none" => None,
        Some(p) => Some(p.clone()),
        None => Some(data.root().join(DEFAULT_DISK_NAME)),
    }
}

/// Opens the disk the arguments name, creating a writable one when
/// missing. `data` must exist when the default image is used.
pub fn open(args: &DiskArgs, data: &DataDir) -> anyhow::Result<Option<Disk>> {
    let Some(path) = image_path(args, data) else {
        return Ok(None);
    };
    let opened = if args.disk_readonly {
        DiskImage::open(&path, true).map(|image| (image, false))
    } else {
        DiskImage::open_or_create(&path, args.disk_size << 20)
    };
    let (image, created) = opened.map_err(explain)?;
    Ok(Some(Disk { image, created }))
}

fn explain(e: DiskError) -> anyhow::Error {
    let code = match &e {
        DiskError::Locked { .. } => DISK_LOCKED,
        DiskError::NotFound { .. }
        | DiskError::NotAFile { .. }
        | DiskError::BadSize { .. }
        | DiskError::Open { .. }
        | DiskError::Create { .. } => BAD_INPUT,
        _ => INTERNAL,
    };
    failure(code, e.to_string())
}

impl Disk {
    /// The image's path.
    pub fn path(&self) -> &Path {
        self.image.path()
    }

    /// One line for the console at start.
    pub fn describe(&self) -> String {
        format!(
            "disk {} ({} MiB{}{})",
            self.path().display(),
            self.image.capacity() >> 20,
            if self.image.is_read_only() {
                ", read-only"
            } else {
                ""
            },
            if self.created { ", new" } else { "" }
        )
    }

    /// A block device on the image for one boot. Its serial (virtio-blk
    /// `GET_ID`) is the image's file name.
    pub fn device(&self) -> anyhow::Result<BoxedDevice> {
        let image = self.image.try_clone().map_err(explain)?;
        let mut block = Block::new(image);
        if let Some(name) = self.path().file_name() {
            block.set_id(name.as_encoded_bytes());
        }
        Ok(Box::new(block))
    }
}
