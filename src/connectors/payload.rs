//! Payloads read from a connector, and what decoding made of them: shared
//! by the decoders (`decode`, `avro`) and the readers that feed them.

use datafusion::arrow::array::RecordBatch;

/// Payloads laid end to end in one buffer (one allocation per read).
#[derive(Default)]
pub struct Payloads {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Payloads {
    pub fn push(&mut self, payload: &[u8]) {
        self.bytes.extend_from_slice(payload);
        self.ends.push(self.bytes.len());
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    pub fn get(&self, i: usize) -> &[u8] {
        let start = i.checked_sub(1).and_then(|previous| self.ends.get(previous)).copied().unwrap_or(0);
        let end = self.ends.get(i).copied().unwrap_or(start);
        self.bytes.get(start..end).unwrap_or_default()
    }
}

/// The outcome of decoding: a row for each good payload (in order), and
/// the index and error of each bad one.
pub struct Decoded {
    pub rows: RecordBatch,
    pub bad: Vec<(usize, String)>,
}
