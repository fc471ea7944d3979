//! `lazarus demo`: the whole story in one command. Boot the default image,
//! load the workloads, crash the kernel in several different ways, show
//! each resurrection, and verify the survivors at the end.

use std::time::Duration;

use lazarus_campaign::driver::{Driver, PROMPT, kv_check};
use lazarus_events::{Event, EventLog};
use lazarus_resurrect::{Recovery, ResurrectConfig};
use lazarus_vmm::{ConsoleOutput, Vm, VmOutcome};

use crate::cli::DemoArgs;
use crate::exit::{BAD_INPUT, INTERNAL, failure};
use crate::image::BootImage;

const KINDS: &[(&str, &str)] = &[
    ("null-read", "a null-pointer read in a driver"),
    (
        "deadlock",
        "a deadlock on a kernel lock held by another process",
    ),
    (
        "timer-fault",
        "a fault in interrupt context (a driver's timer callback)",
    ),
    (
        "list-corruption",
        "a use-after-free that corrupts a kernel list",
    ),
    ("hard-lockup", "an infinite loop with interrupts off"),
    ("stack-overflow", "a kernel stack overflow"),
    ("triple-fault", "a triple fault"),
];

pub fn run(args: &DemoArgs) -> anyhow::Result<u8> {
    let image = BootImage::load(&args.image)?;
    let sink = args
        .events
        .as_deref()
        .map(crate::events::open)
        .transpose()?;
    let events = sink.as_ref().map_or_else(EventLog::disabled, |s| s.log());
    let (mut d, input, tee) = Driver::new(Some(Box::new(std::io::stdout())));
    let data = lazarus_crashdb::DataDir::resolve(None)
        .map_err(|e| failure(BAD_INPUT, format!("data directory: {e}")))?;
    data.ensure()
        .map_err(|e| failure(BAD_INPUT, format!("data directory: {e}")))?;
    let disk = crate::disk::open(&args.disk, &data)?;
    let mut config = image.config(&args.image);
    if let Some(d) = &disk {
        config.virtio.push(d.device()?);
    }
    config.console_in = input;
    config.console_out = ConsoleOutput::Writer(Box::new(tee));
    let (tx, rx) = std::sync::mpsc::channel::<Recovery>();
    let mut rc = ResurrectConfig::new(lazarus_image::REPAIR_ELF);
    rc.listener = Some(tx);
    config.crash_handler = Some(Box::new(rc));
    let mut vm = Vm::new(config).map_err(|e| image.explain(e))?;
    if let Some(d) = &disk {
        eprintln!("lazarus: {}", d.describe());
    }
    // The demo keeps no dumps: its events are the boot, the crashes and
    // the resurrections.
    let boot_id = lazarus_triage::new_boot_id();
    let boot = Event::Boot {
        vcpus: args.image.vcpus,
        memory_mib: args.image.memory,
        on_crash: "resurrect".into(),
    };
    events.event(Some(&boot_id), Some(1), boot);
    let listener = {
        let events = events.clone();
        std::thread::spawn(move || {
            for rec in rx {
                crate::events::resurrected(&events, &boot_id, 1, &rec);
            }
        })
    };
    let stop = vm.stop_handle();
    let runner = std::thread::spawn(move || {
        let r = vm.run();
        (vm, r)
    });
    let t = Duration::from_secs(60);
    let say = |s: &str| eprintln!("\n\x1b[1m== {s}\x1b[0m");
    let result = (|| -> anyhow::Result<()> {
        d.expect(PROMPT, t)?;
        say("the workloads: 300 verified keys in the kv store, two CPU-bound workers");
        d.cmd("kv fill 300", t)?;
        d.cmd("run worker alpha 3600 &", t)?;
        d.cmd("run worker beta 3600 &", t)?;
        d.cmd("ps", t)?;
        for (kind, what) in KINDS.iter().take(args.crashes.max(1)) {
            say(&format!("crash: {what} (crash {kind})"));
            d.send(&format!("crash {kind}"));
            d.expect("[lazarus] resurrected after", t)?;
            d.expect("\n", t)?;
            d.resync()?;
        }
        say("after the crashes: the survivors");
        d.cmd("recoveries", t)?;
        d.cmd("ps", t)?;
        let out = d.cmd("kv check", t)?;
        match kv_check(&out) {
            Some((300, 0)) => {}
            other => anyhow::bail!("kv check did not pass: {other:?}"),
        }
        d.expect("worker alpha: round", t)?;
        d.expect("worker beta: round", t)?;
        say("every key intact, both workers still progressing, no reboot");
        d.send("poweroff");
        Ok(())
    })();
    if result.is_err() {
        stop.stop();
    }
    let (vm, outcome) = runner
        .join()
        .map_err(|_| failure(INTERNAL, "the VM thread panicked"))?;
    // The VM's crash handler holds the listener's channel.
    drop(vm);
    let _ = listener.join();
    let code = (|| {
        result.map_err(|e| failure(INTERNAL, format!("demo failed: {e:#}")))?;
        match outcome? {
            VmOutcome::PowerOff(0) => Ok(0),
            other => Err(failure(
                BAD_INPUT,
                format!("the guest ended unexpectedly: {other:?}"),
            )),
        }
    })();
    if let Some(sink) = sink {
        let (code, reason) = match &code {
            Ok(c) => (*c, "the demo is done".to_string()),
            Err(e) => (crate::exit::code(e), crate::exit::message(e)),
        };
        events.event(None, None, Event::Exit { code, reason });
        crate::events::close(sink);
    }
    code
}
