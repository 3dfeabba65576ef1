//! COPY … FROM STDIN over the wire: the simple-query handler starts it
//! (CopyInResponse), this handler collects the CopyData of that connection
//! and, on CopyDone, loads it through [`crate::sql::copy`].

use std::collections::HashMap;
use std::fmt::Debug;
use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use futures::{Sink, SinkExt};
use parking_lot::Mutex;
use pgwire::api::ClientInfo;
use pgwire::api::copy::CopyHandler;
use pgwire::api::results::{CopyResponse, Response, Tag};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::copy::{CopyData, CopyDone, CopyFail};

use super::errors::to_pgwire;
use crate::sql::Engine;
use crate::sql::copy::{self, CopyIn};

/// COPYs in progress, one per connection at most.
pub struct CopyInHandler {
    engine: Arc<Engine>,
    pending: Mutex<HashMap<SocketAddr, (CopyIn, Vec<u8>)>>,
}

impl CopyInHandler {
    pub fn new(engine: Arc<Engine>) -> Self {
        Self { engine, pending: Mutex::new(HashMap::new()) }
    }

    /// Starts a COPY FROM STDIN for this connection.
    pub fn start(
        &self,
        client: SocketAddr,
        statement: &datafusion::sql::sqlparser::ast::Statement,
    ) -> PgWireResult<Response> {
        let copy = copy::prepare(&self.engine, statement).map_err(to_pgwire)?;
        let columns = copy.columns();
        self.pending.lock().insert(client, (copy, Vec::new()));
        Ok(Response::CopyIn(CopyResponse::new(0, columns, futures::stream::empty())))
    }
}

#[async_trait]
impl CopyHandler for CopyInHandler {
    async fn on_copy_data<C>(&self, client: &mut C, copy_data: CopyData) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if let Some((_, buffer)) = self.pending.lock().get_mut(&client.socket_addr()) {
            buffer.extend_from_slice(&copy_data.data);
        }
        Ok(())
    }

    async fn on_copy_done<C>(&self, client: &mut C, _done: CopyDone) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let Some((copy, data)) = self.pending.lock().remove(&client.socket_addr()) else {
            return Err(to_pgwire(crate::error::SqlError::new("08P01", "CopyDone without a COPY in progress")));
        };
        let rows = copy::load(&self.engine, &copy, &data).await.map_err(to_pgwire)?;
        client.send(PgWireBackendMessage::CommandComplete(Tag::new("COPY").with_rows(rows).into())).await?;
        Ok(())
    }

    async fn on_copy_fail<C>(&self, client: &mut C, fail: CopyFail) -> PgWireError
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        self.pending.lock().remove(&client.socket_addr());
        PgWireError::UserError(Box::new(ErrorInfo::new(
            "ERROR".to_owned(),
            "57014".to_owned(),
            format!("COPY from stdin failed: {}", fail.message),
        )))
    }
}
