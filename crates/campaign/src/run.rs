//! The campaign loop: boot, inject faults one after another, sample
//! memory, boot a new VM whenever a fault left the guest unusable, and
//! summarize.

use std::time::Instant;

use lazarus_inject::Injector;
use lazarus_vmm::VmConfig;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::config::CampaignConfig;
use crate::error::{CampaignError, chain};
use crate::fault::{Faults, one_fault};
use crate::outcome::{FaultRecord, Outcome};
use crate::report::{Collected, Report, summarize};
use crate::session::Session;
use crate::soak::Sampler;

/// Runs a campaign.
///
/// `vm` gives the configuration of each VM to boot (the campaign sets
/// its console and crash handler, and adds a fresh disk of its own when
/// the target needs one, so `vm` should give none); it is called again
/// for every reboot.
/// `progress` sees every fault's record as soon as it is classified.
/// An error while booting ends the campaign; an error during one fault
/// ends that fault as [`Outcome::Hung`] and the campaign goes on.
pub fn run(
    config: &CampaignConfig,
    vm: impl Fn() -> VmConfig,
    mut progress: impl FnMut(&FaultRecord),
) -> Result<Report, CampaignError> {
    let types = config.validate()?;
    let start = Instant::now();
    let deadline = config.soak.map(|d| start + d);

    let mut injector = Injector::new(config.seed);
    // Fault types and crash kinds come from their own stream, so the
    // choice does not depend on how many random numbers an injection used.
    let mut pick = ChaCha8Rng::seed_from_u64(config.seed ^ 0x5eed_7e57);
    let mut records: Vec<FaultRecord> = Vec::new();
    let mut sampler = Sampler::new(start);
    let mut boots = 1u64;
    let first = vm();
    // Recorded from what was booted, so the report cannot disagree with it.
    let vcpus = first.vcpus;
    let mut session = Session::boot(first, config)?;

    let mut n = 0u64;
    loop {
        let more = match deadline {
            Some(d) => Instant::now() < d,
            None => n < config.faults,
        };
        if !more {
            break;
        }
        sampler.maybe_sample(&session.control, n);
        n += 1;
        let fault = types[pick.random_range(0..types.len())].clone();
        let faults = Faults {
            injector: &mut injector,
            pick: &mut pick,
        };
        let rec = match one_fault(&mut session, faults, config, n, &fault) {
            Ok(r) => r,
            Err(e) => FaultRecord {
                outcome: Outcome::Hung,
                note: chain(&e),
                ..FaultRecord::new(n, &fault)
            },
        };
        let new_vm = rec.outcome.needs_new_vm() || session.finished() || session.broken;
        progress(&rec);
        records.push(rec);
        if new_vm {
            let _ = session.shut_down();
            session = Session::boot(vm(), config)?;
            boots += 1;
        }
    }
    sampler.sample(&session.control, n);
    let _ = session.shut_down();

    Ok(summarize(Collected {
        seed: config.seed,
        ext: config.ext.clone(),
        types,
        vcpus,
        took: start.elapsed(),
        boots,
        records,
        memory: sampler.samples,
    }))
}
