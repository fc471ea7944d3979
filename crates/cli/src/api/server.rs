//! The running API server, and the socket it removes when `lazarus run`
//! ends, also by a signal.

use std::ffi::CString;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use lazarus_api::{ApiServer, Backend, ServerConfig};

use crate::api::session::ApiSession;
use crate::exit::{BAD_INPUT, failure};

/// A running control API: the server and the session it serves.
pub struct Api {
    server: Option<ApiServer>,
    session: Arc<ApiSession>,
}

impl Api {
    /// Binds the socket and starts serving. A path that exists and is not
    /// a stale socket is refused (exit code 4).
    pub fn start(path: &Path, session: ApiSession) -> anyhow::Result<Api> {
        let session = Arc::new(session);
        let backend: Arc<dyn Backend> = session.clone();
        let server = ApiServer::start(path, backend, ServerConfig::default())
            .map_err(|e| failure(BAD_INPUT, format!("--api-sock: {e}")))?;
        remove_on_signal(path);
        Ok(Api {
            server: Some(server),
            session,
        })
    }

    pub fn session(&self) -> &Arc<ApiSession> {
        &self.session
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown();
        }
        self.session.detach();
    }
}

/// The socket to remove when a signal (Ctrl-C, SIGTERM, SIGHUP) ends the
/// process: its path, device and inode (only our own socket is removed).
static SIGNAL_SOCKET: OnceLock<(CString, u64, u64)> = OnceLock::new();

extern "C" fn remove_socket_and_die(sig: libc::c_int) {
    if let Some((path, dev, ino)) = SIGNAL_SOCKET.get() {
        // SAFETY: lstat and unlink are async-signal-safe; `path` is a
        // NUL-terminated string that lives as long as the process, and
        // `st` is a valid out-pointer.
        unsafe {
            let mut st: libc::stat = std::mem::zeroed();
            if libc::lstat(path.as_ptr(), &mut st) == 0
                && st.st_dev as u64 == *dev
                && st.st_ino as u64 == *ino
            {
                libc::unlink(path.as_ptr());
            }
        }
    }
    // SA_RESETHAND restored the default action: die of the same signal.
    // SAFETY: raise is async-signal-safe.
    unsafe { libc::raise(sig) };
}

/// Removes the socket also when a signal ends `lazarus run`; signals the
/// process ignores (e.g. SIGHUP under nohup) stay ignored.
fn remove_on_signal(path: &Path) {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return;
    };
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return;
    };
    if SIGNAL_SOCKET.set((c, meta.dev(), meta.ino())).is_err() {
        return;
    }
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: plain sigaction calls with valid, zero-initialised
        // structs; the handler only makes async-signal-safe calls.
        unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut old) != 0
                || old.sa_sigaction != libc::SIG_DFL
            {
                continue;
            }
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = remove_socket_and_die as *const () as usize;
            act.sa_flags = libc::SA_RESETHAND;
            libc::sigemptyset(&mut act.sa_mask);
            libc::sigaction(sig, &act, std::ptr::null_mut());
        }
    }
}
