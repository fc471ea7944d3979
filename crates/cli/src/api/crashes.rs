//! `GET /crashes`: the crash database, bucketed by signature (the same
//! JSON as `lazarus crashes --json`).

use lazarus_api::{BackendError, CrashBucket, CrashList};
use lazarus_crashdb::{CrashDb, DbLocation};

use crate::api::session::ApiSession;

impl ApiSession {
    /// The crash database's buckets; none before the first crash.
    pub(crate) fn crash_buckets(&self) -> Result<Vec<lazarus_crashdb::Bucket>, BackendError> {
        let location = self.data.crash_db();
        // No database yet simply means no crash yet.
        if let DbLocation::Sqlite(path) = &location
            && !path.exists()
        {
            return Ok(Vec::new());
        }
        CrashDb::open_location(&location)
            .and_then(|db| db.buckets())
            .map_err(|e| BackendError::Internal(format!("crash database: {e}")))
    }

    /// The crash database's buckets, as `GET /crashes` answers them.
    pub(crate) fn crash_list(&self) -> Result<CrashList, BackendError> {
        let buckets = self
            .crash_buckets()?
            .into_iter()
            .map(|b| CrashBucket {
                signature: b.signature,
                kind: b.kind,
                title: b.title,
                count: b.count,
                first_seen_unix_ms: b.first_seen_unix_ms,
                last_seen_unix_ms: b.last_seen_unix_ms,
                example_dump: b.example_dump,
                extensions: b.extensions,
            })
            .collect();
        Ok(CrashList { buckets })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_buckets_serialize_as_the_database_does() {
        let b = lazarus_crashdb::Bucket {
            signature: "abc".into(),
            kind: "panic".into(),
            title: "panic in x".into(),
            count: 2,
            first_seen_unix_ms: 1,
            last_seen_unix_ms: 3,
            example_dump: Some("/d/x.core".into()),
            extensions: vec!["crashtest".into()],
        };
        let api = CrashBucket {
            signature: b.signature.clone(),
            kind: b.kind.clone(),
            title: b.title.clone(),
            count: b.count,
            first_seen_unix_ms: b.first_seen_unix_ms,
            last_seen_unix_ms: b.last_seen_unix_ms,
            example_dump: b.example_dump.clone(),
            extensions: b.extensions.clone(),
        };
        assert_eq!(
            serde_json::to_value(&b).unwrap(),
            serde_json::to_value(&api).unwrap()
        );
    }
}
