//! `lazarus run`: boot the guest with its console on stdin/stdout.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::Context;
use lazarus_abi::hypercall::MILESTONE_SHELL_PROMPT;
use lazarus_crashdb::{CrashDb, DataDir};
use lazarus_events::{Event, EventLog};
use lazarus_resurrect::{Fallback, Recovery, ResurrectConfig};
use lazarus_triage::{Persisted, Triage, TriageError, new_boot_id};
use lazarus_vmm::{ConsoleInput, ConsoleOutput, Vm, VmOutcome};

use crate::api::{Api, ApiSession};
use crate::cli::{OnCrash, RunArgs};
use crate::crashes_cmd;
use crate::exit::{BAD_INPUT, CRASHED, INTERNAL, failure};
use crate::image::BootImage;
use crate::quit::{Quit, Reason};
use crate::reboot_limit::{Cause, RebootLimit};
use crate::terminal::{self, EscapeAction, EscapeReader, RawMode};

/// Runs the guest; returns the process exit code.
pub fn run(args: &RunArgs) -> anyhow::Result<u8> {
    let image = BootImage::load(&args.image)?;
    let timeout = match args.timeout {
        None => None,
        Some(secs) => Some(
            Duration::try_from_secs_f64(secs)
                .map_err(|_| failure(BAD_INPUT, format!("invalid --timeout {secs}")))?,
        ),
    };
    let data = DataDir::resolve(args.data_dir.as_deref())
        .map_err(|e| failure(BAD_INPUT, format!("data directory: {e}")))?
        .with_crash_db(crashes_cmd::crash_db_location(args.crash_db.as_deref())?)
        .with_prune_policy(args.budget.policy());
    // A shared database that cannot be reached fails now, not at the first
    // crash (it also creates or migrates the schema once, up front).
    if data.has_external_db() {
        CrashDb::open_location(&data.crash_db()).map_err(crashes_cmd::db_error)?;
    }
    // `--events`: opened before anything boots (a bad path exits 4).
    let sink = args
        .events
        .as_deref()
        .map(crate::events::open)
        .transpose()?;
    let events = sink.as_ref().map_or_else(EventLog::disabled, |s| s.log());
    let mut crashes = Triage::new(&image.kernel, &image.initramfs, data.clone())
        .map_err(|e| failure(BAD_INPUT, e.to_string()))?;
    // Held until exit; removes the dumps an interrupted run left half
    // written, unless another run is using this data directory.
    let _session = data
        .start_session()
        .map_err(|e| failure(BAD_INPUT, format!("data directory: {e}")))?;
    if !_session.removed.is_empty() {
        eprintln!(
            "lazarus: removed {} partial dump(s) left by an interrupted run",
            _session.removed.len()
        );
    }
    let crashes_bg = crashes.background_handle();
    // Quitting on the user's word: Ctrl-A X on a terminal, or a signal.
    let quit = Quit::default();
    quit.on_signals()
        .map_err(|e| failure(INTERNAL, format!("cannot handle signals: {e}")))?;
    // On a terminal: raw mode until lazarus exits (the guard restores it
    // on every return, the panic hook and `quit` on the other exits).
    let raw = RawMode::enable().map_err(|e| {
        failure(
            INTERNAL,
            format!("cannot put the terminal in raw mode: {e}"),
        )
    })?;
    // One input queue for the whole session, so that input not yet read
    // by the guest survives a reboot.
    let input = if raw.is_some() {
        eprintln!("{}", terminal::BANNER);
        let q = quit.clone();
        ConsoleInput::from_reader(EscapeReader::new(std::io::stdin(), move |a| match a {
            EscapeAction::Quit => q.request(Reason::Escape),
            EscapeAction::Help => eprint!("{}", terminal::HELP),
        }))
    } else {
        ConsoleInput::stdin()
    };
    // Crash dumps not written yet, by name.
    let in_flight = crashes.in_flight().clone();
    // The control API serves the whole session, across reboots.
    let policy = match args.on_crash {
        OnCrash::Resurrect => "resurrect",
        OnCrash::Halt => "halt",
        OnCrash::Reboot => "reboot",
    };
    let api = match &args.api_sock {
        Some(path) => {
            let session = ApiSession::new(
                policy,
                args.image.vcpus,
                args.image.memory,
                data.clone(),
                crashes_bg.clone(),
                input.clone(),
            )
            .with_events(events.clone());
            Some(Api::start(path, session)?)
        }
        None => None,
    };
    // Held for the whole session: a reboot never lets the lock go. Taken
    // after the API socket, so that a bad socket is reported as such.
    let disk = crate::disk::open(&args.disk, &data)?;
    let mut boots = 0u64;
    let mut limit = RebootLimit::new(args.max_reboots, Duration::from_secs(args.reboot_window));
    // Set while rebooting after a crash: when the crash was detected.
    let mut crashed_at: Option<Instant> = None;
    // Boots whose crash dump is written in the background (for its event).
    let mut crash_boots: Vec<(String, u64)> = Vec::new();
    let result = loop {
        boots += 1;
        if quit.reason().is_some() {
            break Ok(0);
        }
        let mut config = image.config(&args.image);
        if raw.is_some() {
            // The guest's console is a terminal: its shell echoes and
            // edits, and Ctrl-C interrupts the foreground job.
            config.cmdline = format!("{} lazarus.console=tty", config.cmdline)
                .trim()
                .to_string();
        }
        if let Some(d) = &disk {
            match d.device() {
                Ok(dev) => config.virtio.push(dev),
                Err(e) => break Err(e),
            }
        }
        config.console_out = ConsoleOutput::Stdout;
        config.console_in = input.clone();
        config.timeout = timeout;
        config.watchdog = (args.watchdog_ms > 0).then(|| Duration::from_millis(args.watchdog_ms));
        let boot_id = new_boot_id();
        let listener = if args.on_crash == OnCrash::Resurrect {
            let (tx, rx) = std::sync::mpsc::channel::<Recovery>();
            let mut rc = ResurrectConfig::new(lazarus_image::REPAIR_ELF);
            rc.slot = args.repair_slot.into();
            rc.ext_crash_limit = args.ext_crash_limit;
            rc.listener = Some(tx);
            config.crash_handler = Some(Box::new(rc));
            // Dumps of resurrected crashes are written off the guest's path.
            let bg = crashes_bg.clone();
            let boot = boot_id.clone();
            let api_session = api.as_ref().map(|a| a.session().clone());
            let boot_nr = boots;
            let in_flight = in_flight.clone();
            let events = events.clone();
            Some(std::thread::spawn(move || {
                // Dumps are written one at a time by a writer thread; each
                // is noted in flight as soon as its recovery arrives, so
                // the end of the session can say which it waits for.
                let (wtx, wrx) = std::sync::mpsc::channel();
                let (w_events, w_boot) = (events.clone(), boot.clone());
                let writer = std::thread::spawn(move || {
                    for (rec, guard) in wrx {
                        let r = bg.persist_recovery(rec, &w_boot);
                        if let Ok(p) = &r {
                            let e = crate::events::dump_written(p, false);
                            w_events.event(Some(&w_boot), Some(boot_nr), e);
                        }
                        print_result(&r);
                        drop(guard);
                    }
                });
                for rec in rx {
                    eprintln!("lazarus: {}", rec.summary());
                    if let Some(s) = &api_session {
                        s.record_recovery(&rec, boot_nr);
                    }
                    crate::events::resurrected(&events, &boot, boot_nr, &rec);
                    let name = format!("{} (boot {boot_nr}, recovery {})", rec.kind(), rec.seq);
                    let _ = wtx.send((rec, in_flight.start(name)));
                }
                drop(wtx);
                let _ = writer.join();
            }))
        } else {
            None
        };
        // No `?` in the loop: the dumps still being written must be
        // finished (see `crashes.finish()` below) whatever ends the run.
        let mut vm = match Vm::new(config) {
            Ok(vm) => vm,
            Err(e) => break Err(image.explain(e)),
        };
        if let Some(a) = &api {
            a.session().attach(vm.control(), &boot_id, boots);
        }
        let boot_event = Event::Boot {
            vcpus: args.image.vcpus,
            memory_mib: args.image.memory,
            on_crash: policy.to_string(),
        };
        events.event(Some(&boot_id), Some(boots), boot_event);
        quit.attach(Some(vm.stop_handle()));
        if boots == 1
            && let Some(d) = &disk
        {
            eprintln!("lazarus: {}", d.describe());
        }
        if boots == 1
            && let Some(size) = lazarus_resurrect::image_size(&vm)
        {
            eprintln!(
                "lazarus: repair image: {} KiB in host memory, outside the guest (program {} KiB, pristine code {} KiB, symbols {} KiB for {} functions, page tables {} KiB, stack and mailbox)",
                size.total / 1024,
                size.program / 1024,
                size.pristine / 1024,
                size.symbols / 1024,
                size.symbol_count,
                size.page_tables / 1024
            );
        }
        if crashed_at.is_some() {
            vm.set_stop_milestone(Some(MILESTONE_SHELL_PROMPT));
        }
        let next = loop {
            let outcome = match vm.run().context("running the guest") {
                Ok(outcome) => outcome,
                Err(e) => break Err(e),
            };
            // Make sure everything the guest printed is out before we talk.
            let _ = std::io::stdout().flush();
            report_dumps(&crashes.finished(), &events, &crash_boots);
            tracing::info!(
                exits = vm.exit_counts().total(),
                ?outcome,
                "guest run {boots} ended"
            );
            match outcome {
                VmOutcome::MilestoneReached(_) if crashed_at.is_some() => {
                    if let Some(t0) = crashed_at.take() {
                        eprintln!(
                            "lazarus: rebooted after the crash: {:.1} ms from crash to shell prompt; \
                             every process and all guest state were lost",
                            t0.elapsed().as_secs_f64() * 1e3
                        );
                    }
                    vm.set_stop_milestone(None);
                }
                VmOutcome::PowerOff(status) => break Ok(Some(exit_status(status))),
                VmOutcome::RebootRequested => {
                    if let Err(why) = limit.on_reboot(
                        Cause::Requested,
                        vm.milestone(MILESTONE_SHELL_PROMPT).is_some(),
                        Instant::now(),
                    ) {
                        break Err(failure(CRASHED, why));
                    }
                    eprintln!("lazarus: the guest asked for a reboot; restarting it");
                    if let Some(a) = &api {
                        a.session().rebooted("requested");
                    }
                    let e = Event::Reboot {
                        cause: "requested".into(),
                    };
                    events.event(Some(&boot_id), Some(boots), e);
                    break Ok(None);
                }
                VmOutcome::Crash(info) => {
                    let action = match args.on_crash {
                        OnCrash::Halt => "halt",
                        OnCrash::Reboot => "reboot",
                        OnCrash::Resurrect => "fallback-reboot",
                    };
                    // The capture reads the kernel's own account once; its
                    // note's detail is the line printed.
                    let captured = lazarus_triage::capture_crash(
                        crashes.build_ids(),
                        &vm,
                        &info,
                        &boot_id,
                        action,
                    );
                    let summary = captured.note.detail.clone();
                    eprintln!("lazarus: the guest crashed: {summary}");
                    if let Some(a) = &api {
                        a.session().crash_detected(&info);
                    }
                    crate::events::crash_ended_boot(&events, &boot_id, boots, &info, &summary);
                    // Decided before saying "rebooting": a boot failure or
                    // a crash loop ends the run instead.
                    let give_up = match args.on_crash {
                        OnCrash::Halt => None,
                        OnCrash::Reboot | OnCrash::Resurrect => limit
                            .on_reboot(
                                Cause::Crash,
                                vm.milestone(MILESTONE_SHELL_PROMPT).is_some(),
                                info.detected_at,
                            )
                            .err(),
                    };
                    let then = if give_up.is_some() {
                        "giving up"
                    } else {
                        "rebooting"
                    };
                    match (Fallback::of(&info), &info.fallback) {
                        (Some(why), _) => eprintln!(
                            "lazarus: cannot resurrect it safely ({why}; {}); {then}",
                            why.code()
                        ),
                        (None, Some(why)) => {
                            eprintln!("lazarus: cannot resurrect it safely ({why}); {then}")
                        }
                        (None, None) => {}
                    }
                    match args.on_crash {
                        OnCrash::Halt => {
                            let r = crashes.persist(captured);
                            if let Ok(p) = &r {
                                eprint!("{}", p.text);
                                let e = crate::events::dump_written(p, false);
                                events.event(Some(&boot_id), Some(boots), e);
                            }
                            print_result(&r);
                            break Err(failure(CRASHED, format!("the guest crashed: {summary}")));
                        }
                        OnCrash::Reboot | OnCrash::Resurrect => {
                            // The dump is written while the guest reboots
                            // (or by `finish` below if we give up).
                            crashes.persist_in_background(captured);
                            crash_boots.push((boot_id.clone(), boots));
                            if let Some(why) = give_up {
                                break Err(failure(CRASHED, why));
                            }
                            crashed_at = Some(info.detected_at);
                            eprintln!("lazarus: rebooting the guest");
                            if let Some(a) = &api {
                                a.session().rebooted("crash");
                            }
                            let e = Event::Reboot {
                                cause: "crash".into(),
                            };
                            events.event(Some(&boot_id), Some(boots), e);
                            break Ok(None);
                        }
                    }
                }
                VmOutcome::TimedOut => {
                    break Err(failure(
                        INTERNAL,
                        format!(
                            "the guest did not finish within --timeout ({})",
                            where_is_the_guest(&vm)
                        ),
                    ));
                }
                VmOutcome::Stopped if quit.reason().is_some() => break Ok(None),
                VmOutcome::MilestoneReached(_) | VmOutcome::Stopped => {
                    break Err(failure(INTERNAL, "the VM stopped unexpectedly"));
                }
            }
        };
        if let Some(a) = &api {
            a.session().detach();
        }
        quit.attach(None);
        drop(vm);
        if let Some(l) = listener {
            quit.waiting_for_dumps(&in_flight.names());
            let _ = l.join();
        }
        match next {
            Ok(None) => continue,
            Ok(Some(code)) => break Ok(code),
            Err(e) => break Err(e),
        }
    };
    quit.waiting_for_dumps(&in_flight.names());
    report_dumps(&crashes.finish(), &events, &crash_boots);
    // Removes the API socket.
    drop(api);
    let result = match quit.reason() {
        // Whatever the guest was doing, the user ended it.
        Some(reason) => Ok(reason.exit_code()),
        None => result,
    };
    if let Some(sink) = sink {
        let (code, reason) = match (&result, quit.reason()) {
            (Ok(code), Some(_)) => (*code, "quit".to_string()),
            (Ok(code), None) => (*code, "the guest powered off".to_string()),
            (Err(e), _) => (crate::exit::code(e), crate::exit::message(e)),
        };
        events.event(None, None, Event::Exit { code, reason });
        crate::events::close(sink);
    }
    result
}

/// Lines for dumps written in the background, and their events (`boots`:
/// the boots whose crash dumps were written so).
fn report_dumps(
    results: &[Result<Persisted, TriageError>],
    events: &EventLog,
    boots: &[(String, u64)],
) {
    for r in results {
        if let Ok(p) = r {
            crate::events::dump_of_boot(events, p, boots);
        }
        print_result(r);
    }
}

/// One line for a dump written (or not).
fn print_result(r: &Result<Persisted, TriageError>) {
    match r {
        Ok(p) => eprintln!(
            "lazarus: crash {}: {}; dump {}; report {}",
            p.signature,
            p.title,
            p.dump.display(),
            p.report_json.display()
        ),
        Err(e) => eprintln!("lazarus: warning: could not save the crash: {e}"),
    }
}

/// The process exit code for a guest power-off status: the low 8 bits,
/// except that a nonzero status never becomes a (successful) 0.
fn exit_status(status: i32) -> u8 {
    match (status & 0xff) as u8 {
        0 if status != 0 => 1,
        code => code,
    }
}

/// A short description of a stuck guest: where vCPU 0 is, whether the
/// kernel's timer still ticks, and how many exits it made.
fn where_is_the_guest(vm: &Vm) -> String {
    let mut parts = Vec::new();
    if let Some(regs) = vm.vcpu_fd(0).and_then(|fd| fd.get_regs().ok()) {
        parts.push(format!("vCPU 0 at rip {:#x}", regs.rip));
    }
    match vm.root_header() {
        Ok(header) => parts.push(format!("kernel heartbeat {}", header.heartbeat)),
        Err(e) => parts.push(e.to_string()),
    }
    parts.push(format!("{} guest exits", vm.exit_counts().total()));
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::exit_status;

    #[test]
    fn power_off_status_maps_to_exit_code() {
        assert_eq!(exit_status(0), 0);
        assert_eq!(exit_status(7), 7);
        assert_eq!(exit_status(-1), 255);
        assert_eq!(exit_status(256), 1);
    }
}
