//! The `file` sink: a view's changes as JSON-lines files in a directory.
//!
//! Each epoch becomes one file, `epoch-<number>.jsonl`, written under a
//! temporary name and renamed into place (atomic on one file system), so a
//! file is there whole or not at all. The newest file's number is the last
//! epoch written: after a crash, epochs up to it are skipped. Lines:
//! `append-only`: the row; `upsert`: `{"op": "upsert" | "delete", "row": …}`;
//! `debezium`: a Debezium event (`before`, `after`, `op`).

use std::io::Write;

use datafusion::arrow::array::Array;
use std::path::PathBuf;

use super::{SinkShape, SinkType, SinkWriter, json_rows};
use crate::connectors::ConnectorOptions;
use crate::error::{Result, SqlError, sqlstate};
use crate::stream::ChangeBatch;

pub struct FileSink {
    directory: PathBuf,
    shape: SinkShape,
}

fn io_error(directory: &std::path::Path, error: std::io::Error) -> SqlError {
    SqlError::new(sqlstate::IO_ERROR, format!("file sink in \"{}\": {error}", directory.display()))
}

impl FileSink {
    pub fn new(options: &ConnectorOptions, shape: SinkShape) -> Result<Self> {
        options.reject_unknown(&|key| {
            matches!(key, "connector" | "path" | "type" | "primary_key" | "force_append_only" | "format" | "encode")
        })?;
        let directory = options
            .get("path")
            .filter(|p| !p.is_empty())
            .ok_or_else(|| SqlError::new(sqlstate::INVALID_PARAMETER_VALUE, "a file sink needs path = 'directory'"))?;
        Ok(Self { directory: PathBuf::from(directory), shape })
    }

    fn lines(&self, changes: &ChangeBatch) -> Result<Vec<u8>> {
        let shaped = self.shape.shape(changes)?;
        let mut out = Vec::new();
        let mut line = |parts: &[&[u8]]| {
            for part in parts {
                out.extend_from_slice(part);
            }
            out.push(b'\n');
        };
        match self.shape.kind {
            SinkType::AppendOnly { .. } => {
                for row in json_rows(&shaped.upserts)? {
                    line(&[&row]);
                }
            }
            SinkType::Upsert => {
                for row in json_rows(&shaped.upserts)? {
                    line(&[b"{\"op\":\"upsert\",\"row\":", &row, b"}"]);
                }
                for row in json_rows(&shaped.deletes)? {
                    line(&[b"{\"op\":\"delete\",\"row\":", &row, b"}"]);
                }
            }
            SinkType::Debezium => {
                let replaced = json_rows(&shaped.replaced)?;
                let &first_key =
                    self.shape.key.first().ok_or_else(|| SqlError::internal("a Debezium sink without a key"))?;
                for (i, row) in json_rows(&shaped.upserts)?.iter().enumerate() {
                    let existed = shaped.replaced.column(first_key).is_valid(i);
                    let before: &[u8] = match replaced.get(i) {
                        Some(before) if existed => before,
                        _ => b"null",
                    };
                    let op: &[u8] = if existed { b"u" } else { b"c" };
                    line(&[b"{\"before\":", before, b",\"after\":", row, b",\"op\":\"", op, b"\"}"]);
                }
                for row in json_rows(&shaped.deletes)? {
                    line(&[b"{\"before\":", &row, b",\"after\":null,\"op\":\"d\"}"]);
                }
            }
        }
        Ok(out)
    }
}

impl SinkWriter for FileSink {
    fn delivered(&self) -> Result<Option<u64>> {
        let entries = std::fs::read_dir(&self.directory).map_err(|e| io_error(&self.directory, e))?;
        Ok(entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.strip_prefix("epoch-")?.strip_suffix(".jsonl")?.parse::<u64>().ok()
            })
            .max())
    }

    fn write(&self, epoch: u64, changes: &ChangeBatch) -> Result<()> {
        let lines = self.lines(changes)?;
        let name = format!("epoch-{epoch:020}.jsonl");
        let temporary = self.directory.join(format!(".{name}.tmp"));
        let write = || -> std::io::Result<()> {
            let mut file = std::fs::File::create(&temporary)?;
            file.write_all(&lines)?;
            file.sync_all()?;
            std::fs::rename(&temporary, self.directory.join(&name))?;
            std::fs::File::open(&self.directory)?.sync_all()
        };
        write().map_err(|e| io_error(&self.directory, e))
    }

    fn check(&self) -> Result<()> {
        std::fs::create_dir_all(&self.directory).map_err(|e| io_error(&self.directory, e))
    }
}
