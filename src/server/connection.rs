//! One client connection's life: its id, its place in the connection limit,
//! and the last line of defence if handling it panics.
//!
//! Nothing a client sends should panic the server (the wire decoder is
//! hardened, statements are bounded by `sql::limits`), but if a bug somewhere
//! still panics while a connection is served, only that connection may end:
//! the panic is logged once with the connection's id (by the process's panic
//! hook, see [`log_panics`]), the client gets a FATAL 08P01 ErrorResponse,
//! and every other session, pipeline and sink goes on.

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use futures::FutureExt;
use tokio::io::AsyncWriteExt;

tokio::task_local! {
    /// The id of the connection the current task serves.
    static CONNECTION_ID: u64;
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

/// Serves one connection with `serve`, under a fresh connection id; if it
/// panics, tells the client (on plain TCP, through `socket`'s duplicate)
/// and closes only this connection.
pub async fn guarded<F>(peer: SocketAddr, error_socket: Option<std::net::TcpStream>, serve: F)
where
    F: std::future::Future<Output = ()>,
{
    let id = NEXT_CONNECTION_ID.fetch_add(1, Ordering::Relaxed);
    let outcome = CONNECTION_ID.scope(id, AssertUnwindSafe(serve).catch_unwind()).await;
    if outcome.is_ok() {
        return;
    }
    tracing::debug!(connection = id, %peer, "connection closed after a panic");
    let Some(socket) = error_socket.and_then(|s| tokio::net::TcpStream::from_std(s).ok()) else { return };
    let mut socket = socket;
    let info = pgwire::error::ErrorInfo::new(
        "FATAL".to_string(),
        crate::error::sqlstate::PROTOCOL_VIOLATION.to_string(),
        format!("internal error while serving connection {id}; the connection is closed, the server goes on"),
    );
    let mut bytes = bytes::BytesMut::new();
    if pgwire::messages::PgWireBackendMessage::ErrorResponse(info.into()).encode(&mut bytes).is_ok() {
        let _ = socket.write_all(&bytes).await;
    }
    let _ = socket.shutdown().await;
}
