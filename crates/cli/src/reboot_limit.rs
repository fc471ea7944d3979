//! When `lazarus run` stops rebooting the guest: a guest that cannot boot,
//! or that keeps crashing, would otherwise reboot forever (about ten times
//! a second, a dump each time). The decision is kept here, away from the
//! run loop, with the clock passed in so that it can be tested.
//!
//! Two rules, in the spirit of libvirt's and vm-bhyve's crash-loop limits:
//! a reboot after a crash that crashes again before the shell prompt gives
//! up at once (the guest cannot boot; rebooting it again cannot help), and
//! more than `max` reboots (after crashes or asked for by the guest) within
//! `window` give up too (a crash loop).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Default `--max-reboots`: enough to ride out a few unrelated crashes,
/// few enough that a loop is stopped within seconds.
pub const DEFAULT_MAX_REBOOTS: u32 = 5;
/// Default `--reboot-window` in seconds (libvirt-like: a minute).
pub const DEFAULT_WINDOW_SECS: u64 = 60;

/// Why a boot ended with a reboot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// The kernel crashed and could not be resurrected.
    Crash,
    /// The guest asked for a reboot (the `reboot` hypercall).
    Requested,
}

/// Counts reboots and decides when to give up (see the module doc).
#[derive(Debug)]
pub struct RebootLimit {
    max: u32,
    /// `None`: reboots never expire (count over the whole run).
    window: Option<Duration>,
    /// When the reboots still inside the window happened, oldest first.
    recent: VecDeque<Instant>,
    /// The previous boot ended in a crash.
    after_crash: bool,
}

impl RebootLimit {
    /// At most `max` reboots within `window` (a zero window: within the
    /// whole run).
    pub fn new(max: u32, window: Duration) -> Self {
        Self {
            max,
            window: (!window.is_zero()).then_some(window),
            recent: VecDeque::new(),
            after_crash: false,
        }
    }

    /// A boot ended for `cause` at `now`, having reached the shell prompt
    /// or not. `Ok` to reboot; `Err` with the reason to give up.
    pub fn on_reboot(
        &mut self,
        cause: Cause,
        reached_shell: bool,
        now: Instant,
    ) -> Result<(), String> {
        let crash = cause == Cause::Crash;
        if crash && !reached_shell && self.after_crash {
            return Err(
                "the guest crashed again before its shell prompt after a reboot (it cannot boot); giving up"
                    .into(),
            );
        }
        self.after_crash = crash;
        if let Some(w) = self.window {
            while self
                .recent
                .front()
                .is_some_and(|&t| now.saturating_duration_since(t) >= w)
            {
                self.recent.pop_front();
            }
        }
        self.recent.push_back(now);
        if self.recent.len() > self.max as usize {
            let within = match self.window {
                Some(w) => format!("within {} s", w.as_secs_f64()),
                None => "in this run".into(),
            };
            return Err(format!(
                "the guest needed {} reboots {within} (crash loop; at most --max-reboots {} allowed); giving up",
                self.recent.len(),
                self.max
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn a_crash_loop_stops_after_max_reboots_in_the_window() {
        let mut l = RebootLimit::new(5, 60 * S);
        let t0 = Instant::now();
        for i in 0..5 {
            assert_eq!(l.on_reboot(Cause::Crash, true, t0 + i * S), Ok(()));
        }
        let e = l.on_reboot(Cause::Crash, true, t0 + 5 * S).unwrap_err();
        assert!(e.contains("6 reboots within 60 s"), "{e}");
    }

    #[test]
    fn reboots_outside_the_window_are_forgotten() {
        let mut l = RebootLimit::new(2, 10 * S);
        let t0 = Instant::now();
        for i in 0..20 {
            // One reboot every 6 s: never more than 2 within 10 s.
            assert_eq!(l.on_reboot(Cause::Crash, true, t0 + i * 6 * S), Ok(()));
        }
        assert!(l.on_reboot(Cause::Crash, true, t0 + 115 * S).is_err());
    }

    #[test]
    fn guest_requested_reboots_count_too() {
        let mut l = RebootLimit::new(1, 60 * S);
        let t0 = Instant::now();
        assert_eq!(l.on_reboot(Cause::Requested, false, t0), Ok(()));
        assert!(l.on_reboot(Cause::Requested, false, t0 + S).is_err());
    }

    #[test]
    fn a_boot_that_crashes_after_a_crash_stops_at_once() {
        let mut l = RebootLimit::new(100, 60 * S);
        let t0 = Instant::now();
        // The first boot crashing early is given one more chance.
        assert_eq!(l.on_reboot(Cause::Crash, false, t0), Ok(()));
        let e = l.on_reboot(Cause::Crash, false, t0 + S).unwrap_err();
        assert!(e.contains("before its shell prompt"), "{e}");
    }

    #[test]
    fn a_crash_after_the_shell_prompt_is_not_a_boot_failure() {
        let mut l = RebootLimit::new(100, 60 * S);
        let t0 = Instant::now();
        assert_eq!(l.on_reboot(Cause::Crash, false, t0), Ok(()));
        assert_eq!(l.on_reboot(Cause::Crash, true, t0 + S), Ok(()));
        // After a requested reboot an early crash gets its one retry.
        assert_eq!(l.on_reboot(Cause::Requested, true, t0 + 2 * S), Ok(()));
        assert_eq!(l.on_reboot(Cause::Crash, false, t0 + 3 * S), Ok(()));
    }

    #[test]
    fn zero_max_allows_no_reboot_and_zero_window_never_forgets() {
        let t0 = Instant::now();
        assert!(
            RebootLimit::new(0, 60 * S)
                .on_reboot(Cause::Requested, true, t0)
                .is_err()
        );
        let mut l = RebootLimit::new(1, Duration::ZERO);
        assert_eq!(l.on_reboot(Cause::Crash, true, t0), Ok(()));
        let e = l.on_reboot(Cause::Crash, true, t0 + 3600 * S).unwrap_err();
        assert!(e.contains("in this run"), "{e}");
    }
}
