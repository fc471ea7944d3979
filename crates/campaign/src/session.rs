//! One booted VM with the campaign's workload running, driven from the
//! campaign's thread through its console: booting it, restarting the
//! workload's processes, checking the survivors, and reading how the VM
//! ended when a fault brought it down.

use std::collections::BTreeMap;
use std::sync::mpsc::{Receiver, channel};
use std::thread::JoinHandle;
use std::time::Duration;

use lazarus_resurrect::{Fallback, Recovery, ResurrectConfig};
use lazarus_virtio_blk::{Block, DEFAULT_DISK_SIZE, DiskImage};
use lazarus_vmm::{ConsoleOutput, StopHandle, Vm, VmConfig, VmControl, VmOutcome};
use tempfile::TempDir;

use crate::config::{CampaignConfig, Target};
use crate::driver::{Driver, PROMPT, kv_check};
use crate::error::CampaignError;
use crate::extclient::{ExtProgress, last_ext_report};
use crate::outcome::{FaultRecord, Outcome};

/// Longest wait for a shell command.
pub(crate) const SHELL_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest wait for a new guest's first prompt.
const BOOT_TIMEOUT: Duration = Duration::from_secs(60);

/// The workload's background jobs besides extclient, each restarted with
/// its own command.
const WORKERS: &[&str] = &["run worker alpha 1000000 &", "run worker beta 1000000 &"];

/// A booted VM with the workload running, driven from this thread.
pub(crate) struct Session {
    pub(crate) d: Driver,
    pub(crate) control: VmControl,
    stop: StopHandle,
    pub(crate) recoveries: Receiver<Recovery>,
    thread: Option<JoinHandle<Result<VmOutcome, lazarus_vmm::Error>>>,
    /// Pids of the workload, by the command that restarts it.
    roles: BTreeMap<u32, String>,
    /// The directory of this VM's own disk image, when the target needs
    /// a disk; removed with the session.
    _disk: Option<TempDir>,
    keys: u64,
    /// extclient's last report before the current fault.
    pub(crate) ext_progress: ExtProgress,
    /// A fault left the guest unusable for the next one: start over.
    pub(crate) broken: bool,
}

/// What the survivors looked like.
pub(crate) struct Survivors {
    /// The shell answered.
    pub(crate) responsive: bool,
    /// Why the survivors' data is not intact, if it is not.
    pub(crate) corrupt: Option<String>,
}

impl Session {
    /// Boots `vm` (its console and crash handler are set here, and a disk
    /// of its own when the target needs one), fills the kv store, loads
    /// the extension and starts the workload.
    pub(crate) fn boot(mut vm: VmConfig, c: &CampaignConfig) -> Result<Session, CampaignError> {
        let target = c.target()?;
        let disk = if target.disk {
            Some(own_disk(&mut vm)?)
        } else {
            None
        };
        let (d, input, tee) = Driver::new(None);
        vm.console_in = input;
        vm.console_out = ConsoleOutput::Writer(Box::new(tee));
        let (tx, recoveries) = channel();
        let mut rc = ResurrectConfig::new(c.repair_program.clone());
        rc.listener = Some(tx);
        vm.crash_handler = Some(Box::new(rc));
        let mut vm = Vm::new(vm).map_err(CampaignError::Vm)?;
        let control = vm.control();
        let stop = vm.stop_handle();
        let thread = std::thread::spawn(move || vm.run());
        let mut s = Session {
            d,
            control,
            stop,
            recoveries,
            thread: Some(thread),
            roles: BTreeMap::new(),
            _disk: disk,
            keys: c.keys,
            ext_progress: ExtProgress::default(),
            broken: false,
        };
        s.d.expect(PROMPT, BOOT_TIMEOUT)
            .map_err(CampaignError::NoShell)?;
        s.fill_kv()?;
        if !target.disk {
            s.d.cmd(&format!("insmod {}", c.ext), SHELL_TIMEOUT)?;
        }
        for w in WORKERS {
            s.start(w.to_string())?;
        }
        s.start(extclient_command(target))?;
        s.d.resync()?;
        // extclient's counters before the first fault.
        std::thread::sleep(Duration::from_millis(500));
        s.ext_progress = last_ext_report(&s.d.take_since_mark()).unwrap_or_default();
        s.d.mark();
        Ok(s)
    }

    /// Writes the verified kv keys.
    pub(crate) fn fill_kv(&mut self) -> Result<(), CampaignError> {
        self.d
            .cmd(&format!("kv fill {}", self.keys), SHELL_TIMEOUT)?;
        Ok(())
    }

    /// Starts a background job and remembers its pid.
    fn start(&mut self, cmd: String) -> Result<(), CampaignError> {
        let out = self.d.cmd(&cmd, SHELL_TIMEOUT)?;
        let pid = out
            .split("[pid ")
            .nth(1)
            .and_then(|r| r.split(']').next())
            .and_then(|p| p.trim().parse().ok())
            .ok_or_else(|| CampaignError::NoPid {
                command: cmd.clone(),
                output: out.clone(),
            })?;
        self.roles.insert(pid, cmd);
        Ok(())
    }

    /// Restarts the workload process the repair quarantined, if it was one.
    pub(crate) fn restart_offender(&mut self, pid: u32) -> Result<(), CampaignError> {
        if let Some(cmd) = self.roles.remove(&pid) {
            let client = cmd.starts_with(EXTCLIENT);
            self.start(cmd)?;
            if client {
                // The new extclient counts from zero: the next fault is
                // judged by its reports only, not against the old one's.
                self.ext_progress = ExtProgress::default();
                self.d.mark();
            }
        }
        Ok(())
    }

    /// Whether the VM's run has ended.
    pub(crate) fn finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Stops the VM and returns how its run ended.
    pub(crate) fn shut_down(mut self) -> Option<VmOutcome> {
        self.stop.stop();
        let t = self.thread.take()?;
        t.join().ok()?.ok()
    }

    /// Checks the survivors: the shell answers, every kv key is intact,
    /// the workers report progress with intact state, extclient read back
    /// what it wrote. `console_before` is the console text since the fault.
    pub(crate) fn survivors(&mut self, console_before: &str) -> Survivors {
        let out = match self.d.cmd("kv check", SHELL_TIMEOUT) {
            Ok(o) => o,
            Err(_) => {
                return Survivors {
                    responsive: false,
                    corrupt: None,
                };
            }
        };
        let mut corrupt = match kv_check(&out) {
            Some((intact, 0)) if intact == self.keys => None,
            Some((intact, lost)) => Some(format!("kv check: {intact} intact, {lost} lost")),
            None => Some(format!("kv check answered {out:?}")),
        };
        if corrupt.is_none() {
            corrupt = console_before
                .lines()
                .find(|l| l.contains("STATE CORRUPT") || l.contains("MISMATCH"))
                .map(str::to_string);
        }
        Survivors {
            responsive: true,
            corrupt,
        }
    }

    /// The VM thread ended during a fault: the hypervisor fell back to
    /// dump and reboot (or, rarely, stopped for another reason).
    pub(crate) fn fell_back(&mut self, mut rec: FaultRecord) -> FaultRecord {
        let outcome = self.thread.take().and_then(|t| t.join().ok());
        match outcome {
            Some(Ok(VmOutcome::Crash(info))) => {
                rec.outcome = Outcome::RecoveredByReboot;
                rec.note = match Fallback::of(&info) {
                    Some(why) => format!("{}; fell back ({}): {why}", info.summary(), why.code()),
                    None => match &info.fallback {
                        Some(why) => format!("{}; fell back: {why}", info.summary()),
                        None => info.summary(),
                    },
                };
            }
            other => {
                rec.outcome = Outcome::Hung;
                rec.note = format!("the VM stopped: {other:?}");
            }
        }
        rec
    }
}

/// How the command that starts extclient begins.
const EXTCLIENT: &str = "run extclient ";

/// The shell command that starts extclient on the target's device.
fn extclient_command(t: Target) -> String {
    format!("{EXTCLIENT}{} &", t.dev)
}

/// Gives `vm` a fresh sparse disk in a new temporary directory: never the
/// user's image, and never one another VM (an earlier boot of this
/// campaign, or another campaign) has, so each boot starts from an empty
/// disk as it starts from a fresh kv store.
fn own_disk(vm: &mut VmConfig) -> Result<TempDir, CampaignError> {
    let dir = tempfile::Builder::new()
        .prefix("lazarus-campaign-")
        .tempdir()
        .map_err(CampaignError::DiskDir)?;
    let (image, _) = DiskImage::open_or_create(&dir.path().join("disk.img"), DEFAULT_DISK_SIZE)
        .map_err(CampaignError::Disk)?;
    let mut block = Block::new(image);
    block.set_id(b"lazarus-campaign");
    vm.virtio.push(Box::new(block));
    Ok(dir)
}
