//! Quitting `lazarus run` on the user's word (Ctrl-A X on its terminal,
//! or SIGINT, SIGTERM or SIGHUP): the guest is stopped, crash dumps still
//! being written are finished first, and a second request quits at once,
//! saying what is lost.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use lazarus_vmm::StopHandle;

use crate::terminal;

/// Who asked to quit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Ctrl-A X on the console.
    Escape,
    /// A signal (its number).
    Signal(i32),
}

impl Reason {
    /// The exit code: 0 for Ctrl-A X (as QEMU), 128 + the signal number
    /// for a signal (as a shell reports a process a signal ended).
    pub fn exit_code(self) -> u8 {
        match self {
            Reason::Escape => 0,
            Reason::Signal(s) => u8::try_from(128 + s).unwrap_or(u8::MAX),
        }
    }

    fn describe(self) -> String {
        match self {
            Reason::Escape => "Ctrl-A X".into(),
            Reason::Signal(libc::SIGINT) => "SIGINT".into(),
            Reason::Signal(libc::SIGTERM) => "SIGTERM".into(),
            Reason::Signal(libc::SIGHUP) => "SIGHUP".into(),
            Reason::Signal(s) => format!("signal {s}"),
        }
    }
}

#[derive(Default)]
struct State {
    reason: Option<Reason>,
    /// Stops the VM running now, if one is.
    vm: Option<StopHandle>,
}

/// The session's quit state, shared by the console reader, the signal
/// thread and the run loop.
#[derive(Clone, Default)]
pub struct Quit {
    state: Arc<Mutex<State>>,
    /// Crash dumps being written when the run loop began to wait for
    /// them (what a second request loses).
    waiting_for: Arc<AtomicUsize>,
    /// The dumps already named as waited for (each is named once).
    named: Arc<Mutex<Vec<String>>>,
}

impl Quit {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Handles SIGINT, SIGTERM and SIGHUP as quit requests from now on.
    pub fn on_signals(&self) -> std::io::Result<()> {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])?;
        let quit = self.clone();
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                for s in signals.forever() {
                    quit.request(Reason::Signal(s));
                }
            })?;
        Ok(())
    }

    /// The first request stops the guest; the run loop then finishes.
    /// A second one exits at once.
    pub fn request(&self, reason: Reason) {
        let mut st = self.lock();
        if let Some(first) = st.reason {
            drop(st);
            terminal::restore();
            let lost = self.waiting_for.load(Ordering::SeqCst);
            eprintln!(
                "\r\nlazarus: quitting at once ({}): {lost} crash dump(s) still being written are lost",
                reason.describe()
            );
            std::process::exit(i32::from(first.exit_code()));
        }
        st.reason = Some(reason);
        eprintln!(
            "\r\nlazarus: quitting ({}): stopping the guest; its processes and memory are lost",
            reason.describe()
        );
        if let Some(vm) = &st.vm {
            vm.stop();
        }
    }

    /// Why the session quits, if it does.
    pub fn reason(&self) -> Option<Reason> {
        self.lock().reason
    }

    /// The VM now running (`None` between boots). A request that came
    /// before stops it at once.
    pub fn attach(&self, vm: Option<StopHandle>) {
        let mut st = self.lock();
        if let (Some(_), Some(h)) = (st.reason, &vm) {
            h.stop();
        }
        st.vm = vm;
    }

    /// Says that the session waits for the crash dumps `names` before it
    /// ends (quit, or the guest powered off): how many, and which. Says
    /// nothing when it has named them all before.
    pub fn waiting_for_dumps(&self, names: &[String]) {
        let n = names.len();
        self.waiting_for.store(n, Ordering::SeqCst);
        let mut named = self.named.lock().unwrap_or_else(|p| p.into_inner());
        if names.iter().all(|name| named.contains(name)) {
            return;
        }
        named.extend(names.iter().cloned());
        eprintln!("{}", waiting_message(names, self.reason().is_some()));
    }
}

/// What the session says while it waits for the crash dumps `names`.
fn waiting_message(names: &[String], quitting: bool) -> String {
    let (n, which) = (names.len(), names.join("; "));
    if quitting {
        format!(
            "lazarus: finishing {n} crash dump(s) before quitting (quit again to skip them): {which}"
        )
    } else {
        format!("lazarus: waiting for {n} crash dump(s) to be written: {which}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_for_dumps_says_how_many_and_which() {
        let names = ["null-deref (boot 1, recovery 2)".to_string(), "x".into()];
        assert_eq!(
            waiting_message(&names, false),
            "lazarus: waiting for 2 crash dump(s) to be written: null-deref (boot 1, recovery 2); x"
        );
        assert!(waiting_message(&names[..1], true).starts_with(
            "lazarus: finishing 1 crash dump(s) before quitting (quit again to skip them): null-deref"
        ));
    }
}
