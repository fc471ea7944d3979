//! Where the crash database is: the data directory's SQLite file (the
//! default) or a PostgreSQL server shared by many hosts.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::DbError;

/// What a password is shown as wherever a URL is printed.
const HIDDEN: &str = "***";

/// A crash database: a SQLite file, or a PostgreSQL server.
#[derive(Clone, PartialEq, Eq)]
pub enum DbLocation {
    /// The embedded default, `DATA_DIR/crashes.sqlite`.
    Sqlite(PathBuf),
    /// `postgres://` or `postgresql://` URL (libpq's URI syntax).
    Postgres(PgUrl),
}

impl DbLocation {
    /// `postgres://...` or `postgresql://...` is a PostgreSQL server;
    /// anything else is the path of a SQLite file.
    pub fn parse(s: &str) -> Result<DbLocation, DbError> {
        let lower = s.get(..13).unwrap_or(s).to_ascii_lowercase();
        if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
            return PgUrl::parse(s).map(DbLocation::Postgres);
        }
        if s.contains("://") {
            return Err(DbError::BadUrl {
                reason: "only postgres:// or postgresql:// URLs, or a SQLite file path, are crash databases".into(),
            });
        }
        if s.is_empty() {
            return Err(DbError::BadUrl {
                reason: "empty crash-database location".into(),
            });
        }
        Ok(DbLocation::Sqlite(PathBuf::from(s)))
    }

    /// Printable, with any password hidden.
    pub fn display(&self) -> String {
        match self {
            DbLocation::Sqlite(p) => p.display().to_string(),
            DbLocation::Postgres(u) => u.redacted().to_string(),
        }
    }
}

impl fmt::Debug for DbLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DbLocation::Sqlite(p) => f.debug_tuple("Sqlite").field(p).finish(),
            DbLocation::Postgres(u) => f.debug_tuple("Postgres").field(u).finish(),
        }
    }
}

impl FromStr for DbLocation {
    type Err = DbError;
    fn from_str(s: &str) -> Result<DbLocation, DbError> {
        DbLocation::parse(s)
    }
}

/// A PostgreSQL URL. `Display` and `Debug` never show its password (in
/// the user part or as a `password=` parameter); only the connection sees
/// it.
#[derive(Clone, PartialEq, Eq)]
pub struct PgUrl {
    raw: String,
    redacted: String,
}

impl PgUrl {
    /// Checks the URL as the client will read it; an error never quotes the
    /// URL (it may hold a password).
    pub fn parse(raw: &str) -> Result<PgUrl, DbError> {
        let secret = password_of(raw);
        let scrub = |text: String| match &secret {
            Some(p) if !p.is_empty() => text.replace(p.as_str(), HIDDEN),
            _ => text,
        };
        let url = url::Url::parse(raw).map_err(|e| DbError::BadUrl {
            reason: scrub(format!("not a URL: {e}")),
        })?;
        postgres::Config::from_str(raw).map_err(|e| DbError::BadUrl {
            reason: scrub(format!("not a PostgreSQL URL: {e}")),
        })?;
        Ok(PgUrl {
            raw: raw.to_string(),
            redacted: redact(url),
        })
    }

    /// The URL with its password replaced by `***`.
    pub fn redacted(&self) -> &str {
        &self.redacted
    }

    /// The client's configuration (with the password).
    pub(crate) fn config(&self) -> Result<postgres::Config, DbError> {
        postgres::Config::from_str(&self.raw).map_err(|e| DbError::BadUrl {
            reason: format!("not a PostgreSQL URL: {e}"),
        })
    }

    /// The password, to keep it out of error messages.
    pub(crate) fn password(&self) -> Option<String> {
        password_of(&self.raw)
    }
}

impl fmt::Display for PgUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted)
    }
}

impl fmt::Debug for PgUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PgUrl({})", self.redacted)
    }
}

/// The password in the user part or the query, percent-decoded.
fn password_of(raw: &str) -> Option<String> {
    let url = url::Url::parse(raw).ok()?;
    if let Some(p) = url.password() {
        return Some(percent_decode(p).unwrap_or_else(|| p.to_string()));
    }
    url.query_pairs()
        .find(|(k, _)| k == "password")
        .map(|(_, v)| v.into_owned())
}

fn percent_decode(s: &str) -> Option<String> {
    url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
}

fn redact(mut url: url::Url) -> String {
    if url.password().is_some() {
        // Only fails for URLs that cannot have a user part; ours can.
        let _ = url.set_password(Some(HIDDEN));
    }
    if url.query_pairs().any(|(k, _)| k == "password") {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let v = if k == "password" {
                    HIDDEN.to_string()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    url.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        for raw in [
            "postgres://lazarus:s3cret@127.0.0.1:5432/crashes",
            "postgresql://lazarus:s3cret@db.example:5432/crashes?sslmode=disable",
            "postgres://lazarus@127.0.0.1/crashes?password=s3cret",
            "postgres://lazarus:s%33cret@127.0.0.1/crashes",
        ] {
            let loc = DbLocation::parse(raw).expect(raw);
            for shown in [loc.display(), format!("{loc:?}")] {
                assert!(!shown.contains("s3cret"), "{shown}");
                assert!(!shown.contains("s%33cret"), "{shown}");
                assert!(shown.contains("***"), "{shown}");
            }
        }
        let DbLocation::Postgres(u) = DbLocation::parse("postgres://u:s%33cret@h/d").unwrap()
        else {
            panic!("not postgres");
        };
        assert_eq!(u.password().as_deref(), Some("s3cret"));
    }

    #[test]
    fn bad_urls_are_refused_without_quoting_them() {
        let err = DbLocation::parse("postgres://u:s3cret@host:notaport/db").unwrap_err();
        assert!(!err.to_string().contains("s3cret"), "{err}");
        assert!(DbLocation::parse("mysql://u@h/d").is_err());
        assert!(DbLocation::parse("").is_err());
        assert_eq!(
            DbLocation::parse("/tmp/x.sqlite").unwrap(),
            DbLocation::Sqlite("/tmp/x.sqlite".into())
        );
    }
}
