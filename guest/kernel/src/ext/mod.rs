//! Kernel extensions: loading position-independent ELF modules into ring 0
//! (`loader`), the API table they call the kernel through (`api`), and
//! their devices (`dev`).

mod api;
mod dev;
mod loader;
mod slot;

pub use dev::{close_orphans, complain, dev_close, dev_ioctl, dev_open, dev_read, dev_write};
pub use loader::{list, load, reinit, unload};
pub use slot::in_irq_of;
