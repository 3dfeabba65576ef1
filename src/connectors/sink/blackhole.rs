//! The `blackhole` sink (Flink's and RisingWave's name): a view's changes
//! are computed and dropped.
//!
//! ```sql
//! CREATE SINK q0_out FROM bid WITH (connector = 'blackhole');
//! ```
//!
//! It measures a query without the cost of keeping its output: the
//! dataflow runs every epoch as for any sink, but nothing is written to the
//! outbox or anywhere else ([`SinkWriter::discards`]). It takes any change,
//! retractions included, and has no options besides `connector`.

use super::SinkWriter;
use crate::connectors::ConnectorOptions;
use crate::error::Result;
use crate::stream::ChangeBatch;

pub struct BlackholeSink;

impl BlackholeSink {
    pub fn new(options: &ConnectorOptions) -> Result<Self> {
        options.reject_unknown(&|key| key == "connector")?;
        Ok(Self)
    }
}

impl SinkWriter for BlackholeSink {
    fn delivered(&self) -> Result<Option<u64>> {
        Ok(None)
    }

    fn write(&self, _epoch: u64, _changes: &ChangeBatch) -> Result<()> {
        Ok(())
    }

    fn discards(&self) -> bool {
        true
    }
}
