//! `lazarus dashboard`: the crash database and running VMs as web pages
//! for a support team (top crashers, one page per signature, live VMs).

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use lazarus_crashdb::{CrashDb, DataDir, DbLocation};
use lazarus_dashboard::{Config, Dashboard, DashboardError};

use crate::crashes_cmd::{crash_db_location, db_error};
use crate::exit::{self, failure};

const DASHBOARD_HELP: &str = "\
Pages: / (top crashers with a 14-day trend per signature, and the live
VMs), /signature/SIG (occurrences, the example report, the gdb command,
dump downloads), /vms (live VMs: status, recoveries, recovery-latency
histogram), /dumps/NAME (a dump of the data directory).

The dashboard only reads: the crash database (SQLite in the data
directory, or --crash-db postgres://... / LAZARUS_CRASH_DB, as `lazarus
crashes` takes it) and the control API of every --vm-sock. A VM that does
not answer is shown as unreachable. It serves until a signal (Ctrl-C,
SIGTERM) ends it.

Exit codes:
  1  internal error
  2  usage error
  4  bad --listen address or one that cannot be bound, bad --crash-db, or
     not a lazarus crash database
  10  the shared crash database cannot be reached";

/// Where to listen and what to show.
#[derive(Debug, Args)]
#[command(after_help = DASHBOARD_HELP)]
pub struct DashboardArgs {
    /// Address to serve on (HOST:PORT; port 0 picks a free one, printed
    /// on stderr).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Data directory holding crashes.sqlite, dumps, reports and symbols
    /// [default: $LAZARUS_DATA_DIR, else $XDG_DATA_HOME/lazarus, else
    /// ~/.local/share/lazarus].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// The crash database: a postgres:// URL (shared by many hosts) or a
    /// SQLite file [default: $LAZARUS_CRASH_DB, else DIR/crashes.sqlite].
    #[arg(long, value_name = "URL")]
    pub crash_db: Option<String>,
    /// API socket of a running VM (`lazarus run --api-sock PATH`) to show;
    /// repeat for several.
    #[arg(long = "vm-sock", value_name = "PATH")]
    pub vm_socks: Vec<PathBuf>,
}

/// Runs `lazarus dashboard` until the process is interrupted.
pub fn run(args: &DashboardArgs) -> anyhow::Result<u8> {
    let data = DataDir::resolve(args.data_dir.as_deref())
        .map_err(db_error)?
        .with_crash_db(crash_db_location(args.crash_db.as_deref())?);
    data.check().map_err(db_error)?;
    // A shared database must answer now: a typo in its URL is better
    // said at once than on every page.
    if let location @ DbLocation::Postgres(_) = data.crash_db() {
        CrashDb::open_location(&location).map_err(db_error)?;
    }
    let config = Config {
        data,
        vm_socks: args.vm_socks.clone(),
        vm_timeout: Duration::from_secs(2),
    };
    let dashboard = Dashboard::bind(&args.listen, config).map_err(|e| match e {
        DashboardError::BadAddress { .. } | DashboardError::Bind { .. } => {
            failure(exit::BAD_INPUT, e.to_string())
        }
    })?;
    let addr = dashboard
        .local_addr()
        .map_or_else(|| args.listen.clone(), |a| a.to_string());
    eprintln!("lazarus: dashboard on http://{addr}/");
    let _ = std::io::stderr().flush();
    dashboard.serve();
    Ok(0)
}
