//! `lazarus diagnose DUMP`: the offline diagnosis of one crash dump, as
//! text or JSON, or the gdb command line that opens it with every symbol.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use lazarus_dump::Dump;
use lazarus_symbols::SymbolStore;

use crate::exit::{BAD_INPUT, failure};

const DIAGNOSE_HELP: &str = "\
Symbols are looked up by build id in the symbol store, which `lazarus run`
fills with the kernel and extensions it boots. Missing symbols make the
report less precise (raw addresses), never fail it.

Exit codes:
  0  success
  1  internal error
  2  usage error
  4  the dump is missing, malformed or truncated";

/// What to diagnose, and how to print it.
#[derive(Debug, Args)]
#[command(after_help = DIAGNOSE_HELP)]
pub struct DiagnoseArgs {
    /// The ELF core dump of a crashed guest.
    #[arg(value_name = "DUMP")]
    pub dump: PathBuf,
    /// Print one JSON object on stdout instead of text.
    #[arg(long)]
    pub json: bool,
    /// Symbol store [default: $LAZARUS_DATA_DIR/symbols, else
    /// $XDG_DATA_HOME/lazarus/symbols, else ~/.local/share/lazarus/symbols].
    #[arg(long, value_name = "DIR")]
    pub symbols: Option<PathBuf>,
    /// Print the gdb command line that opens the dump with the kernel and
    /// every extension's symbols, instead of the report.
    #[arg(long, conflicts_with = "json")]
    pub gdb: bool,
}

/// The symbol store inside the data directory, resolved exactly as the
/// crash database resolves it (so `lazarus run` and this agree).
pub fn default_symbols_dir() -> anyhow::Result<PathBuf> {
    let data = lazarus_crashdb::DataDir::resolve(None)
        .map_err(|e| failure(crate::exit::INTERNAL, e.to_string()))?;
    Ok(data.symbols_dir())
}

/// Runs `lazarus diagnose`.
pub fn run(args: &DiagnoseArgs) -> anyhow::Result<ExitCode> {
    // A store named explicitly must exist: ignoring a typo would give a
    // report without symbols and no hint why.
    if let Some(d) = &args.symbols
        && !d.is_dir()
    {
        return Err(failure(
            BAD_INPUT,
            format!("symbol store '{}': not a directory", d.display()),
        ));
    }
    let dump = Dump::open(&args.dump)
        .map_err(|e| failure(BAD_INPUT, format!("{}: {e}", args.dump.display())))?;
    let dir = match &args.symbols {
        Some(d) => d.clone(),
        None => default_symbols_dir()?,
    };
    let store = SymbolStore::new(dir);
    let out = if args.gdb {
        let gdb = lazarus_diagnose::gdb_command(&dump, &store);
        for w in &gdb.warnings {
            eprintln!("lazarus: warning: {w}");
        }
        gdb.command + "\n"
    } else {
        let report = lazarus_diagnose::diagnose(&dump, &store)
            .map_err(|e| failure(BAD_INPUT, format!("{}: {e}", args.dump.display())))?;
        if args.json {
            serde_json::to_string_pretty(&report)? + "\n"
        } else {
            format!("{}:\n{}", args.dump.display(), report.render_text())
        }
    };
    let mut stdout = std::io::stdout().lock();
    // A closed pipe (e.g. `| head`) is not an error worth reporting.
    let _ = stdout.write_all(out.as_bytes());
    let _ = stdout.flush();
    Ok(ExitCode::SUCCESS)
}
