//! Typed errors of the hypervisor.
//!
//! Every error carries enough context to be printed as one line, and
//! [`Error::kind`] sorts it into the categories the CLI turns into exit codes.
//! The error types of the loader and of crash handlers live here too: this
//! module imports nothing of the crate, so every other module can use it.

use std::path::PathBuf;
use std::sync::Arc;

use lazarus_abi::layout::BOOT_RESERVED_END;

/// Result alias used throughout the crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Any error, as a handler reports it (the handler's own typed error
/// inside; callers that know the handler downcast it).
pub type HandlerError = Arc<dyn std::error::Error + Send + Sync>;

/// Broad classes of failure, for callers that map errors to exit codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// `/dev/kvm` is missing, not accessible, or lacks a required feature.
    KvmUnavailable,
    /// The caller's input is wrong: kernel image, initramfs, memory size,
    /// vCPU count, command line.
    BadInput,
    /// Anything else: a failed ioctl, a thread that could not be started.
    Internal,
}

/// Everything that can go wrong while building or running a VM.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `/dev/kvm` (or the configured device) could not be opened.
    #[error("KVM is not available: cannot open {}: {source}", path.display())]
    KvmUnavailable {
        /// The device.
        path: PathBuf,
        /// Why it could not be opened.
        #[source]
        source: std::io::Error,
    },
    /// KVM speaks an API version we do not know.
    #[error("KVM API version {0} is not supported (expected 12)")]
    KvmApiVersion(i32),
    /// KVM lacks a capability the VMM needs.
    #[error("KVM lacks the required capability {0}")]
    KvmCapability(&'static str),
    /// The guest memory size is out of range or misaligned.
    #[error("invalid guest memory size {size} bytes: {reason}")]
    InvalidMemorySize {
        /// Bytes asked for.
        size: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// The vCPU count is out of range.
    #[error("invalid vCPU count {count}: must be between 1 and {max}")]
    InvalidVcpuCount {
        /// vCPUs asked for.
        count: u32,
        /// The most supported.
        max: u32,
    },
    /// The kernel command line cannot be passed to the guest.
    #[error("invalid kernel command line: {0}")]
    InvalidCmdline(String),
    /// The kernel image is unusable.
    #[error("kernel image: {0}")]
    Kernel(#[from] LoaderError),
    /// The initramfs does not fit in guest memory after the kernel.
    #[error(
        "initramfs of {len} bytes does not fit in guest memory \
         (it would be placed at {start:#x}, memory ends at {mem_size:#x})"
    )]
    InitramfsTooLarge {
        /// Its length.
        len: u64,
        /// Where it would start (after the kernel).
        start: u64,
        /// Guest RAM.
        mem_size: u64,
    },
    /// Allocating or accessing guest memory failed.
    #[error("guest memory: {0}")]
    GuestMemory(String),
    /// A KVM ioctl failed.
    #[error("KVM {op} failed: {source}")]
    Kvm {
        /// The ioctl.
        op: &'static str,
        /// KVM's error.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// A host system call failed.
    #[error("{op} failed: {source}")]
    Io {
        /// The operation.
        op: &'static str,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// Building a VM structure failed in a way that is not the caller's fault.
    #[error("VM setup: {0}")]
    Setup(String),

    /// The crash handler could not be built, or found the guest must not
    /// run on (its own typed error inside).
    #[error("crash handler: {0}")]
    CrashHandler(HandlerError),
    /// A vCPU thread panicked (a VMM bug; reported, not propagated).
    #[error("vCPU {0} thread panicked")]
    VcpuPanicked(u32),
    /// Every vCPU stopped without reporting why.
    #[error("all vCPUs stopped without an outcome")]
    NoOutcome,
    /// A whole-VM snapshot does not fit the VM it is restored into.
    #[error("the snapshot does not fit this VM: {0}")]
    SnapshotMismatch(String),
}

impl Error {
    /// Which class of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::KvmUnavailable { .. } | Error::KvmApiVersion(_) | Error::KvmCapability(_) => {
                ErrorKind::KvmUnavailable
            }
            Error::InvalidMemorySize { .. }
            | Error::InvalidVcpuCount { .. }
            | Error::InvalidCmdline(_)
            | Error::Kernel(_)
            | Error::InitramfsTooLarge { .. } => ErrorKind::BadInput,
            Error::GuestMemory(_)
            | Error::Kvm { .. }
            | Error::Io { .. }
            | Error::Setup(_)
            | Error::CrashHandler(_)
            | Error::VcpuPanicked(_)
            | Error::NoOutcome
            | Error::SnapshotMismatch(_) => ErrorKind::Internal,
        }
    }

    pub(crate) fn kvm(op: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> Error {
        move |source| Error::Kvm { op, source }
    }

    pub(crate) fn io(op: &'static str) -> impl FnOnce(std::io::Error) -> Error {
        move |source| Error::Io { op, source }
    }
}

/// Why a kernel image was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LoaderError {
    /// No ELF magic.
    #[error("not an ELF file")]
    NotElf,
    /// ELF, but not ELFCLASS64 / little-endian.
    #[error("not a 64-bit little-endian ELF file")]
    Not64BitLittleEndian,
    /// Built for another machine (`e_machine`).
    #[error("not an x86-64 ELF file (machine type {0})")]
    WrongArch(u16),
    /// Not `ET_EXEC` (`e_type`): the kernel is loaded at its link address.
    #[error("not a statically linked executable (ELF type {0}, expected ET_EXEC)")]
    NotExecutable(u16),
    /// Headers that do not parse.
    #[error("malformed ELF file: {0}")]
    Malformed(String),
    /// Nothing to load.
    #[error("no loadable segments")]
    NoLoadableSegments,
    /// A `PT_LOAD` whose file part is larger than its memory part.
    #[error("segment at physical {paddr:#x} has file size {filesz:#x} > memory size {memsz:#x}")]
    SegmentFileSize {
        /// Its physical address.
        paddr: u64,
        /// `p_filesz`.
        filesz: u64,
        /// `p_memsz`.
        memsz: u64,
    },
    /// A segment over the page tables, GDT and boot info the hypervisor
    /// writes.
    #[error(
        "segment [{start:#x}, {end:#x}) overlaps the boot area below {:#x}",
        BOOT_RESERVED_END
    )]
    SegmentInBootArea {
        /// Its start.
        start: u64,
        /// Its end.
        end: u64,
    },
    /// A segment that does not fit in guest RAM.
    #[error(
        "segment at physical {start:#x} (+{len:#x}) is outside guest memory of {mem_size:#x} bytes"
    )]
    SegmentOutsideRam {
        /// Its start.
        start: u64,
        /// Its length.
        len: u64,
        /// Guest RAM.
        mem_size: u64,
    },
    /// The entry point is not in any loaded segment.
    #[error("entry point {0:#x} is not inside the loaded kernel image")]
    BadEntry(u64),
}
