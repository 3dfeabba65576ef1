//! The `file` source connector: lines of CSV or JSON files as rows.
//!
//! ```sql
//! CREATE SOURCE events (id BIGINT, kind TEXT) WITH (connector = 'file', path = '/data/events/*.jsonl')
//! FORMAT PLAIN ENCODE JSON;
//! ```
//!
//! `path` is a file or a glob (`*` and `?` in the last part of the path).
//! Files are read in name order, each from where the reader left it, a
//! complete line (ending in a newline) at a time, so new files and lines
//! appended to files are picked up as they come. The position keeps, per
//! file (by a hash of its path), the byte offset after the last line read.
//! Files are expected to grow only: a file that shrinks is read again from
//! its start. `csv.header = 'true'` skips each CSV file's first line.
//! A line that does not decode is a bad record (partition: the file's
//! hash, offset: the line's byte offset).

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;

use super::decode::{Encoding, PayloadDecoder, Payloads};
use super::{BadRecord, Connector, ConnectorOptions, SourcePosition, SourceReader};
use crate::error::{Result, SqlError, sqlstate};

/// Bytes read from one file per read at most.
const CHUNK: usize = 4 << 20;

pub struct FileReader {
    directory: PathBuf,
    pattern: String,
    schema: SchemaRef,
    decoder: PayloadDecoder,
    header: bool,
    fail_on_bad: bool,
}

/// The stable identity of a file in a position (FNV-1a of its path).
fn file_id(path: &Path) -> i32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in path.to_string_lossy().bytes() {
        hash ^= byte as u32;
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash as i32
}

/// Whether `name` matches `pattern` (`*` any run, `?` any one character).
/// Greedy with one backtrack point, the last `*`: time at most the product
/// of the two lengths, never exponential in the number of stars.
fn matches(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0, 0);
    // After the last `*` seen: where the pattern resumes, and the first
    // character of the name that `*` has not yet swallowed.
    let mut last_star: Option<(usize, usize)> = None;
    while let Some(&c) = name.get(n) {
        match pattern.get(p) {
            Some(b'*') => {
                p += 1;
                last_star = Some((p, n));
            }
            Some(&wanted) if wanted == b'?' || wanted == c => {
                p += 1;
                n += 1;
            }
            _ => match last_star {
                // The star takes one more character; retry after it.
                Some((resume, swallowed)) => {
                    p = resume;
                    n = swallowed + 1;
                    last_star = Some((resume, n));
                }
                None => return false,
            },
        }
    }
    pattern.get(p..).unwrap_or_default().iter().all(|&c| c == b'*')
}

impl FileReader {
    pub fn new(options: &ConnectorOptions, declared: Option<SchemaRef>) -> Result<Self> {
        options.reject_unknown(&|key| {
            matches!(key, "connector" | "path" | "format" | "encode" | "delimiter" | "csv.header" | "bad_records")
        })?;
        let bad = |m: String| SqlError::new(sqlstate::INVALID_PARAMETER_VALUE, m);
        let path = options
            .get("path")
            .filter(|p| !p.is_empty())
            .ok_or_else(|| bad("connector 'file' needs path = '…'".into()))?;
        if let Some(format) = options.get("format").filter(|f| !f.eq_ignore_ascii_case("plain")) {
            return Err(SqlError::not_supported(format!(
                "FORMAT {} for files (formats: PLAIN)",
                format.to_uppercase()
            )));
        }
        let path = PathBuf::from(path);
        let pattern = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let directory = path.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."));
        if directory.to_string_lossy().contains(['*', '?']) {
            return Err(SqlError::not_supported("wildcards in a file source's directories (only in the file name)"));
        }
        let schema = declared
            .filter(|s| !s.fields().is_empty())
            .ok_or_else(|| bad("connector 'file' needs the source's columns".into()))?;
        let encoding = Encoding::from_options(options)?;
        if encoding == Encoding::Avro {
            return Err(SqlError::not_supported("ENCODE AVRO for files (files are read as lines: ENCODE CSV or JSON)"));
        }
        let fail_on_bad = match options.get("bad_records").map(str::to_ascii_lowercase).as_deref() {
            None | Some("dead_letter") => false,
            Some("fail") => true,
            Some(other) => return Err(bad(format!("bad_records = '{other}' (dead_letter or fail)"))),
        };
        Ok(Self {
            directory,
            pattern,
            decoder: PayloadDecoder::new(schema.clone(), encoding),
            schema,
            header: options.get("csv.header").is_some_and(|h| h.eq_ignore_ascii_case("true")),
            fail_on_bad,
        })
    }

    /// The matching files, in name order.
    fn files(&self) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(&self.directory) else { return Vec::new() };
        let mut files: Vec<PathBuf> = entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .filter(|e| matches(self.pattern.as_bytes(), e.file_name().to_string_lossy().as_bytes()))
            .map(|e| e.path())
            .collect();
        files.sort();
        files
    }

    /// Complete lines of `path` from `offset` (from the start if the file
    /// is now shorter): the bytes, and the offset they start at.
    fn lines(path: &Path, offset: i64) -> std::io::Result<(Vec<u8>, i64)> {
        let mut file = std::fs::File::open(path)?;
        let length = file.metadata()?.len() as i64;
        let offset = if length < offset { 0 } else { offset };
        file.seek(SeekFrom::Start(offset as u64))?;
        let mut buffer = Vec::new();
        file.take(CHUNK as u64).read_to_end(&mut buffer)?;
        let complete = buffer.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        buffer.truncate(complete);
        Ok((buffer, offset))
    }
}

impl Connector for FileReader {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn check(&self) -> Result<()> {
        if !self.directory.is_dir() {
            return Err(SqlError::new(
                sqlstate::UNDEFINED_OBJECT,
                format!("directory \"{}\" of the file source does not exist", self.directory.display()),
            ));
        }
        Ok(())
    }

    fn status(&self) -> Option<String> {
        Some(format!("reading {} file(s)", self.files().len()))
    }
}

impl SourceReader for FileReader {
    fn read(
        &self,
        position: &mut SourcePosition,
        _now_nanos: i64,
        max_records: usize,
        bad: &mut Vec<BadRecord>,
    ) -> Result<RecordBatch> {
        let mut payloads = Payloads::default();
        let mut origins: Vec<(i32, i64)> = Vec::new();
        for path in self.files() {
            if payloads.len() >= max_records {
                break;
            }
            let id = file_id(&path);
            let start = position.offsets.get(&id).copied().unwrap_or(0);
            let Ok((bytes, start)) = Self::lines(&path, start) else { continue };
            let mut at = 0usize;
            while at < bytes.len() && payloads.len() < max_records {
                let rest = bytes.get(at..).unwrap_or_default();
                let line = rest.split(|&b| b == b'\n').next().unwrap_or_default();
                let end = at + line.len();
                let line_offset = start + at as i64;
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                let skip = (self.header && line_offset == 0 && matches!(self.decoder.encoding(), Encoding::Csv { .. }))
                    || line.iter().all(u8::is_ascii_whitespace);
                if !skip {
                    payloads.push(line);
                    origins.push((id, line_offset));
                }
                at = end + 1;
            }
            position.offsets.insert(id, start + at.min(bytes.len()) as i64);
        }
        if payloads.is_empty() {
            return Ok(RecordBatch::new_empty(self.schema.clone()));
        }
        let decoded = self.decoder.decode(&payloads)?;
        for (i, error) in &decoded.bad {
            let Some(&(file, offset)) = origins.get(*i) else { continue };
            if self.fail_on_bad {
                return Err(SqlError::new(
                    sqlstate::INVALID_TEXT_REPRESENTATION,
                    format!("file source line at byte {offset}: {error}"),
                ));
            }
            bad.push(BadRecord { partition: file, offset, payload: payloads.get(*i).to_vec(), error: error.clone() });
        }
        Ok(decoded.rows)
    }

    fn exhausted(&self, _position: &SourcePosition) -> bool {
        false
    }

    /// A replay might find lines appended since: it would read more.
    fn replayable(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn glob_patterns() {
        assert!(matches(b"*.jsonl", b"a.jsonl"));
        assert!(matches(b"part-?.csv", b"part-1.csv"));
        assert!(!matches(b"*.jsonl", b"a.json"));
        assert!(matches(b"exact", b"exact"));
        assert!(matches(b"a*b*c", b"axxbyyc") && matches(b"*", b"") && matches(b"a**", b"a"));
        assert!(!matches(b"?", b"") && !matches(b"a*b", b"axxc") && !matches(b"", b"a"));
        // Many stars against a long name that cannot match: quick, not
        // exponential (the recursive matcher took minutes here).
        assert!(!matches(b"*a*a*a*a*a*a*a*a*a*a*a*a*b", &[b'a'; 400]));
    }

    #[test]
    fn new_files_and_appended_lines_are_read_once() {
        let dir = std::env::temp_dir().join(format!("freshet-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let mut options = ConnectorOptions::default();
        options.values.insert("connector".into(), "file".into());
        options.values.insert("path".into(), dir.join("*.jsonl").to_string_lossy().into_owned());
        let schema =
            Arc::new(datafusion::arrow::datatypes::Schema::new(vec![datafusion::arrow::datatypes::Field::new(
                "id",
                datafusion::arrow::datatypes::DataType::Int64,
                true,
            )]));
        let reader = FileReader::new(&options, Some(schema)).expect("reader");
        std::fs::write(dir.join("a.jsonl"), "{\"id\": 1}\n{\"id\": 2}\n{\"id\": 3").expect("write");
        let mut position = SourcePosition::default();
        let mut bad = Vec::new();
        assert_eq!(reader.read(&mut position, 0, 100, &mut bad).expect("read").num_rows(), 2);
        std::fs::write(dir.join("a.jsonl"), "{\"id\": 1}\n{\"id\": 2}\n{\"id\": 3}\nnot json\n").expect("append");
        std::fs::write(dir.join("b.jsonl"), "{\"id\": 4}\n").expect("write");
        assert_eq!(reader.read(&mut position, 0, 100, &mut bad).expect("read").num_rows(), 2);
        assert_eq!(bad.len(), 1);
        assert_eq!(reader.read(&mut position, 0, 100, &mut bad).expect("read").num_rows(), 0);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
