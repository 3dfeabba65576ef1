//! The Postgres wire front end (pgwire, with datafusion-postgres for query
//! execution, type encoding and pg_catalog).
//!
//! Owns connections and protocol concerns only: statements go to
//! [`crate::sql::Engine`] through a query hook; errors leave as ErrorResponses
//! with the SQLSTATE the engine chose. See docs/ARCHITECTURE.md for why we
//! build on datafusion-postgres.

pub mod auth;
mod authorization;
pub mod connection;
mod copy;
mod copy_out;
mod errors;
mod handlers;
mod hook;
mod pg_text;
mod prepared;
mod respond;
mod session;
mod subscribe;
mod timeout;
mod transaction;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::db::snapshot::with_statement_scope;
use crate::sql::Engine;

pub use handlers::FreshetHandlers;

/// The stack of every thread that parses, plans or runs statements (the
/// runtime's workers and blocking threads, the dataflow pool). Deep but
/// legal statements (up to `sql::limits::MAX_STATEMENT_DEPTH`) recurse one
/// or more frames per level in every tree walk, and debug builds' frames are
/// large; the memory is reserved, and only what a statement touches is used.
pub const STATEMENT_STACK_BYTES: usize = 64 << 20;

/// Connections served at once unless `--max-connections` says otherwise
/// (PostgreSQL's default).
pub const DEFAULT_MAX_CONNECTIONS: usize = 100;

/// How clients connect: the authentication method, TLS when a certificate
/// was given, and how many may be connected at once.
pub struct Security {
    pub auth: auth::AuthMethod,
    pub tls: Option<pgwire::tokio::tokio_rustls::TlsAcceptor>,
    pub max_connections: usize,
}

impl Default for Security {
    fn default() -> Self {
        Self { auth: auth::AuthMethod::Trust, tls: None, max_connections: DEFAULT_MAX_CONNECTIONS }
    }
}

/// Accepts connections until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    engine: Arc<Engine>,
    security: Security,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let connections = connection::ConnectionCount::new(security.max_connections);
    let handlers = Arc::new(FreshetHandlers::new(engine, security.auth, connections.clone()));
    let tls = security.tls;
    tracing::info!(address = %listener.local_addr()?, "accepting connections");
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (socket, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(error) => {
                        tracing::warn!(%error, "accept failed");
                        continue;
                    }
                };
                let _ = socket.set_nodelay(true);
                let handlers = handlers.clone();
                let tls = tls.clone();
                let slot = connections.open();
                // A duplicate of the socket, to end the connection from
                // outside its handlers (see `connection::guarded`).
                let (socket, copy) = duplicate(socket);
                tokio::spawn(async move {
                    let _slot = slot;
                    let Some(socket) = socket else { return };
                    let plaintext = tls.is_none();
                    connection::guarded(peer, copy, plaintext, serve_connection(socket, peer, handlers, tls)).await;
                });
            }
            _ = shutdown.changed() => {
                tracing::info!("shutting down: no new connections");
                return Ok(());
            }
        }
    }
}

/// The socket and a duplicate of it (the same connection), when the
/// operating system gives one.
fn duplicate(socket: tokio::net::TcpStream) -> (Option<tokio::net::TcpStream>, Option<std::net::TcpStream>) {
    let Ok(std_socket) = socket.into_std() else { return (None, None) };
    let copy = std_socket.try_clone().ok();
    (tokio::net::TcpStream::from_std(std_socket).ok(), copy)
}

async fn serve_connection(
    socket: tokio::net::TcpStream,
    peer: SocketAddr,
    handlers: Arc<FreshetHandlers>,
    tls: Option<pgwire::tokio::tokio_rustls::TlsAcceptor>,
) {
    tracing::debug!(%peer, "connection opened");
    // Each connection gets its own statement-snapshot, transaction,
    // session-user and prepared-statement slots.
    let connection = prepared::scope(pgwire::tokio::process_socket(socket, tls, handlers));
    let result = with_statement_scope(crate::sql::session_user::scope(connection)).await;
    if let Err(error) = result {
        tracing::debug!(%peer, %error, "connection ended with an error");
    }
}
