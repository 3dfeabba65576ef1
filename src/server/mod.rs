//! The Postgres wire front end (pgwire, with datafusion-postgres for query
//! execution, type encoding and pg_catalog).
//!
//! Owns connections and protocol concerns only: statements go to
//! [`crate::sql::Engine`] through a query hook; errors leave as ErrorResponses
//! with the SQLSTATE the engine chose. See docs/ARCHITECTURE.md for why we
//! build on datafusion-postgres.

mod access;
pub mod auth;
mod copy;
mod copy_out;
mod errors;
mod handlers;
mod hook;
mod pg_text;
mod prepared;
mod session;
mod subscribe;
mod transaction;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::catalog::snapshot::with_statement_scope;
use crate::sql::Engine;

pub use handlers::FreshetHandlers;

/// How clients connect: the authentication method, and TLS when a
/// certificate was given.
pub struct Security {
    pub auth: auth::AuthMethod,
    pub tls: Option<pgwire::tokio::tokio_rustls::TlsAcceptor>,
}

impl Default for Security {
    fn default() -> Self {
        Self { auth: auth::AuthMethod::Trust, tls: None }
    }
}

/// Accepts connections until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    engine: Arc<Engine>,
    security: Security,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let handlers = Arc::new(FreshetHandlers::new(engine, security.auth));
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
                tokio::spawn(async move {
                    serve_connection(socket, peer, handlers, tls).await;
                });
            }
            _ = shutdown.changed() => {
                tracing::info!("shutting down: no new connections");
                return Ok(());
            }
        }
    }
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
