//! Reading the boot image and turning the options into a `VmConfig`.

use std::borrow::Cow;
use std::io::Read;
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
    /// `--vcpus`, kept beside the memory size for the reports that record
    /// how the guest was configured.
    pub vcpus: u32,
}

/// The largest kernel ELF read: far above any real one (with debug info),
/// so that `--kernel /dev/zero` fails at once instead of filling memory.
pub const MAX_KERNEL_SIZE: u64 = 256 * MIB;

/// Reads at most `max` bytes of `path`; more is an error (a device or a
/// wrong file), reported without reading the rest.
fn read(path: &Path, what: &str, max: u64) -> anyhow::Result<(Cow<'static, [u8]>, String)> {
    let name = format!("{what} '{}'", path.display());
    let bad = |e: std::io::Error| failure(BAD_INPUT, format!("{name}: {e}"));
    let file = std::fs::File::open(path).map_err(bad)?;
    let mut data = Vec::new();
    file.take(max.saturating_add(1))
        .read_to_end(&mut data)
        .map_err(bad)?;
    if data.len() as u64 > max {
        return Err(failure(
            BAD_INPUT,
            format!("{name}: larger than {} MiB, the most accepted", max / MIB),
        ));
    }
    Ok((Cow::Owned(data), name))
}

impl BootImage {
    /// Reads the files named on the command line (or takes the built-in
    /// image) and checks the memory size's arithmetic (the vCPU count was
    /// checked by its parser).
    pub fn load(args: &ImageArgs) -> anyhow::Result<Self> {
        let mem_size = args.memory.checked_mul(MIB).ok_or_else(|| {
            failure(
                BAD_INPUT,
                format!("invalid memory size {} MiB: too large", args.memory),
            )
        })?;
        let (kernel, kernel_name) = match &args.kernel {
            Some(p) => read(p, "kernel image", MAX_KERNEL_SIZE)?,
            None => (
                Cow::Borrowed(lazarus_image::KERNEL_ELF),
                "built-in kernel image".to_string(),
            ),
        };
        let (initramfs, initramfs_name) = match &args.initramfs {
            Some(p) => {
                // It must fit in guest RAM; never read more than the
                // largest RAM a guest may have.
                let max = mem_size.min(lazarus_abi::layout::MAX_MEMORY);
                let (data, name) = read(p, "initramfs", max)?;
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
            vcpus: args.vcpus,
        })
    }

    /// A VM configuration for this image (console and limits at defaults).
    pub fn config(&self, args: &ImageArgs) -> VmConfig {
        let mut config = VmConfig::new(self.kernel.clone(), self.initramfs.clone());
        config.mem_size = self.mem_size;
        config.vcpus = self.vcpus;
        config.cmdline = args.cmdline.clone();
        config.kvm_device = args.kvm_device.clone();
        config
    }

    /// Rewrites a VMM error as one line naming the input at fault.
    pub fn explain(&self, e: VmmError) -> anyhow::Error {
        let code = vmm_code(&e);
        let message = match &e {
            VmmError::Kernel(inner) => format!("{}: {inner}", self.kernel_name),
            // A kernel the resurrector cannot read (e.g. cut short in its
            // section headers, which booting itself never reads).
            VmmError::CrashHandler(_) if code == BAD_INPUT => {
                format!("{}: {e}", self.kernel_name)
            }
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
