//! Where lazarus keeps its crash database, dumps, reports and symbols.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::DbError;
use crate::location::DbLocation;
use crate::prune::PrunePolicy;

/// Environment variable that overrides the data directory.
pub const DATA_DIR_ENV: &str = "LAZARUS_DATA_DIR";

/// The project's data directory and the fixed layout inside it.
///
/// One place decides the layout so the hypervisor (which writes) and the
/// CLI (which reads) always agree on it. It also carries where crashes are
/// recorded (`--crash-db`) and the dump budget, so every writer of a
/// session follows the same settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataDir {
    root: PathBuf,
    crash_db: Option<DbLocation>,
    prune: PrunePolicy,
}

impl DataDir {
    /// A data directory at exactly `root`, with its own SQLite database
    /// and the default dump budget.
    pub fn new(root: impl Into<PathBuf>) -> DataDir {
        DataDir {
            root: root.into(),
            crash_db: None,
            prune: PrunePolicy::default(),
        }
    }

    /// Records crashes in `location` (e.g. a shared PostgreSQL server)
    /// instead of this directory's SQLite file; dumps and reports stay here.
    pub fn with_crash_db(mut self, location: Option<DbLocation>) -> DataDir {
        self.crash_db = location;
        self
    }

    /// Keeps the dumps within `policy`.
    pub fn with_prune_policy(mut self, policy: PrunePolicy) -> DataDir {
        self.prune = policy;
        self
    }

    /// Where crashes are recorded.
    pub fn crash_db(&self) -> DbLocation {
        self.crash_db
            .clone()
            .unwrap_or_else(|| DbLocation::Sqlite(self.db_path()))
    }

    /// Whether crashes go to another database than this directory's
    /// SQLite file.
    pub fn has_external_db(&self) -> bool {
        self.crash_db.is_some()
    }

    /// The dump budget.
    pub fn prune_policy(&self) -> PrunePolicy {
        self.prune
    }

    /// Resolves the data directory from the process environment:
    /// `explicit` (the CLI's `--data-dir`) > `LAZARUS_DATA_DIR` >
    /// `$XDG_DATA_HOME/lazarus` > `$HOME/.local/share/lazarus`.
    pub fn resolve(explicit: Option<&Path>) -> Result<DataDir, DbError> {
        DataDir::resolve_with(explicit, |name| std::env::var_os(name))
    }

    /// [`DataDir::resolve`] with the environment supplied by `env`, so the
    /// precedence can be tested without touching the process environment.
    pub fn resolve_with(
        explicit: Option<&Path>,
        env: impl Fn(&str) -> Option<OsString>,
    ) -> Result<DataDir, DbError> {
        if let Some(dir) = explicit {
            return Ok(DataDir::new(dir));
        }
        // Empty variables count as unset, as the XDG spec asks.
        let var = |name: &str| env(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        if let Some(dir) = var(DATA_DIR_ENV) {
            return Ok(DataDir::new(dir));
        }
        // The XDG spec says to ignore relative paths.
        if let Some(xdg) = var("XDG_DATA_HOME").filter(|p| p.is_absolute()) {
            return Ok(DataDir::new(xdg.join("lazarus")));
        }
        match var("HOME") {
            Some(home) => Ok(DataDir::new(home.join(".local/share/lazarus"))),
            None => Err(DbError::NoDataDir),
        }
    }

    /// The data directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The SQLite crash database.
    pub fn db_path(&self) -> PathBuf {
        self.root.join("crashes.sqlite")
    }

    /// ELF core dumps, one per crash.
    pub fn dumps_dir(&self) -> PathBuf {
        self.root.join("dumps")
    }

    /// Diagnosis reports (JSON and text), one per crash.
    pub fn reports_dir(&self) -> PathBuf {
        self.root.join("reports")
    }

    /// Kernel and extension symbol files that dumps are read against.
    pub fn symbols_dir(&self) -> PathBuf {
        self.root.join("symbols")
    }

    /// The report written beside `dump`: a crash's files share one stem,
    /// `dumps/STEM.core`, `reports/STEM.json` and `reports/STEM.txt`. The
    /// JSON report if it exists, else the text one, else `None`.
    pub fn report_for_dump(&self, dump: &Path) -> Option<PathBuf> {
        let stem = dump.file_stem()?;
        [".json", ".txt"]
            .into_iter()
            .map(|ext| {
                // Not `with_extension`: a stem may itself contain dots.
                let mut name = stem.to_os_string();
                name.push(ext);
                self.reports_dir().join(name)
            })
            .find(|p| p.is_file())
    }

    /// Starts a session that writes dumps (`lazarus run`): removes the
    /// `.partial` dumps an interrupted run left behind, unless another
    /// session is running in this directory (its `.partial` file may be
    /// the dump it is writing). The returned guard marks this session as
    /// running until it is dropped.
    ///
    /// Sessions hold a shared `flock` on `.lock` in the root; cleaning
    /// needs it exclusively, so only a session that starts alone cleans.
    pub fn start_session(&self) -> Result<Session, DbError> {
        self.ensure()?;
        let path = self.root.join(".lock");
        let io = |source| DbError::Io {
            path: path.clone(),
            source,
        };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io)?;
        let mut removed = Vec::new();
        match file.try_lock() {
            Ok(()) => {
                let dir = self.dumps_dir();
                let entries = std::fs::read_dir(&dir).map_err(|source| DbError::Io {
                    path: dir.clone(),
                    source,
                })?;
                for entry in entries.flatten() {
                    let p = entry.path();
                    if p.extension().is_some_and(|e| e == "partial") {
                        match std::fs::remove_file(&p) {
                            Ok(()) => removed.push(p),
                            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                            Err(source) => return Err(DbError::Io { path: p, source }),
                        }
                    }
                }
                // Down to shared, so later sessions can start meanwhile.
                file.lock_shared().map_err(io)?;
            }
            Err(std::fs::TryLockError::WouldBlock) => file.lock_shared().map_err(io)?,
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        Ok(Session {
            _lock: file,
            removed,
        })
    }

    /// The directory's lock taken exclusively, if no session holds it
    /// (`None` while a run is using the directory, or when the directory
    /// does not exist). Held until the file is dropped.
    pub fn lock_exclusive(&self) -> Result<Option<std::fs::File>, DbError> {
        if !self.root.is_dir() {
            return Ok(None);
        }
        let path = self.root.join(".lock");
        let io = |source| DbError::Io {
            path: path.clone(),
            source,
        };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(file)),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(io(e)),
        }
    }

    /// Fails when the root exists but is not a directory; for readers,
    /// which must not create it (a missing root just holds nothing).
    pub fn check(&self) -> Result<(), DbError> {
        if self.root.exists() && !self.root.is_dir() {
            return Err(DbError::NotADirectory(self.root.clone()));
        }
        Ok(())
    }

    /// Creates the directory and its subdirectories. A newly created root
    /// gets mode 0700: dumps hold the guest's whole memory. An existing
    /// root keeps the mode its owner gave it.
    pub fn ensure(&self) -> Result<(), DbError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| DbError::Io { path, source }
        };
        if let Some(parent) = self.root.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        let mut builder = std::fs::DirBuilder::new();
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        match builder.create(&self.root) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => self.check()?,
            Err(e) => return Err(io(&self.root)(e)),
        }
        for dir in [self.dumps_dir(), self.reports_dir(), self.symbols_dir()] {
            if dir.exists() && !dir.is_dir() {
                return Err(DbError::NotADirectory(dir));
            }
            std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        }
        Ok(())
    }
}

/// A running session in a data directory ([`DataDir::start_session`]).
#[derive(Debug)]
pub struct Session {
    _lock: std::fs::File,
    /// The `.partial` files removed at the start.
    pub removed: Vec<PathBuf>,
}
