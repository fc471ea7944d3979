//! Reading `extclient`'s reports: the guest program that keeps writing
//! and reading back the target extension, so that a fault which does not
//! crash the kernel but breaks the extension still shows.

use std::time::{Duration, Instant};

use crate::driver::Driver;

/// How long to wait for extclient's reports after a fault that did not
/// crash the kernel (it reports every 200 ms).
pub(crate) const EXT_REPORT_WAIT: Duration = Duration::from_millis(1500);

/// extclient's counters from one report line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ExtProgress {
    /// Counts reports: a restarted extclient starts again from zero, so
    /// this is the campaign's own count, not extclient's round.
    pub(crate) seq: u64,
    pub(crate) ok: u64,
    pub(crate) errors: u64,
}

/// The last `extclient: round R ok O errors E mismatches M` line in
/// `text`; `seq` is the number of such lines.
pub(crate) fn last_ext_report(text: &str) -> Option<ExtProgress> {
    let mut last = None;
    let mut seq = 0;
    for line in text.lines().filter(|l| l.starts_with("extclient: round ")) {
        let nums: Vec<u64> = line
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        if let [_, ok, errors, _] = nums[..] {
            seq += 1;
            last = Some(ExtProgress { seq, ok, errors });
        }
    }
    last
}

/// Waits for extclient to make progress without new errors.
pub(crate) fn ext_serves_again(d: &mut Driver) -> bool {
    d.mark();
    let until = Instant::now() + Duration::from_secs(2);
    let mut first: Option<ExtProgress> = None;
    while Instant::now() < until {
        std::thread::sleep(Duration::from_millis(100));
        let Some(now) = last_ext_report(&d.take_since_mark()) else {
            continue;
        };
        match first {
            None => first = Some(now),
            Some(f) if now.seq > f.seq => return now.ok > f.ok && now.errors == f.errors,
            Some(_) => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_report_wins_and_reports_are_counted() {
        let text = "\
extclient: round 1 ok 10 errors 0 mismatches 0
worker alpha: round 3
extclient: round 2 ok 20 errors 1 mismatches 0
extclient: round garbled
";
        assert_eq!(
            last_ext_report(text),
            Some(ExtProgress {
                seq: 2,
                ok: 20,
                errors: 1
            })
        );
        assert_eq!(last_ext_report("nothing here"), None);
    }
}
