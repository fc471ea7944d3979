//! A real PostgreSQL server for tests: Debian's `postgresql` package
//! (`scripts/setup.sh` installs it), a fresh cluster in a temporary
//! directory on a free loopback port, run by the unprivileged `postgres`
//! user when the tests run as root (the server refuses root), and stopped
//! when dropped. Password authentication over TCP, as a shared server
//! would have.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// Where Debian's PostgreSQL 15 puts `initdb` and `pg_ctl`.
pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
/// The cluster's superuser and its password.
pub const USER: &str = "lazarus";
pub const PASSWORD: &str = "pg-s3cret-for-tests";

pub struct PgServer {
    dir: tempfile::TempDir,
    pub port: u16,
    runas: Option<&'static str>,
}

impl PgServer {
    /// Starts a server; panics with what to do when PostgreSQL is missing.
    pub fn start() -> PgServer {
        let initdb = Path::new(PG_BIN).join("initdb");
        assert!(
            initdb.is_file(),
            "{} is missing: these tests need a real PostgreSQL server; run scripts/setup.sh \
             (installs Debian's postgresql package)",
            initdb.display()
        );
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let runas = root.then_some("postgres");
        let dir = tempfile::Builder::new()
            .prefix("lazarus-pg-")
            .tempdir_in("/tmp")
            .expect("temporary directory");
        std::fs::write(dir.path().join("pw"), PASSWORD).expect("password file");
        if let Some(user) = runas {
            run(Command::new("chown").args(["-R", user]).arg(dir.path()));
        }
        let data = dir.path().join("data");
        run(as_user(runas, &initdb)
            .arg("-D")
            .arg(&data)
            .args(["-U", USER, "-E", "UTF8", "--no-sync"])
            .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
            .arg(format!("--pwfile={}", dir.path().join("pw").display())));
        // A free port can be taken by someone else before the server binds
        // it: try a few.
        for _ in 0..5 {
            let port = free_port();
            let status = as_user(runas, &Path::new(PG_BIN).join("pg_ctl"))
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(dir.path().join("log"))
                .args(["-w", "-t", "60", "-o"])
                .arg(format!(
                    "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
                    dir.path().display()
                ))
                .arg("start")
                .output()
                .expect("run pg_ctl");
            if status.status.success() {
                return PgServer { dir, port, runas };
            }
        }
        let log = std::fs::read_to_string(dir.path().join("log")).unwrap_or_default();
        panic!("PostgreSQL did not start:\n{log}");
    }

    /// A URL for `database` with the password.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://{USER}:{PASSWORD}@127.0.0.1:{}/{database}",
            self.port
        )
    }

    /// Creates a fresh database and returns its URL.
    pub fn create_database(&self, name: &str) -> String {
        let mut client =
            postgres::Client::connect(&self.url("postgres"), postgres::NoTls).expect("connect");
        client
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .expect("create database");
        self.url(name)
    }

    /// A plain client, for looking at the tables directly.
    pub fn client(&self, url: &str) -> postgres::Client {
        postgres::Client::connect(url, postgres::NoTls).expect("connect")
    }

    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let _ = as_user(self.runas, &Path::new(PG_BIN).join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}

fn as_user(user: Option<&str>, program: &Path) -> Command {
    match user {
        Some(user) => {
            let mut c = Command::new("runuser");
            c.args(["-u", user, "--"]).arg(program);
            c
        }
        None => Command::new(program),
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}
