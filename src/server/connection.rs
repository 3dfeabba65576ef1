//! One client connection's life: its id, its place in the connection limit,
//! the idle-in-transaction watchdog, and the last line of defence if
//! handling it panics.
//!
//! Nothing a client sends should panic the server (the wire decoder is
//! hardened, statements are bounded by `sql::limits`), but if a bug somewhere
//! still panics while a connection is served, only that connection may end:
//! the panic is logged once with the connection's id (by the process's panic
//! hook, see [`log_panics`]), the client gets a FATAL 08P01 ErrorResponse,
//! and every other session, pipeline and sink goes on.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use tokio::io::AsyncWriteExt;
use tokio::sync::watch;
use tokio::time::Instant;

tokio::task_local! {
    /// The id of the connection the current task serves.
    static CONNECTION_ID: u64;
    /// When the connection's session, idle in a transaction block, is to
    /// be terminated (`None`: not idle in one, or no timeout set).
    static IDLE_DEADLINE: watch::Sender<Option<Instant>>;
}

/// The session's role: the user name the client logged in with.
pub(crate) fn session_user(client: &(impl pgwire::api::ClientInfo + ?Sized)) -> String {
    client.metadata().get(pgwire::api::METADATA_USER).cloned().unwrap_or_default()
}

static NEXT_CONNECTION_ID: AtomicU64 = AtomicU64::new(1);

/// The id of the connection the current task serves, if any.
pub fn current_id() -> Option<u64> {
    CONNECTION_ID.try_with(|id| *id).ok()
}

/// Logs every panic through `tracing` (one ERROR line with the connection's
/// id when a connection's task panicked) instead of the default stderr text.
pub fn log_panics() {
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(no message)".to_string());
        let location = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default();
        let thread = std::thread::current().name().unwrap_or("unnamed").to_string();
        match current_id() {
            Some(connection) => {
                tracing::error!(connection, %location, %thread, "internal error (panic) serving a connection: {message}; closing that connection")
            }
            None => tracing::error!(%location, %thread, "internal error (panic): {message}"),
        }
    }));
}

/// How many connections are open, against the configured maximum.
#[derive(Debug)]
pub struct ConnectionCount {
    open: AtomicUsize,
    max: usize,
}

impl ConnectionCount {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self { open: AtomicUsize::new(0), max: max.max(1) })
    }

    /// Counts a new connection until the returned slot is dropped.
    pub fn open(self: &Arc<Self>) -> Slot {
        self.open.fetch_add(1, Ordering::AcqRel);
        Slot(self.clone())
    }

    /// Whether more connections are open than allowed (the newest is then
    /// refused at startup with 53300).
    pub fn over_limit(&self) -> bool {
        self.open.load(Ordering::Acquire) > self.max
    }
}

/// One open connection's place in the count.
pub struct Slot(Arc<ConnectionCount>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Arms (`Some`) or disarms the current connection's idle-in-transaction
/// deadline: past it, the connection is terminated with 25P03.
pub fn set_idle_deadline(at: Option<Instant>) {
    // Only a change wakes the watchdog: a session without the timeout
    // costs its statements nothing here.
    let _ = IDLE_DEADLINE.try_with(|deadline| {
        deadline.send_if_modified(|current| {
            let changed = *current != at;
            *current = at;
            changed
        })
    });
}

/// Serves one connection with `serve`, under a fresh connection id, with
/// `socket` a duplicate of its socket (`plaintext`: no TLS on it). If
/// serving panics, tells the client (FATAL 08P01) and closes only this
/// connection; if the session stays idle in a transaction past its
/// deadline, terminates it (FATAL 25P03), as PostgreSQL does.
pub async fn guarded<F>(peer: SocketAddr, socket: Option<std::net::TcpStream>, plaintext: bool, serve: F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let id = NEXT_CONNECTION_ID.fetch_add(1, Ordering::Relaxed);
    let (deadline, deadline_changes) = watch::channel(None);
    let watchdog = socket
        .as_ref()
        .and_then(|s| s.try_clone().ok())
        .map(|copy| tokio::spawn(terminate_when_idle(id, deadline_changes, copy, plaintext)));
    // The connection is served on a task of its own: tokio's task harness
    // catches a panic there (it wraps every poll of every task anyway) and
    // hands it back as the task's error. A `catch_unwind` around the future
    // here wrapped every poll a second time and cost 3% of simple-query
    // round trips; this costs nothing measurable (`benches/round_trips_ab.sh`).
    let served = tokio::spawn(CONNECTION_ID.scope(id, IDLE_DEADLINE.scope(deadline, serve)));
    let outcome = AbortOnDrop(served).join().await;
    if let Some(watchdog) = watchdog {
        watchdog.abort();
    }
    if outcome.is_ok() {
        return;
    }
    tracing::debug!(connection = id, %peer, "connection closed after a panic");
    if let Some(socket) = socket {
        let message =
            format!("internal error while serving connection {id}; the connection is closed, the server goes on");
        close(socket, plaintext.then_some((crate::error::sqlstate::PROTOCOL_VIOLATION, message.as_str()))).await;
    }
}

/// A task that ends when its handle is dropped: should whoever awaits a
/// connection's task stop waiting, the connection does not live on.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl AbortOnDrop {
    async fn join(mut self) -> Result<(), tokio::task::JoinError> {
        (&mut self.0).await
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Waits while the connection's idle deadline is unset or keeps moving;
/// once one passes, terminates the connection.
async fn terminate_when_idle(
    id: u64,
    mut deadline: watch::Receiver<Option<Instant>>,
    socket: std::net::TcpStream,
    plaintext: bool,
) {
    loop {
        let armed = *deadline.borrow_and_update();
        let changed = match armed {
            None => deadline.changed().await,
            Some(at) => tokio::select! {
                changed = deadline.changed() => changed,
                _ = tokio::time::sleep_until(at) => break,
            },
        };
        if changed.is_err() {
            return;
        }
    }
    let message = "terminating connection due to idle-in-transaction timeout";
    tracing::info!(connection = id, "{message}");
    close(socket, plaintext.then_some((crate::error::sqlstate::IDLE_IN_TRANSACTION_SESSION_TIMEOUT, message))).await;
}

/// Ends a connection through a duplicate of its socket: a FATAL
/// ErrorResponse first when `error` is given (plain TCP only), then a
/// shutdown both ways, which the connection's own reader sees as its end.
async fn close(socket: std::net::TcpStream, error: Option<(&str, &str)>) {
    let Ok(mut stream) = tokio::net::TcpStream::from_std(socket) else { return };
    if let Some((code, message)) = error {
        let info = pgwire::error::ErrorInfo::new("FATAL".to_string(), code.to_string(), message.to_string());
        let mut bytes = bytes::BytesMut::new();
        if pgwire::messages::PgWireBackendMessage::ErrorResponse(info.into()).encode(&mut bytes).is_ok() {
            let _ = stream.write_all(&bytes).await;
        }
    }
    if let Ok(socket) = stream.into_std() {
        let _ = socket.shutdown(std::net::Shutdown::Both);
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::guarded;

    /// A connection whose serving panics: the guard returns (the panic
    /// does not reach the accept loop's task) and the client reads a
    /// FATAL 08P01 ErrorResponse, then the end of the stream.
    #[tokio::test]
    async fn a_panic_while_serving_ends_only_that_connection_with_08p01() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = tokio::net::TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (accepted, peer) = listener.accept().await.unwrap();
        let socket = accepted.into_std().unwrap();
        let copy = socket.try_clone().unwrap();
        guarded(peer, Some(copy), true, async move {
            let _socket = socket;
            panic!("a bug while serving");
        })
        .await;
        let mut reply = Vec::new();
        client.read_to_end(&mut reply).await.unwrap();
        assert_eq!(reply.first(), Some(&b'E'), "{reply:?}");
        let text = String::from_utf8_lossy(&reply);
        assert!(text.contains("SFATAL") && text.contains("C08P01"), "{text}");
        assert!(text.contains("internal error while serving connection"), "{text}");

        // A connection that ends normally gets nothing from the guard.
        let mut client = tokio::net::TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (accepted, peer) = listener.accept().await.unwrap();
        let socket = accepted.into_std().unwrap();
        let copy = socket.try_clone().unwrap();
        guarded(peer, Some(copy), true, async move { drop(socket) }).await;
        let mut reply = Vec::new();
        // (The copy was closed when the guard returned: end of stream.)
        client.read_to_end(&mut reply).await.unwrap();
        assert!(reply.is_empty(), "{reply:?}");
    }
}
