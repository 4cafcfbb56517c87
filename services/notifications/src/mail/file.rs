//! The development [`Mailer`]: one `.eml` file per message under `MAIL_DIR`.
//!
//! Files are named `<UTC time>-<email log id>.eml` (`20261122T032205.123Z-0193….eml`), so a
//! directory listing sorts them by time; each is written under a temporary name and renamed, so a
//! reader never sees half a message. Any mail client opens them.

use std::path::{Path, PathBuf};

use futures::future::BoxFuture;
use uuid::Uuid;

use super::{Accepted, Envelope, Mailer, SendError};

/// Writes messages to a directory.
#[derive(Debug, Clone)]
pub struct FileMailer {
    dir: PathBuf,
}

impl FileMailer {
    /// A sink writing into `dir` (created on first use).
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    /// Where messages go.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// The file name of a message written at `now`.
pub fn file_name(now: chrono::DateTime<chrono::Utc>, id: Uuid) -> String {
    format!("{}-{id}.eml", now.format("%Y%m%dT%H%M%S%.3fZ"))
}

impl Mailer for FileMailer {
    fn provider(&self) -> &'static str {
        "file"
    }

    fn send<'a>(
        &'a self,
        id: Uuid,
        _envelope: &'a Envelope,
        message: &'a [u8],
    ) -> BoxFuture<'a, Result<Accepted, SendError>> {
        Box::pin(async move {
            let io = |e: std::io::Error| SendError::Transient(format!("writing to {}: {e}", self.dir.display()));
            tokio::fs::create_dir_all(&self.dir).await.map_err(io)?;
            let name = file_name(chrono::Utc::now(), id);
            let path = self.dir.join(&name);
            let partial = self.dir.join(format!(".{name}.partial"));
            tokio::fs::write(&partial, message).await.map_err(io)?;
            tokio::fs::rename(&partial, &path).await.map_err(io)?;
            Ok(Accepted { detail: path.display().to_string() })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_sort_by_time() {
        let id = Uuid::now_v7();
        let early = chrono::DateTime::parse_from_rfc3339("2026-11-22T03:22:05.123Z").expect("time").to_utc();
        let late = chrono::DateTime::parse_from_rfc3339("2026-11-22T10:01:00Z").expect("time").to_utc();
        assert_eq!(file_name(early, id), format!("20261122T032205.123Z-{id}.eml"));
        assert!(file_name(early, Uuid::now_v7()) < file_name(late, id));
    }

    #[tokio::test]
    async fn each_message_becomes_one_complete_file() {
        let dir = std::env::temp_dir().join(format!("trellis-mail-{}", Uuid::now_v7()));
        let sink = FileMailer::new(dir.clone());
        let envelope = Envelope { from: "a@example.com".into(), to: "b@example.com".into() };
        let id = Uuid::now_v7();
        let accepted = sink.send(id, &envelope, b"Subject: hi\r\n\r\nbody").await.expect("written");
        let files: Vec<_> = std::fs::read_dir(&dir).expect("dir").filter_map(|e| e.ok()).map(|e| e.path()).collect();
        assert_eq!(files.len(), 1, "no partial file left behind");
        assert_eq!(files[0].display().to_string(), accepted.detail);
        assert!(files[0].display().to_string().ends_with(&format!("-{id}.eml")));
        assert_eq!(std::fs::read(&files[0]).expect("read"), b"Subject: hi\r\n\r\nbody");
        let _ = std::fs::remove_dir_all(dir);
    }
}
