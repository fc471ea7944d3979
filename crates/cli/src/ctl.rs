//! `lazarus ctl`: the control API's client. Prints the server's JSON on
//! stdout (pretty, or compact with `--json`); errors go to stderr with an
//! exit code that tells "could not reach it" from "it said no".

use std::io::{Read as _, Write as _};
use std::path::PathBuf;

use clap::{Args, Subcommand};
use lazarus_api::{ApiResponse, Client, ClientError, InjectRequest};

use crate::exit::{API_FAILED, API_REJECTED, API_UNREACHABLE, BAD_INPUT, failure};

const CTL_HELP: &str = "\
Talks to `lazarus run --api-sock PATH` (HTTP/1.1 with JSON bodies over the
Unix socket, as Firecracker's API; `curl --unix-socket PATH http://x/vm`
works too). Endpoints: GET / and /vm (status), GET /recoveries,
GET /crashes, GET /metrics, PATCH /vm {\"state\":\"Paused\"|\"Resumed\"},
PUT /inject {\"fault\":...}, PUT /dump. Errors are {\"fault_message\": ...}.

Examples:
  lazarus ctl --api-sock /tmp/lz.sock status
  lazarus ctl --api-sock /tmp/lz.sock inject --fault crash-test --kind null-read
  lazarus ctl --api-sock /tmp/lz.sock inject --fault bit-flip --ext crashtest --seed 7
  lazarus ctl --api-sock /tmp/lz.sock raw PATCH /vm '{\"state\":\"Paused\"}'

Exit codes:
  0  success (2xx)
  1  internal error
  2  usage error
  4  bad input (the body of `raw ... -` cannot be read from stdin)
  6  cannot reach the API: no server on the socket, or no answer in time
  7  the server refused the request (4xx: bad request, wrong state, ...)
  8  the server failed (5xx)";

/// Where the API is, what to ask, how to print.
#[derive(Debug, Args)]
#[command(after_help = CTL_HELP)]
pub struct CtlArgs {
    /// The socket given to `lazarus run --api-sock`.
    #[arg(long, value_name = "PATH", global = true)]
    pub api_sock: Option<PathBuf>,
    /// Print compact JSON (one line) instead of pretty JSON.
    #[arg(long, global = true)]
    pub json: bool,
    /// Seconds to wait for an answer.
    #[arg(long, value_name = "SECS", default_value_t = 120.0, global = true)]
    pub timeout: f64,
    #[command(subcommand)]
    pub command: CtlCommand,
}

#[derive(Debug, Subcommand)]
pub enum CtlCommand {
    /// VM state, uptime, boots, vCPUs, memory, policy, recoveries.
    Status,
    /// Resurrections of this session.
    Recoveries,
    /// The crash database, bucketed by signature.
    Crashes,
    /// Exits, recovery latency, crashes, memory of guest and hypervisor.
    Metrics,
    /// Stop the vCPUs (the watchdog holds still too).
    Pause,
    /// Let them run again.
    Resume,
    /// Write an ELF core dump and report of the running guest (it is
    /// paused only while its memory is copied).
    Dump {
        /// Why, recorded in the report.
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
    },
    /// Inject a fault: a host-side fault type, or crash-test with --kind.
    Inject(InjectArgs),
    /// Send any request: METHOD PATH [BODY]; BODY `-` reads stdin.
    Raw {
        #[arg(value_name = "METHOD")]
        method: String,
        #[arg(value_name = "PATH")]
        path: String,
        #[arg(value_name = "BODY")]
        body: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct InjectArgs {
    /// bit-flip, replace-instruction, corrupt-register, delete-branch,
    /// wild-write-kernel, wild-write-struct, corrupt-stack, or crash-test.
    #[arg(long, value_name = "TYPE")]
    pub fault: String,
    /// Target extension of a code fault.
    #[arg(long, value_name = "NAME")]
    pub ext: Option<String>,
    /// Target kernel table of wild-write-struct (procs, runq, locks, ...).
    #[arg(long, value_name = "NAME")]
    pub structure: Option<String>,
    /// Seed: the same seed on the same guest state makes the same fault.
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// The crash-test kind (see `crash list` in the guest).
    #[arg(long, value_name = "KIND")]
    pub kind: Option<String>,
}

/// Runs `lazarus ctl`; returns the exit code.
pub fn run(args: &CtlArgs) -> anyhow::Result<u8> {
    let Some(sock) = &args.api_sock else {
        return Err(failure(
            2,
            "lazarus ctl needs --api-sock PATH (the socket of `lazarus run --api-sock`)",
        ));
    };
    let timeout = std::time::Duration::try_from_secs_f64(args.timeout)
        .ok()
        .filter(|t| !t.is_zero())
        .ok_or_else(|| failure(2, format!("invalid --timeout {}", args.timeout)))?;
    let (method, path, body): (&str, &str, Option<Vec<u8>>) = match &args.command {
        CtlCommand::Status => ("GET", "/vm", None),
        CtlCommand::Recoveries => ("GET", "/recoveries", None),
        CtlCommand::Crashes => ("GET", "/crashes", None),
        CtlCommand::Metrics => ("GET", "/metrics", None),
        CtlCommand::Pause => ("PATCH", "/vm", Some(br#"{"state":"Paused"}"#.to_vec())),
        CtlCommand::Resume => ("PATCH", "/vm", Some(br#"{"state":"Resumed"}"#.to_vec())),
        CtlCommand::Dump { reason } => (
            "PUT",
            "/dump",
            Some(serde_json::to_vec(
                &serde_json::json!({ "reason": reason }),
            )?)
            .filter(|_| reason.is_some()),
        ),
        CtlCommand::Inject(i) => {
            let req = InjectRequest {
                fault: i.fault.clone(),
                ext: i.ext.clone(),
                structure: i.structure.clone(),
                seed: i.seed,
                kind: i.kind.clone(),
            };
            ("PUT", "/inject", Some(serde_json::to_vec(&req)?))
        }
        CtlCommand::Raw { method, path, body } => {
            let body = match body.as_deref() {
                Some("-") => {
                    let mut b = Vec::new();
                    std::io::stdin()
                        .read_to_end(&mut b)
                        .map_err(|e| failure(BAD_INPUT, format!("reading the body: {e}")))?;
                    Some(b)
                }
                Some(b) => Some(b.as_bytes().to_vec()),
                None => None,
            };
            (method.as_str(), path.as_str(), body)
        }
    };
    let client = Client::new(sock).with_timeout(timeout);
    let resp = client
        .request(method, path, body.as_deref())
        .map_err(|e| match e {
            ClientError::InvalidRequest(m) => failure(2, m),
            e => failure(API_UNREACHABLE, e.to_string()),
        })?;
    print_body(&resp, args.json)?;
    match resp.status {
        200..=299 => Ok(0),
        400..=499 => Err(failure(
            API_REJECTED,
            format!("HTTP {}: {}", resp.status, resp.fault_message()),
        )),
        _ => Err(failure(
            API_FAILED,
            format!("HTTP {}: {}", resp.status, resp.fault_message()),
        )),
    }
}

/// The answer on stdout (success only: errors are reported on stderr).
fn print_body(resp: &ApiResponse, compact: bool) -> anyhow::Result<()> {
    if !resp.is_success() {
        return Ok(());
    }
    let text = match serde_json::from_slice::<serde_json::Value>(&resp.body) {
        Ok(v) if compact => serde_json::to_string(&v)?,
        Ok(v) => serde_json::to_string_pretty(&v)?,
        Err(_) => String::from_utf8_lossy(&resp.body).into_owned(),
    };
    let mut out = std::io::stdout().lock();
    // A closed pipe (`| head`) is not worth an error.
    let _ = writeln!(out, "{text}");
    let _ = out.flush();
    Ok(())
}
