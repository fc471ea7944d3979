//! The command line.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// Shown under every `--help`.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  the guest powered off cleanly (run: the guest's power-off status, 0 normally)
  1  hypervisor or internal error (also an expired --timeout)
  2  usage error
  3  the guest crashed (run: with --on-crash halt, or a boot failure or crash loop)
  4  bad input: missing or corrupt kernel or initramfs, bad memory size
  5  KVM unavailable: /dev/kvm missing or not accessible
  6  ctl: the API socket cannot be reached (nobody listens, no answer in time)
  7  ctl: the server refused the request (4xx)
  8  ctl: the server failed (5xx)
  9  run, demo: the disk image is in use by another VM (--disk)
  10  the shared crash database (--crash-db) cannot be reached
  0  run: quit with Ctrl-A X on its terminal (as QEMU)
  128+N  run: quit on signal N (130: SIGINT, 143: SIGTERM, 129: SIGHUP)

Logs go to stderr; set RUST_LOG (e.g. RUST_LOG=debug) to see more.";

const RUN_HELP: &str = "\
The guest console is attached to stdin and stdout. On a terminal, lazarus puts
it in raw mode (restored on exit), as QEMU -nographic does: the guest echoes
and edits what you type, and every key goes to the guest; Ctrl-C interrupts
the guest shell's foreground job. Ctrl-A X quits (crash dumps still being
written are finished first), Ctrl-A H lists the keys, Ctrl-A Ctrl-A sends
Ctrl-A. SIGINT, SIGTERM and SIGHUP quit the same way. Input can be piped, e.g.
  printf 'ps\\npoweroff\\n' | lazarus run
A guest reboot request restarts the VM from the boot image; a guest that keeps
rebooting or crashing, or cannot boot, stops with exit code 3 (--max-reboots).";

#[derive(Debug, Parser)]
#[command(
    name = "lazarus",
    version,
    about = "lazarus: an OS and hypervisor that resurrect a crashed kernel without a reboot",
    after_help = EXIT_CODES_HELP
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Parses the command line, then reads `--timeout 0` as "no timeout"
    /// (a zero deadline would expire before the guest runs) and fills in
    /// `bench ipc`'s vCPU counts (see [`BenchIpcArgs::vcpus_list`]).
    pub fn parse_args() -> Self {
        Self::try_parse_resolved(std::env::args_os()).unwrap_or_else(|e| e.exit())
    }

    /// [`Cli::parse_args`] on `args`, returning clap's error.
    pub fn try_parse_resolved<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let mut cmd = <Self as clap::CommandFactory>::command();
        let matches = cmd.try_get_matches_from_mut(args)?;
        let mut cli = <Self as clap::FromArgMatches>::from_arg_matches(&matches)
            .map_err(|e| e.format(&mut cmd))?;
        cli.resolve(&matches);
        Ok(cli)
    }

    /// What parsing cannot say on its own: defaults that depend on
    /// whether another option was given.
    fn resolve(&mut self, matches: &clap::ArgMatches) {
        match &mut self.command {
            Command::Run(args) if args.timeout == Some(0.0) => args.timeout = None,
            Command::Bench(BenchCommand::Ipc(args)) if args.vcpus_list.is_empty() => {
                let vcpus_given = matches
                    .subcommand_matches("bench")
                    .and_then(|m| m.subcommand_matches("ipc"))
                    .and_then(|m| m.value_source("vcpus"))
                    == Some(clap::parser::ValueSource::CommandLine);
                args.vcpus_list = if vcpus_given {
                    vec![args.image.vcpus]
                } else {
                    DEFAULT_VCPUS_LIST.to_vec()
                };
            }
            _ => {}
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Boot the guest with its console on stdin/stdout.
    #[command(after_help = format!("{RUN_HELP}\n\n{EXIT_CODES_HELP}"))]
    Run(RunArgs),
    /// Boot, crash the kernel in several ways, resurrect it each time, and
    /// verify that every other process and all data survived.
    #[command(after_help = EXIT_CODES_HELP)]
    Demo(DemoArgs),
    /// Benchmarks.
    #[command(subcommand, after_help = EXIT_CODES_HELP)]
    Bench(BenchCommand),
    /// List recorded guest crashes grouped by signature; `show SIG` for one.
    Crashes(crate::crashes_cmd::CrashesArgs),
    /// Diagnose a crash dump offline: kind, backtrace, offender, signature.
    Diagnose(crate::diagnose_cmd::DiagnoseArgs),
    /// Serve crash-triage web pages: top crashers, one page per
    /// signature, dumps, and the live VMs.
    Dashboard(crate::dashboard_cmd::DashboardArgs),
    /// Talk to a running `lazarus run --api-sock PATH`: status, pause,
    /// resume, dump, inject, metrics.
    Ctl(crate::ctl::CtlArgs),
    /// Inject faults one after another into a running workload (or for a
    /// --soak duration), classify every outcome and report the recovery
    /// rate, latency and memory.
    #[command(after_help = EXIT_CODES_HELP)]
    Campaign(CampaignArgs),
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Boot repeatedly and report the time to the shell prompt.
    #[command(after_help = EXIT_CODES_HELP)]
    Boot(BenchBootArgs),
    /// Compare three ways back from the same crashes: resurrection, a
    /// reboot, and restoring a periodic whole-VM snapshot; and time
    /// resurrection until every vCPU runs again, for several vCPU counts.
    #[command(after_help = EXIT_CODES_HELP)]
    Recovery(BenchRecoveryArgs),
    /// Time kv store requests inside the guest (median and p99) with 1
    /// and 2 vCPUs, idle and with CPU-bound workers, side by side.
    #[command(after_help = EXIT_CODES_HELP)]
    Ipc(BenchIpcArgs),
    /// What the protection machinery costs in normal running: the same
    /// workloads on the same image with it on and off.
    #[command(after_help = EXIT_CODES_HELP)]
    Overhead(BenchOverheadArgs),
    /// Disk throughput through the guest's virtio driver against the same
    /// I/O on a host file, in one run.
    #[command(after_help = EXIT_CODES_HELP)]
    Io(BenchIoArgs),
}

/// What to boot.
#[derive(Debug, Args)]
pub struct ImageArgs {
    /// Guest memory in MiB (a multiple of 2, at least 16).
    #[arg(long, value_name = "MIB", default_value_t = lazarus_abi::layout::DEFAULT_MEMORY >> 20)]
    pub memory: u64,
    /// Number of vCPUs, 1 to 8 (the most the kernel tracks). vCPU 0 boots;
    /// the kernel starts the others, and one it never starts costs nothing.
    #[arg(long, value_name = "N", default_value_t = lazarus_vmm::config::DEFAULT_VCPUS, value_parser = parse_vcpus)]
    pub vcpus: u32,
    /// Kernel ELF to boot [default: the built-in kernel].
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<PathBuf>,
    /// cpio (newc) initramfs [default: the built-in initramfs].
    #[arg(long, value_name = "PATH")]
    pub initramfs: Option<PathBuf>,
    /// Kernel command line.
    #[arg(long, value_name = "STR", default_value = "")]
    pub cmdline: String,
    /// KVM device (for testing).
    #[arg(long, value_name = "PATH", default_value = lazarus_vmm::DEFAULT_KVM_DEVICE, hide = true)]
    pub kvm_device: PathBuf,
}

/// The guest's disk: a virtio block device on a raw host image.
#[derive(Debug, Args)]
pub struct DiskArgs {
    /// Raw disk image the guest gets as a virtio block device, created
    /// (sparse, --disk-size) when missing and locked while the VM runs; a
    /// second VM on the same image exits with code 9. `none`: no disk
    /// [default: disk.img in the data directory].
    #[arg(long, value_name = "PATH|none")]
    pub disk: Option<PathBuf>,
    /// Size in MiB of a disk image created by --disk (an existing image
    /// keeps its size).
    #[arg(long, value_name = "MIB", default_value_t = lazarus_virtio_blk::DEFAULT_DISK_SIZE >> 20,
          value_parser = clap::value_parser!(u64).range(1..=(lazarus_virtio_blk::MAX_DISK_SIZE >> 20)))]
    pub disk_size: u64,
    /// Give the guest the disk read-only (it must exist; writes fail with
    /// an I/O error, flush succeeds). Read-only VMs may share an image.
    #[arg(long)]
    pub disk_readonly: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub image: ImageArgs,
    #[command(flatten)]
    pub disk: DiskArgs,
    /// Give up after this many seconds (exit code 1); 0 means no timeout.
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<f64>,
    /// What to do when the guest kernel crashes. Every crash first gets a
    /// dump, a diagnosis report and a crash-database entry.
    #[arg(long, value_enum, value_name = "POLICY", default_value_t = OnCrash::Resurrect)]
    pub on_crash: OnCrash,
    /// How the hidden repair image enters the guest's physical address
    /// space during a repair.
    #[arg(long, value_enum, value_name = "HOW", default_value_t = SlotArg::Resident)]
    pub repair_slot: SlotArg,
    /// Disable a kernel extension that crashes N times in a row, each
    /// within a minute of the one before (a crash after a quiet minute
    /// starts the count again); until then every crash resets it.
    #[arg(long, value_name = "N", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub ext_crash_limit: u32,
    /// Declare the guest hung when the kernel's heartbeat stops for this
    /// many milliseconds (0 disables the watchdog). At least 50: the
    /// kernel boots for 10-20 ms before its first heartbeat, so a shorter
    /// watchdog would find every boot hung.
    #[arg(long, value_name = "MS", default_value_t = 100, value_parser = parse_watchdog_ms)]
    pub watchdog_ms: u64,
    /// Give up (exit code 3) when the guest needs more than N reboots,
    /// after crashes or asked for by the guest, within --reboot-window;
    /// 0 allows none. A reboot after a crash that crashes again before the
    /// shell prompt gives up at once.
    #[arg(long, value_name = "N", default_value_t = crate::reboot_limit::DEFAULT_MAX_REBOOTS)]
    pub max_reboots: u32,
    /// The window of --max-reboots, in seconds (0: the whole run).
    #[arg(long, value_name = "SECS", default_value_t = crate::reboot_limit::DEFAULT_WINDOW_SECS)]
    pub reboot_window: u64,
    /// Where dumps, reports, symbols and the crash database go [default:
    /// $LAZARUS_DATA_DIR, else $XDG_DATA_HOME/lazarus, else
    /// ~/.local/share/lazarus].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Record crashes in this database instead of DIR/crashes.sqlite: a
    /// postgres://USER:PASSWORD@HOST:PORT/DB URL shared by many hosts, or
    /// a SQLite file [default: $LAZARUS_CRASH_DB]. Dumps and reports stay
    /// in the data directory. Exit code 10 if it cannot be reached.
    #[arg(long, value_name = "URL")]
    pub crash_db: Option<String>,
    #[command(flatten)]
    pub budget: crate::crashes_cmd::BudgetArgs,
    /// Serve the control API (JSON over HTTP on a Unix socket, mode 0600)
    /// at PATH; `lazarus ctl --api-sock PATH` is its client. PATH must not
    /// exist, or be a stale socket; it is removed at exit.
    #[arg(long, value_name = "PATH")]
    pub api_sock: Option<PathBuf>,
    /// Write one JSON line per event (boot, crash, resurrected, fallback,
    /// reboot, extension reset or disabled, dump written, exit) to PATH:
    /// a file (appended to, created if missing) or a FIFO. Events never
    /// delay the guest; those a missing or slow reader cannot take are
    /// dropped and counted. The schema is in README.md.
    #[arg(long, value_name = "PATH")]
    pub events: Option<PathBuf>,
}

/// `--repair-slot` (see `lazarus_resurrect::RepairSlot`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SlotArg {
    /// A slot registered at boot; its host memory is swapped between the
    /// image (during a repair) and a zeroed decoy (otherwise). Fastest.
    Resident,
    /// A fresh slot added for each repair and deleted after it: no memory
    /// at all at the image's address between repairs.
    Fresh,
}

impl From<SlotArg> for lazarus_resurrect::RepairSlot {
    fn from(s: SlotArg) -> Self {
        match s {
            SlotArg::Resident => lazarus_resurrect::RepairSlot::Resident,
            SlotArg::Fresh => lazarus_resurrect::RepairSlot::Fresh,
        }
    }
}

/// Crash policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnCrash {
    /// Repair the kernel with the hidden repair image and resume it: the
    /// offender is quarantined, everything else carries on. Falls back to
    /// a reboot when repair is not safe.
    Resurrect,
    /// Stop with exit code 3 after saving the dump.
    Halt,
    /// Reboot the guest (all its state is lost) and report the downtime
    /// from the crash to the shell prompt: the baseline resurrection is
    /// measured against.
    Reboot,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    #[command(flatten)]
    pub image: ImageArgs,
    #[command(flatten)]
    pub disk: DiskArgs,
    /// How many of the demo's crash kinds to show (up to 7).
    #[arg(long, value_name = "N", default_value_t = 7)]
    pub crashes: usize,
    /// Write one JSON line per event to PATH, as `run --events` does.
    #[arg(long, value_name = "PATH")]
    pub events: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct BenchRecoveryArgs {
    #[command(flatten)]
    pub image: ImageArgs,
    /// How the repair image enters the guest during a repair (see `run`).
    #[arg(long, value_enum, value_name = "HOW", default_value_t = SlotArg::Resident)]
    pub repair_slot: SlotArg,
    /// Crashes to resurrect (one boot).
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub crashes: usize,
    /// Crash kinds to cycle through (see `crash list` in the guest).
    /// Lockups add the watchdog's detection time, which is not counted.
    #[arg(
        long,
        value_name = "LIST",
        default_value = "null-read,gp,panic,ud2,divide,wild-write,list-corruption,double-fault,stack-overflow,triple-fault"
    )]
    pub kinds: String,
    /// kv keys written before the crashes.
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub keys: u64,
    /// Reboots to time (each is a full boot).
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub reboot_samples: usize,
    /// Snapshot restores to time.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub snapshot_samples: usize,
    /// Seconds between whole-VM snapshots in the snapshot baseline.
    #[arg(long, value_name = "SECS", default_value_t = 1.0)]
    pub snapshot_interval: f64,
    /// vCPU counts to resurrect with, --crashes times each (one boot per
    /// count), timing the crash exit until every vCPU runs again;
    /// comma-separated or repeated. The three-way comparison uses
    /// --vcpus, whose count is reported with them.
    #[arg(long, value_name = "N,N...", value_delimiter = ',', value_parser = parse_vcpus, default_value = "1,2")]
    pub vcpus_list: Vec<u32>,
    /// Print one JSON object on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// vCPU counts `bench ipc` and `bench recovery` compare by default.
pub const DEFAULT_VCPUS_LIST: &[u32] = &[1, 2];

#[derive(Debug, Args)]
pub struct BenchIoArgs {
    #[command(flatten)]
    pub image: ImageArgs,
    /// MiB written and read sequentially, in 64 KiB requests (the disk
    /// is twice this, at least 64 MiB, in a temporary directory).
    #[arg(long, value_name = "MIB", default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub mib: u64,
    /// Random 4 KiB reads, and as many writes, within that range.
    #[arg(long, value_name = "N", default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub ops: u64,
    /// Seed of the random offsets (the guest and the host use the same).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub seed: u64,
    /// Driver crashes with I/O in flight to time, after the throughput
    /// phases: each holds the disk requests of two writers in the driver
    /// (`blk fault stall`) until it crashes, and is resurrected (0: none).
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = clap::value_parser!(u32).range(0..=1000))]
    pub crashes: u32,
    /// Print one JSON object on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct BenchIpcArgs {
    #[command(flatten)]
    pub image: ImageArgs,
    /// Timed kv requests per condition (puts and gets alternating).
    #[arg(long, value_name = "N", default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub requests: u32,
    /// vCPU counts to compare, one boot each, comma-separated or repeated
    /// [default: 1,2; with --vcpus N alone: N].
    #[arg(long, value_name = "N,N...", value_delimiter = ',', value_parser = parse_vcpus, conflicts_with = "vcpus")]
    pub vcpus_list: Vec<u32>,
    /// CPU-bound `worker` processes per vCPU in the loaded condition (at
    /// most 4: 8 vCPUs' workers then fill half the process table).
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=4))]
    pub workers_per_vcpu: u32,
    /// Milliseconds the guest calibrates its TSC against the kernel clock
    /// (in the idle condition; the loaded one uses that rate).
    #[arg(long, value_name = "MS", default_value_t = 200, value_parser = clap::value_parser!(u64).range(50..=10_000))]
    pub calibration_ms: u64,
    /// Print one JSON object on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct BenchOverheadArgs {
    #[command(flatten)]
    pub image: ImageArgs,
    /// Boots with the machinery on, and as many off, alternating.
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=50))]
    pub runs: u32,
    /// Print one JSON object on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct BenchBootArgs {
    #[command(flatten)]
    pub image: ImageArgs,
    /// Number of boots.
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub runs: u32,
    /// Print one JSON object on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Give up on a boot that takes longer than this many seconds; 0 means
    /// no timeout.
    #[arg(long, value_name = "SECS", default_value_t = 120.0)]
    pub timeout: f64,
}

#[derive(Debug, Args)]
pub struct CampaignArgs {
    #[command(flatten)]
    pub image: ImageArgs,
    /// Faults to inject (ignored with --soak).
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub faults: u64,
    /// Seed: the same seed on the same image gives the same faults.
    #[arg(long, value_name = "S", default_value_t = 1)]
    pub seed: u64,
    /// Fault types to draw from, comma-separated: bit-flip,
    /// replace-instruction, corrupt-register, delete-branch,
    /// wild-write-kernel, wild-write-struct, corrupt-stack, crash-test.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub types: Vec<String>,
    /// Extension whose code faults are injected into: ramdisk, or virtblk
    /// (the virtio disk driver; the VM then gets a temporary disk of its
    /// own).
    #[arg(long, value_name = "NAME", default_value = "ramdisk")]
    pub ext: String,
    /// kv keys written and verified after every fault (each check is a
    /// round trip per key through the kv store, competing with the
    /// workers for the CPU).
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub keys: u64,
    /// How long a fault has to show itself before it counts as not
    /// activated (milliseconds).
    #[arg(long, value_name = "MS", default_value_t = 300)]
    pub window_ms: u64,
    /// Keep injecting for this long instead of --faults (e.g. 10m, 600s),
    /// and sample the memory of the guest kernel and the hypervisor.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub soak: Option<Duration>,
    /// Write the full results as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Draw the latency distribution and the outcomes per type as SVG.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// No progress bar (also off when stderr is not a terminal).
    #[arg(long)]
    pub quiet: bool,
}

/// Shortest `--watchdog-ms` accepted (other than 0). The kernel's timer
/// ticks every 10 ms (`TICK_HZ`) and its first heartbeat comes 10-20 ms of
/// boot work after it registers with the hypervisor; 50 ms leaves a margin
/// on a loaded host. Refused rather than raised: a watchdog silently
/// different from the one asked for would surprise whoever tunes it.
pub const MIN_WATCHDOG_MS: u64 = 50;

/// Parses `--vcpus`: 1 to [`lazarus_vmm::MAX_VCPUS`]. Checked here, as a
/// usage error naming the range, so that every command that boots a VM
/// refuses a bad count the same way before reading any image.
pub fn parse_vcpus(s: &str) -> Result<u32, String> {
    let max = lazarus_vmm::MAX_VCPUS;
    match s.parse::<u32>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(format!("a VM has 1 to {max} vCPUs")),
    }
}

/// Parses `--watchdog-ms`: 0 (off) or at least [`MIN_WATCHDOG_MS`].
fn parse_watchdog_ms(s: &str) -> Result<u64, String> {
    let ms: u64 = s.parse().map_err(|e| format!("{e}"))?;
    if ms != 0 && ms < MIN_WATCHDOG_MS {
        return Err(format!(
            "{ms} ms is shorter than the kernel needs to boot before its first heartbeat; \
             use 0 (no watchdog) or at least {MIN_WATCHDOG_MS}"
        ));
    }
    Ok(ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn vcpus_from_one_to_max() {
        let max = lazarus_vmm::MAX_VCPUS;
        assert_eq!(parse_vcpus("1"), Ok(1));
        assert_eq!(parse_vcpus(&max.to_string()), Ok(max));
        for bad in ["0", &(max + 1).to_string(), "-1", "two", "", "99999999999"] {
            let e = parse_vcpus(bad).expect_err(bad);
            assert_eq!(e, format!("a VM has 1 to {max} vCPUs"), "{bad:?}");
        }
    }

    /// `bench ipc` compares 1 and 2 vCPUs unless told otherwise; a lone
    /// `--vcpus N` means N alone; both options at once are a usage error.
    #[test]
    fn bench_vcpus_lists() {
        let ipc = |extra: &[&str]| -> Result<Vec<u32>, clap::Error> {
            let args = ["lazarus", "bench", "ipc"].iter().chain(extra);
            match Cli::try_parse_resolved(args)?.command {
                Command::Bench(BenchCommand::Ipc(a)) => Ok(a.vcpus_list),
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(ipc(&[]).expect("default"), [1, 2]);
        assert_eq!(ipc(&["--vcpus", "4"]).expect("--vcpus"), [4]);
        assert_eq!(ipc(&["--vcpus-list", "1,3"]).expect("list"), [1, 3]);
        assert_eq!(
            ipc(&["--vcpus-list", "2", "--vcpus-list", "1"]).expect("repeated"),
            [2, 1]
        );
        for bad in [
            &["--vcpus", "2", "--vcpus-list", "1"][..],
            &["--vcpus-list", "0"],
            &["--vcpus-list", "1,x"],
        ] {
            let e = ipc(bad).expect_err("usage error");
            assert_eq!(e.exit_code(), 2, "{bad:?}: {e}");
        }
        let recovery = |extra: &[&str]| {
            let args = ["lazarus", "bench", "recovery"].iter().chain(extra);
            match Cli::try_parse_resolved(args).expect("parse").command {
                Command::Bench(BenchCommand::Recovery(a)) => (a.image.vcpus, a.vcpus_list),
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(recovery(&[]), (2, vec![1, 2]));
        assert_eq!(recovery(&["--vcpus", "3"]), (3, vec![1, 2]));
        assert_eq!(recovery(&["--vcpus-list", "4"]), (2, vec![4]));
    }

    /// The help text spells the range out; it must follow `MAX_VCPUS`.
    #[test]
    fn vcpus_help_names_the_range() {
        let mut cmd = Cli::command();
        let run = cmd.find_subcommand_mut("run").expect("run");
        let arg = run
            .get_arguments()
            .find(|a| a.get_id() == "vcpus")
            .expect("--vcpus");
        let help = arg.get_help().expect("help").to_string();
        let range = format!("1 to {}", lazarus_vmm::MAX_VCPUS);
        assert!(help.contains(&range), "{help}");
    }
}
