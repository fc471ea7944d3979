//! Boot milestones reported to the hypervisor.

use crate::hypercall;
use lazarus_abi::hypercall::{HC_MILESTONE, MILESTONE_SHELL_PROMPT};

static mut INPUT_WAITED: bool = false;

/// The first time any process waits for console input, the system is up
/// and interactive: tell the hypervisor (the boot benchmark stops here).
pub fn note_waiting_for_input() {
    // SAFETY: the big kernel lock is held.
    unsafe {
        if !INPUT_WAITED {
            INPUT_WAITED = true;
            hypercall::call(HC_MILESTONE, [MILESTONE_SHELL_PROMPT, 0, 0, 0, 0]);
        }
    }
}
