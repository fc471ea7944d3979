//! Periodic timer callbacks (run in interrupt context: keep them short and
//! use only irq-safe API functions).

/// Registers `callback(arg)` every `period` ticks; returns the timer id or
/// a negative errno.
pub fn add(callback: extern "C" fn(u64), arg: u64, period: u64) -> Result<i32, i32> {
    match (crate::api().timer_add)(callback, arg, period) {
        id if id < 0 => Err(id),
        id => Ok(id),
    }
}

/// Removes timer `id`; `Err(-EINVAL)` if it is not registered.
pub fn remove(id: i32) -> Result<(), i32> {
    match (crate::api().timer_remove)(id) {
        r if r < 0 => Err(r),
        _ => Ok(()),
    }
}

/// Timer ticks since boot.
pub fn ticks() -> u64 {
    (crate::api().ticks)()
}
