//! Reading the boot image and turning the options into a `VmConfig`.

use std::borrow::Cow;
use std::path::Path;

use lazarus_vmm::{Error as VmmError, VmConfig};

use crate::cli::ImageArgs;
use crate::exit::{BAD_INPUT, failure, vmm_code};

const MIB: u64 = 1024 * 1024;

/// The kernel and initramfs to boot, and how to name them in messages.
pub struct BootImage {
    pub kernel: Cow<'static, [u8]>,
    pub kernel_name: String,
    pub initramfs: Cow<'static, [u8]>,
    pub initramfs_name: String,
    pub mem_size: u64,
    pub memory_mib: u64,
}

fn read(path: &Path, what: &str) -> anyhow::Result<(Cow<'static, [u8]>, String)> {
    let name = format!("{what} '{}'", path.display());
    match std::fs::read(path) {
        Ok(data) => Ok((Cow::Owned(data), name)),
        Err(e) => Err(failure(BAD_INPUT, format!("{name}: {e}"))),
    }
}

impl BootImage {
    /// Reads the files named on the command line (or takes the built-in
    /// image) and checks the memory size's arithmetic.
    pub fn load(args: &ImageArgs) -> anyhow::Result<Self> {
        let mem_size = args.memory.checked_mul(MIB).ok_or_else(|| {
            failure(
                BAD_INPUT,
                format!("invalid memory size {} MiB: too large", args.memory),
            )
        })?;
        let (kernel, kernel_name) = match &args.kernel {
            Some(p) => read(p, "kernel image")?,
            None => (
                Cow::Borrowed(lazarus_image::KERNEL_ELF),
                "built-in kernel image".to_string(),
            ),
        };
        let (initramfs, initramfs_name) = match &args.initramfs {
            Some(p) => {
                let (data, name) = read(p, "initramfs")?;
                // The guest cannot report a bad /init usefully (it panics
                // and reboots): refuse it here, before a VM exists.
                lazarus_image::check_initramfs(&data)
                    .map_err(|e| failure(BAD_INPUT, format!("{name}: {e}")))?;
                (data, name)
            }
            None => (
                Cow::Borrowed(lazarus_image::INITRAMFS),
                "built-in initramfs".to_string(),
            ),
        };
        Ok(Self {
            kernel,
            kernel_name,
            initramfs,
            initramfs_name,
            mem_size,
            memory_mib: args.memory,
        })
    }

    /// A VM configuration for this image (console and limits at defaults).
    pub fn config(&self, args: &ImageArgs) -> VmConfig {
        let mut config = VmConfig::new(self.kernel.clone(), self.initramfs.clone());
        config.mem_size = self.mem_size;
        config.cmdline = args.cmdline.clone();
        config.kvm_device = args.kvm_device.clone();
        config
    }

    /// Rewrites a VMM error as one line naming the input at fault.
    pub fn explain(&self, e: VmmError) -> anyhow::Error {
        let code = vmm_code(&e);
        let message = match &e {
            VmmError::Kernel(inner) => format!("{}: {inner}", self.kernel_name),
            VmmError::InitramfsTooLarge { .. } => format!("{}: {e}", self.initramfs_name),
            VmmError::InvalidMemorySize { reason, .. } => {
                format!("invalid memory size {} MiB: {reason}", self.memory_mib)
            }
            VmmError::KvmUnavailable { .. } => {
                format!("{e} (is KVM enabled, and may this user open the device?)")
            }
            _ => return anyhow::Error::new(e),
        };
        failure(code, message)
    }
}
