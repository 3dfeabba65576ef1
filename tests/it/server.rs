//! Starts and stops a real `freshet serve` process for a test.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct TestServer {
    child: Child,
    pub port: u16,
    _data: Option<tempdir::TempDir>,
    /// Every line the server logged so far.
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

pub mod tempdir {
    /// A directory removed when dropped.
    pub struct TempDir(pub std::path::PathBuf);
    impl TempDir {
        pub fn new(tag: &str) -> Self {
            let unique = format!(
                "freshet-test-{tag}-{}-{}",
                std::process::id(),
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
            );
            let path = std::env::temp_dir().join(unique);
            std::fs::create_dir_all(&path).expect("create temp dir");
            Self(path)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl TestServer {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts the server with extra `freshet serve` arguments.
    pub fn start_with(extra: &[&str]) -> Self {
        let data = tempdir::TempDir::new("server");
        let mut server = Self::start_in(&data.0, extra);
        server._data = Some(data);
        server
    }

    /// Starts the server on a data dir the caller keeps (to restart on it).
    /// It listens on a port the OS picks (`:0`) and logs the address; a
    /// port chosen here and bound later could be taken meanwhile by another
    /// test's server, Postgres or broker.
    pub fn start_in(data_dir: &std::path::Path, extra: &[&str]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_freshet"));
        command.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"]).arg(data_dir).args(extra);
        Self::spawn(command)
    }

    /// Starts the server with its data dir on a disk of `disk_bytes` of its
    /// own: a tmpfs mounted in a private mount namespace (`unshare`, as
    /// an unprivileged user would with a user namespace), which goes away
    /// with the process. The test reaches the disk's files through
    /// [`Self::data_path`]. The returned directory is the mount point.
    pub fn start_on_small_disk(disk_bytes: u64, extra: &[&str]) -> (Self, tempdir::TempDir) {
        let mount = tempdir::TempDir::new("small-disk");
        let mut command = Command::new("unshare");
        command
            .args(["--user", "--map-root-user", "--mount", "sh", "-c"])
            .arg(r#"mount -t tmpfs -o size="$1" tmpfs "$2" && shift 2 && exec "$@""#)
            .arg("sh")
            .arg(disk_bytes.to_string())
            .arg(&mount.0)
            .arg(env!("CARGO_BIN_EXE_freshet"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(mount.0.join("data"))
            .args(extra);
        (Self::spawn(command), mount)
    }

    /// `path` (absolute) as the server process sees it: through its root,
    /// in its mount namespace (see [`Self::start_on_small_disk`]).
    pub fn data_path(&self, path: &std::path::Path) -> std::path::PathBuf {
        let relative = path.strip_prefix("/").unwrap_or(path);
        std::path::PathBuf::from(format!("/proc/{}/root", self.child.id())).join(relative)
    }

    fn spawn(mut command: Command) -> Self {
        let mut child = command
            .env("FRESHET_LOG", "warn,freshet::server=info")
            // Step partitioned operators in parallel even for tiny changes.
            .env("FRESHET_PARALLEL_MIN_ROWS", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start freshet");
        let stdout = child.stdout.take().expect("freshet's stdout");
        let (found, port) = std::sync::mpsc::channel();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = log.clone();
        // Reads the log for the address, then keeps draining (and keeping)
        // it so the server never blocks on a full pipe.
        std::thread::spawn(move || {
            use std::io::BufRead;
            let mut found = Some(found);
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                if let (Some(port), true) = (listening_port(&line), found.is_some()) {
                    let _ = found.take().map(|f| f.send(port));
                }
                if let Ok(mut lines) = kept.lock() {
                    lines.push(line);
                }
            }
        });
        let port = match port.recv_timeout(Duration::from_secs(60)) {
            Ok(port) => port,
            Err(_) => {
                let _ = child.kill();
                panic!("freshet did not start listening (exit: {:?})", child.try_wait());
            }
        };
        Self { child, port, _data: None, log }
    }

    /// The lines the server logged so far that contain `needle`.
    pub fn log_lines_with(&self, needle: &str) -> Vec<String> {
        self.log.lock().map(|lines| lines.iter().filter(|l| l.contains(needle)).cloned().collect()).unwrap_or_default()
    }

    /// The server process's resident memory in bytes (Linux: /proc).
    pub fn resident_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).expect("read /proc status");
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc status");
        kib * 1024
    }

    /// Kills the server with SIGKILL (no shutdown of any kind) and waits.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn url(&self) -> String {
        format!("host=127.0.0.1 port={} user=freshet dbname=freshet", self.port)
    }

    pub async fn connect(&self) -> tokio_postgres::Client {
        connect_to(&self.url()).await
    }

    /// Whether the server process is still running.
    pub fn is_alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

/// The port of the "accepting connections address=127.0.0.1:PORT" log
/// line (colored or not).
fn listening_port(line: &str) -> Option<u16> {
    if !line.contains("accepting connections") {
        return None;
    }
    let at = line.find("127.0.0.1:")? + "127.0.0.1:".len();
    let digits: String = line[at..].chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client of the Postgres-protocol server at `url`, its connection
/// driven by a task of its own.
pub async fn connect_to(url: &str) -> tokio_postgres::Client {
    let (client, connection) =
        tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap_or_else(|e| panic!("connect to {url}: {e}"));
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// Runs a simple-protocol query and returns its rows as text (NULL as "NULL").
pub async fn rows(client: &tokio_postgres::Client, sql: &str) -> Vec<Vec<String>> {
    try_rows(client, sql).await.unwrap_or_else(|e| panic!("query failed: {sql}: {}", describe(&e)))
}

/// An error with the server's SQLSTATE and message.
pub fn describe(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => error.to_string(),
    }
}

pub async fn try_rows(client: &tokio_postgres::Client, sql: &str) -> Result<Vec<Vec<String>>, tokio_postgres::Error> {
    let messages = client.simple_query(sql).await?;
    Ok(messages
        .into_iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => {
                Some((0..row.len()).map(|i| row.get(i).unwrap_or("NULL").to_string()).collect())
            }
            _ => None,
        })
        .collect())
}

/// The SQLSTATE of a failed statement.
/// The SQLSTATE and message of `sql`'s error (it must fail).
pub async fn error_of(client: &tokio_postgres::Client, sql: &str) -> (String, String) {
    match client.simple_query(sql).await {
        Ok(_) => panic!("expected an error from: {sql}"),
        Err(e) => match e.as_db_error() {
            Some(db) => (db.code().code().to_string(), db.message().to_string()),
            None => (format!("no code: {e}"), e.to_string()),
        },
    }
}

pub async fn error_code(client: &tokio_postgres::Client, sql: &str) -> String {
    match client.simple_query(sql).await {
        Ok(_) => panic!("expected an error from: {sql}"),
        Err(e) => e.code().map(|c| c.code().to_string()).unwrap_or_else(|| format!("no code: {e}")),
    }
}

/// The SQLSTATE of a failed statement over the extended protocol.
pub async fn extended_error_code(client: &tokio_postgres::Client, sql: &str) -> String {
    match client.query(sql, &[]).await {
        Ok(_) => panic!("expected an error from: {}…", &sql[..40.min(sql.len())]),
        Err(e) => e.code().map(|c| c.code().to_string()).unwrap_or_else(|| format!("no code: {e}")),
    }
}

/// The repository's root, read when the test runs (cargo sets
/// CARGO_MANIFEST_DIR for test processes): a path compiled in would point
/// at whichever clone built the binary, since clones share the target dir.
pub fn repo_root() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}
